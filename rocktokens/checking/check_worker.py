"""math-verify in a persistent worker process with a deadline: a check that hangs or eats memory never hangs its caller.

math-verify's own timeouts use ``signal.alarm``, which works only in the main thread and cannot interrupt a C-level
computation (sympy evaluating ``9^{9^{9}}`` multiplies big integers in C). So the parse + verify of a math answer
runs in a separate Python process, started once and reused across checks:

* the caller (any thread, a vLLM worker, a SLURM job) sends one JSON line ``{"g": gold, "p": pred, "t": seconds}``
  over the worker's stdin and waits for the answer line with ``select`` until ``t + GRACE_S``;
* inside the worker (its own main thread) an interval timer raises at ``t`` seconds, so a slow pure-Python check
  ends there and the worker lives on; ``RLIMIT_AS`` bounds its memory (a ``MemoryError`` ends the worker);
* if no answer comes by the deadline (C-level work, a crash) the caller kills the worker; the next check starts a
  fresh one. Either way the check is reported as timed out and scored incorrect;
* a per-check ``RLIMIT_CPU`` (``t + GRACE_S`` + 2 s of CPU) ends the worker even in C code and even when its caller
  died mid-check, so no orphan computes for long; an idle orphan reads EOF and exits.

:class:`CheckPool` holds up to ``size`` workers for concurrent callers (threads); :func:`verify_bounded` uses one
process-wide pool (recreated after a fork). Settings come from the environment (no config key needed):
``ROCKTOKENS_CHECK_TIMEOUT_S`` (default 5 s per check), ``ROCKTOKENS_CHECK_MEMORY_MB`` (2048 MB per worker),
``ROCKTOKENS_CHECK_WORKERS`` (1 worker per process).

This file is also the worker's program (run by path, so the worker imports math-verify and nothing of rocktokens);
keep its top-level imports to the standard library.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import NamedTuple

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 2048
DEFAULT_WORKERS = 1
#: Seconds the caller waits beyond a check's own timer before it kills the worker.
GRACE_S = 1.0
#: Seconds a new worker may take to import math-verify and warm up.
START_TIMEOUT_S = 120.0


def _env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive, finite number, got {raw!r}")
    return value


def timeout_s() -> float:
    """Seconds one math check may take (``ROCKTOKENS_CHECK_TIMEOUT_S``, default :data:`DEFAULT_TIMEOUT_S`)."""
    return _env_number("ROCKTOKENS_CHECK_TIMEOUT_S", DEFAULT_TIMEOUT_S)


class Verdict(NamedTuple):
    """Outcome of one bounded check: ``correct``, and ``timed_out`` when it ran out of time or memory (then
    ``correct`` is False)."""

    correct: bool
    timed_out: bool = False


class WorkerLost(RuntimeError):
    """The worker died or missed its deadline."""


# ----------------------------------------------------------------------------------------------- caller side
class _Worker:
    """One worker process and its line protocol."""

    def __init__(self, memory_mb: int):
        code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, os.path.abspath(__file__), str(int(memory_mb))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self._fd = self.proc.stdout.fileno()
        self._poll = select.poll()  # not select(): a vLLM process may hold more than FD_SETSIZE descriptors
        self._poll.register(self._fd, select.POLLIN)
        self._buf = b""
        try:
            ready = json.loads(self._readline(time.monotonic() + START_TIMEOUT_S) or "{}").get("ready")
        except (WorkerLost, ValueError):
            ready = None
        if ready is not True:
            self.kill()
            raise RuntimeError("the math-check worker did not start (is math-verify installed?); see stderr")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _readline(self, deadline: float) -> bytes | None:
        """The next answer line, ``None`` at the deadline; ``WorkerLost`` if the worker exits."""
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._poll.poll(max(1, int(left * 1000))):
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise WorkerLost("the math-check worker exited")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def send(self, gold: str, pred: str, seconds: float) -> None:
        msg = json.dumps({"g": gold, "p": pred, "t": seconds}, ensure_ascii=True) + "\n"
        try:
            self.proc.stdin.write(msg.encode("ascii"))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as err:
            raise WorkerLost(f"the math-check worker is gone ({err})") from err

    def receive(self, seconds: float) -> dict:
        line = self._readline(time.monotonic() + seconds + GRACE_S)
        if line is None:
            raise WorkerLost("the math-check worker missed its deadline")
        try:
            return json.loads(line)
        except ValueError as err:
            raise WorkerLost(f"the math-check worker answered {line[:80]!r}") from err

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # EOF: the worker leaves its loop
            self.proc.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


class CheckPool:
    """Up to ``size`` reusable workers; :meth:`verify` is safe to call from many threads at once."""

    def __init__(self, size: int = DEFAULT_WORKERS, memory_mb: int = DEFAULT_MEMORY_MB):
        self.size, self.memory_mb = int(size), int(memory_mb)
        self.pid = os.getpid()
        self._idle: list[_Worker] = []
        self._n = 0
        self._cv = threading.Condition()

    def _acquire(self) -> _Worker:
        with self._cv:
            while not self._idle and self._n >= self.size:
                self._cv.wait()
            if self._idle:
                return self._idle.pop()
            self._n += 1
        try:
            return _Worker(self.memory_mb)
        except BaseException:
            self._release(None)
            raise

    def _release(self, worker: _Worker | None) -> None:
        with self._cv:
            if worker is None:
                self._n -= 1
            else:
                self._idle.append(worker)
            self._cv.notify()

    def verify(self, gold: str, pred: str, seconds: float) -> Verdict:
        """``verify(parse(gold), parse(pred))`` in a worker, bounded by ``seconds`` (plus :data:`GRACE_S`)."""
        worker = self._acquire()
        reply = None
        try:
            if not worker.alive():  # died while idle: replace it before sending anything
                worker.kill()
                worker = _Worker(self.memory_mb)
            try:
                worker.send(gold, pred, seconds)
            except WorkerLost:  # it never received this check: one retry on a fresh worker
                worker.kill()
                worker = _Worker(self.memory_mb)
                worker.send(gold, pred, seconds)
            reply = worker.receive(seconds)
        except WorkerLost:
            pass
        except BaseException:
            worker.kill()
            self._release(None)
            raise
        status = "lost" if reply is None else reply.get("s")
        if status in ("lost", "memory"):  # killed at the deadline, crashed, or exits after a MemoryError
            worker.kill()
            self._release(None)
        else:
            self._release(worker)
        return Verdict(status == "ok" and bool(reply.get("r")), status in ("lost", "timeout", "memory"))

    def close(self) -> None:
        with self._cv:
            idle, self._idle = self._idle, []
            self._n -= len(idle)
        for w in idle:
            w.close()


_POOL: CheckPool | None = None
_POOL_LOCK = threading.Lock()


def pool() -> CheckPool:
    """The process-wide pool (a forked child gets its own; the parent's workers stay the parent's)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            _POOL = CheckPool(_env_number("ROCKTOKENS_CHECK_WORKERS", DEFAULT_WORKERS, int),
                              _env_number("ROCKTOKENS_CHECK_MEMORY_MB", DEFAULT_MEMORY_MB, int))
        return _POOL


def verify_bounded(gold: str, pred: str, seconds: float | None = None) -> Verdict:
    """Is answer ``pred`` equal to ``gold`` (bare LaTeX, already normalised)? Bounded; never raises for bad input."""
    return pool().verify(gold, pred, timeout_s() if seconds is None else float(seconds))


@atexit.register
def _close_pool() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close()


# ----------------------------------------------------------------------------------------------- worker side
class _Deadline(BaseException):  # not an Exception: math-verify's `except Exception` must not swallow it
    pass


def _set_soft_limit(which: int, value: int) -> None:
    import resource

    _, hard = resource.getrlimit(which)
    resource.setrlimit(which, (value if hard == resource.RLIM_INFINITY else min(value, hard), hard))


def _serve(memory_mb: int) -> None:
    import logging
    import resource
    from functools import lru_cache

    proto = os.fdopen(os.dup(1), "w", encoding="ascii")
    os.dup2(2, 1)  # anything printed by the libraries goes to stderr, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    _set_soft_limit(resource.RLIMIT_AS, int(memory_mb) << 20)
    logging.disable(logging.WARNING)  # math-verify warns that its own timeouts are off: they are, on purpose

    import sympy
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig()]
    tiny = sympy.Float("1e-6")

    @lru_cache(maxsize=1024)
    def parsed(answer: str) -> tuple:
        return tuple(parse("\\boxed{" + answer + "}", extraction_config=config, extraction_mode="first_match",
                           parsing_timeout=None))

    def tiny_mismatch(g, p) -> bool:
        """math-verify compares numbers to an absolute precision (6 decimals; ``evalf(chop=True)``), so any two
        numbers below it look equal (1/2004! and 1/(7 * 2004!)): for a nonzero gold under 1e-6, also ask for
        agreement to 1e-6 relative."""
        try:
            if isinstance(p, sympy.Eq) and isinstance(p.lhs, sympy.Symbol):  # "x = a"
                p = p.rhs
            if not (isinstance(g, sympy.Expr) and isinstance(p, sympy.Expr)) or g.free_symbols or p.free_symbols:
                return False
            g, p = sympy.N(g, 20), sympy.N(p, 20)
            return bool(g.is_number and p.is_number and g != 0 and abs(g) < tiny and abs(g - p) > abs(g) * tiny)
        except Exception:
            return False

    def check(gold: str, pred: str) -> bool:
        g, p = parsed(gold), parsed(pred)
        return bool(g and p and verify(list(g), list(p), timeout_seconds=None)) and not tiny_mismatch(g[0], p[0])

    def on_alarm(signum, frame):
        raise _Deadline

    signal.signal(signal.SIGALRM, on_alarm)
    check("\\frac{1}{2}", "0.5")  # warm up (antlr, sympy caches) before declaring ready
    proto.write('{"ready": true}\n')
    proto.flush()
    for line in sys.stdin:
        req = json.loads(line)
        reply = {"r": False, "s": "ok"}
        seconds = max(float(req["t"]), 1e-3)
        # a CPU-time cap the kernel enforces (SIGXCPU ends the worker) even inside C code, and even if the
        # caller is gone: an orphaned worker never computes for long
        used = resource.getrusage(resource.RUSAGE_SELF)
        _set_soft_limit(resource.RLIMIT_CPU, int(used.ru_utime + used.ru_stime + seconds + GRACE_S) + 2)
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                reply["r"] = check(req["g"], req["p"])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Deadline:
            reply["s"] = "timeout"
        except MemoryError:
            reply["s"] = "memory"
        except Exception:  # math-verify catches its own; anything left is an unparsable answer
            reply["s"] = "error"
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if reply["s"] == "memory":
            os._exit(0)


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MEMORY_MB)
