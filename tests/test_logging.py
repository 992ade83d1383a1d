"""rocktokens.core.io.setup_logging: a rule's log file gets the log records *and* the tqdm progress bars, as lines
(tail -f friendly), each once, while the console keeps getting everything."""
import io
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rocktokens.core.io import _LogTee

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import logging, sys, time, warnings
    from tqdm.auto import tqdm  # imported before setup_logging, as the library's modules are in a workflow script
    from rocktokens.core.io import setup_logging

    log = setup_logging(sys.argv[1])
    log.info("record before the bar")
    for _ in tqdm(range(5), desc="steps", mininterval=0, miniters=1):
        time.sleep(0.01)
    logging.getLogger("rocktokens.other").warning("record after the bar")
    warnings.warn("a python warning")
    setup_logging(sys.argv[2])  # again, into another file: replaces the tee, never nests it
    log.info("record in the second log")
    for _ in tqdm(range(3), desc="more", leave=False):
        pass
    raise RuntimeError("the error that stopped the job")
""")


def _run(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    e.update(env)
    logs = tmp_path / "logs" / "job.log", tmp_path / "logs" / "second.log"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, logs)], cwd=REPO, env=e, capture_output=True,
                          timeout=120)  # bytes: text mode would turn the console's carriage returns into newlines
    return proc, logs[0].read_text(encoding="utf-8"), logs[1].read_text(encoding="utf-8")


def test_log_file_gets_records_and_the_progress_bar(tmp_path):
    proc, first, second = _run(tmp_path)
    assert proc.returncode == 1  # the uncaught error
    lines = first.splitlines()
    assert "\r" not in first and first.endswith("\n")
    # each record once, in order, with the progress bar between them as whole lines of its own
    assert sum("record before the bar" in ln for ln in lines) == 1
    assert sum("record after the bar" in ln for ln in lines) == 1
    bar = [i for i, ln in enumerate(lines) if ln.startswith("steps:")]
    assert bar, first
    before = next(i for i, ln in enumerate(lines) if "record before the bar" in ln)
    after = next(i for i, ln in enumerate(lines) if "record after the bar" in ln)
    assert before < bar[0] and bar[-1] < after
    assert "0/5" in lines[bar[0]]  # the first frame lands at once
    assert "100%" in lines[bar[-1]] and "5/5" in lines[bar[-1]]  # the finished bar always lands
    # frames are throttled (default: one per 10 s): 6 redraws, only the first and the final one in the file
    assert len(bar) == 2
    assert any("a python warning" in ln for ln in lines)  # stderr as a whole is teed, not only the bars
    assert "record in the second log" not in first
    # the second call: its own file gets its records and the error that stopped the job, the first file nothing more
    assert "record in the second log" in second and "stopped by RuntimeError: the error that stopped the job" in second
    assert "Traceback" in second and "RuntimeError" not in first
    assert not any(ln.strip() == "" for ln in second.splitlines())  # the cleared leave=False bar leaves no blank line
    # the console still gets everything, each record once (no second handler, no nested tee)
    err = proc.stderr.decode("utf-8")
    for text in ("record before the bar", "record after the bar", "record in the second log", "a python warning"):
        assert err.count(text) == 1, text
    assert "\rsteps:" in err and "5/5" in err


def test_tqdm_mininterval_sets_how_often_a_frame_lands(tmp_path):
    proc, first, _ = _run(tmp_path, TQDM_MININTERVAL="0")
    bar = [ln for ln in first.splitlines() if ln.startswith("steps:")]
    done = [next(k for k in range(6) if f"| {k}/5 " in ln) for ln in bar]
    assert done[:6] == [0, 1, 2, 3, 4, 5] and set(done[6:]) <= {5}  # every redraw (tqdm's close may redraw 5/5)
    assert proc.returncode == 1


def _tee(interval):
    console, log = io.StringIO(), io.StringIO()
    return _LogTee(console, log, interval), console, log


def test_tee_frames_lines_and_pending_text():
    tee, console, log = _tee(math.inf)  # no frame but the first passes the throttle
    for s in ["partial ", "line\n", "\rbar 1", "\rbar 2", "\rbar 3   ", "\n", "\r    ", "\r", "x\r\n", "tail"]:
        tee.write(s)
    tee.flush()
    assert console.getvalue() == "partial line\n\rbar 1\rbar 2\rbar 3   \n\r    \rx\r\ntail"
    assert log.getvalue() == "partial line\nbar 1\nbar 3\nx\n"  # bar 2 skipped; the last frame lands; no blank
    tee.finish()  # at exit: the line without its newline
    assert log.getvalue().endswith("x\ntail\n")

    tee, console, log = _tee(0)
    tee.write("\rbar 1")
    tee.write("a record\n")  # text after a finished frame starts a line of its own
    tee.write("\rbar 2")
    tee.write("\n")
    assert log.getvalue() == "bar 1\na record\nbar 2\n"
    assert tee.isatty() is False and tee.encoding == console.encoding


@pytest.mark.parametrize("broken", ["console", "file"])
def test_tee_survives_a_closed_stream(broken):
    tee, console, log = _tee(0)
    (console if broken == "console" else log).close()
    assert tee.write("still here\n") == len("still here\n")
    tee.flush()
    if broken == "console":
        assert log.getvalue() == "still here\n"


def test_a_bad_tqdm_mininterval_is_one_clear_error(tmp_path, monkeypatch):
    from rocktokens.core.io import setup_logging

    monkeypatch.setenv("TQDM_MININTERVAL", "often")
    with pytest.raises(ValueError, match="TQDM_MININTERVAL='often' is not a number"):
        setup_logging(tmp_path / "x.log")
    assert not (tmp_path / "x.log").exists()
