"""Atomic outputs: nothing half-written is ever left at an output path."""
from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd


@contextlib.contextmanager
def atomic_dir(out_dir):
    """Yield a fresh temp dir next to ``out_dir``; on success it replaces ``out_dir``.

    On any exception the temp dir is removed and ``out_dir`` is left untouched, so a failure never leaves a
    half-written directory behind. An existing ``out_dir`` is moved aside first, so the swap is two renames.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "d")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path):
    """Yield a temporary sibling path; on success it is renamed onto ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-", dir=p.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):  # mkstemp creates 0600: give the result the mode a plain open() would
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_parquet(df: pd.DataFrame, path, **kw) -> None:
    with atomic_file(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd", **kw)


def read_parquet(path, what: str = "table") -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return pd.read_parquet(p)


def write_tsv(df: pd.DataFrame, path, float_format: str = "%.6g") -> None:
    """A table as TSV (no index; floats with 6 significant digits unless told), written atomically."""
    with atomic_file(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format=float_format)


def read_json(path):
    """A JSON artifact (``write_json``'s counterpart)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(obj, path, sort_keys: bool = True) -> None:
    """JSON (UTF-8, indented, trailing newline), written atomically."""
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=sort_keys, default=str, ensure_ascii=False) + "\n",
                             encoding="utf-8")


def write_text(text: str, path) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text)


PROGRESS_INTERVAL_S = 10.0  # default seconds between two progress-bar frames in a log file (TQDM_MININTERVAL wins)


class _LogTee:
    """``sys.stderr`` that also writes to the rule's log file, so ``tail -f`` on the log follows a job's progress.

    The console (the stderr it replaces) gets every byte unchanged. The log file gets whole lines only, written
    under one lock, so records and progress never share a line: text ended by a newline lands as it is; a progress
    frame -- text after a carriage return: tqdm redraws its bar as a carriage return and the bar, in one write --
    lands as a line of its own, at most one frame per ``interval`` seconds (frames in between are skipped), except
    that a frame ended by a newline (a finished bar) always lands; blank frames (tqdm clearing a bar) are dropped.
    Attributes tqdm and others look at (``isatty``, ``encoding``, ``fileno``) are the console's, so whatever was
    shown on the console before is shown now, and also logged.
    """

    def __init__(self, console, file, interval: float):
        self.console, self.file, self.interval = console, file, float(interval)
        self._lock = threading.RLock()
        self._line = ""         # text since the last line end or carriage return
        self._frame = False     # _line is a progress frame (it follows a carriage return)
        self._done = False      # ... and the write that brought it has ended (tqdm writes a frame in one call)
        self._written = False   # ... and it is in the file already
        self._last = -math.inf  # time.monotonic() of the last frame written to the file

    # -- the file side
    def write(self, s: str) -> int:
        try:
            self.console.write(s)
        except (OSError, ValueError):  # a closed or broken console must not lose the log
            pass
        with self._lock:
            for piece in re.split(r"(\r\n|\n|\r)", s):
                if piece in ("\n", "\r\n"):
                    self._end_line()
                elif piece == "\r":
                    if not (self._frame and self._done):  # a finished frame had its chance when its write ended
                        self._emit_frame(force=False)
                    self._line, self._frame, self._done, self._written = "", True, False, False
                elif piece:
                    if self._frame and self._done:  # new text after a finished frame: the frame is over
                        self._line, self._frame, self._done, self._written = "", False, False, False
                    self._line += piece
                    self._written = False
            if self._frame and self._line:
                self._done = True
                self._emit_frame(force=False)
        return len(s)

    def _emit_frame(self, force: bool) -> None:
        text = self._line.rstrip()
        now = time.monotonic()
        if text.strip() and not self._written and (force or now - self._last >= self.interval):
            self._put(text)
            self._written, self._last = True, now

    def _end_line(self) -> None:
        if self._frame:
            self._emit_frame(force=True)  # a finished bar's last frame always lands
        else:
            self._put(self._line)
        self._line, self._frame, self._done, self._written = "", False, False, False

    def _put(self, line: str) -> None:
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except (OSError, ValueError):
            pass

    def finish(self) -> None:
        """Write what is pending (a line without its newline, a skipped last frame) and flush."""
        with self._lock:
            if self._line.strip():
                self._emit_frame(force=True) if self._frame else self._put(self._line)
            self._line, self._frame, self._done, self._written = "", False, False, False
            try:
                self.file.flush()
            except (OSError, ValueError):
                pass

    # -- the stream interface: the console's
    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.console.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return self.console.isatty()

    def fileno(self) -> int:
        return self.console.fileno()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):  # encoding, errors, buffer, ...
        if name == "console":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.console, name)


_TEE: _LogTee | None = None


def _untee() -> None:
    """Put back the stderr that setup_logging replaced (pending log text written, the log file closed)."""
    global _TEE
    tee, _TEE = _TEE, None
    if tee is None:
        return
    tee.finish()
    if sys.stderr is tee:
        sys.stderr = tee.console
    try:
        tee.file.close()
    except OSError:
        pass


def setup_logging(log_path=None, level=logging.INFO, progress_interval: float | None = None) -> logging.Logger:
    """Send the log, and everything written to stderr (tqdm progress bars, warnings), to the rule's ``log:`` file
    as well as to stderr, so ``tail -f`` on the log follows a long job.

    With ``log_path``, ``sys.stderr`` becomes a tee (:class:`_LogTee`) into the file, opened for appending; the
    log records go through it, so each lands once on the console and once in the file, in the order written.
    Progress bars land as lines, at most one frame every ``progress_interval`` seconds (default: the
    ``TQDM_MININTERVAL`` environment variable when set, else :data:`PROGRESS_INTERVAL_S`) plus each bar's final
    state. Bars created before this call keep writing to the old stderr: set up logging before the work starts.
    Calling it again replaces the tee (never nests one in another); without ``log_path`` it undoes it.
    Uncaught errors are logged (the rule's log then holds the error that stopped it).
    """
    global _TEE
    _untee()
    stream = sys.stderr
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        if progress_interval is None:
            raw = os.environ.get("TQDM_MININTERVAL", PROGRESS_INTERVAL_S)
            try:
                progress_interval = float(raw)
            except ValueError:
                raise ValueError(f"TQDM_MININTERVAL={raw!r} is not a number of seconds") from None
        f = open(log_path, "a", encoding="utf-8", errors="backslashreplace")
        stream = sys.stderr = _TEE = _LogTee(sys.stderr, f, progress_interval)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        handlers=[logging.StreamHandler(stream)], force=True)
    logger = logging.getLogger("rocktokens")

    def _log_uncaught(kind, value, tb):  # the rule's log then holds the error that stopped it
        logger.error("stopped by %s: %s", kind.__name__, value, exc_info=(kind, value, tb))

    sys.excepthook = _log_uncaught
    return logger


atexit.register(_untee)  # at exit: the pending text of the log written, the file closed


def fingerprint(spec, paths) -> str:
    """A hash of a job's settings and of its input files' identities (name, size, mtime).

    Resumable state records it: state written for other inputs or settings is never resumed from.
    """
    import hashlib

    h = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode())
    for p in sorted(str(x) for x in paths):
        root = Path(p)
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
