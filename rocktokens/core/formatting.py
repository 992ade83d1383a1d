"""Numbers as the tables, the summary and the findings print them."""
from __future__ import annotations

import math

NA = "n/a"


def isnum(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def fnum(x, nd: int = 3) -> str:
    """A number with ``nd`` significant digits (``n/a`` for None/NaN)."""
    return f"{float(x):.{nd}g}" if isnum(x) else NA


def fpct(x, nd: int = 1) -> str:
    """A share in [0, 1] as a percentage."""
    return f"{100 * float(x):.{nd}f} %" if isnum(x) else NA


def fp(x) -> str:
    """A p-value: two significant digits, scientific below 1e-3."""
    if not isnum(x):
        return NA
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"
