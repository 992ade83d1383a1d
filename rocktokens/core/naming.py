"""The names of the OPD checkpoints, built and parsed here only: ``opd-1`` … ``opd-C`` (stage 2 and every freeze arm)."""
from __future__ import annotations

import re
from typing import Iterable

_OPD = re.compile(r"opd-(\d+)")


def opd_name(k: int) -> str:
    """The k-th OPD checkpoint (1-based)."""
    return f"opd-{int(k)}"


def opd_names(n: int) -> list[str]:
    """``opd-1`` … ``opd-n``."""
    return [opd_name(k) for k in range(1, int(n) + 1)]


def opd_index(name) -> int | None:
    """k of ``opd-k``; None for any other name."""
    m = _OPD.fullmatch(str(name))
    return int(m.group(1)) if m else None


def opd_sorted(names: Iterable) -> list:
    """The OPD checkpoint names among ``names``, in step order (``opd-2`` before ``opd-10``)."""
    return sorted((n for n in names if opd_index(n) is not None), key=opd_index)
