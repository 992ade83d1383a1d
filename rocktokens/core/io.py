"""Atomic outputs: nothing half-written is ever left at an output path."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
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


def setup_logging(log_path=None, level=logging.INFO) -> logging.Logger:
    """Send the library's log to the rule's ``log:`` file (and stderr)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s", handlers=handlers, force=True)
    logger = logging.getLogger("rocktokens")

    def _log_uncaught(kind, value, tb):  # the rule's log then holds the error that stopped it
        logger.error("stopped by %s: %s", kind.__name__, value, exc_info=(kind, value, tb))

    sys.excepthook = _log_uncaught
    return logger


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
