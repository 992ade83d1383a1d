"""What every figure shares: figures are drawn from artifact DataFrames only (no model, no SQL), written atomically as PNG.

Matplotlib is used through its object API with the Agg canvas (no pyplot global state, no display needed).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rocktokens.core.io import atomic_file

log = logging.getLogger("rocktokens.figures")

ROCK_COLOR = "#d62728"
OTHER_COLOR = "#7f7f7f"
COVERAGE_COLOR = "#1f77b4"


class FigureInputError(ValueError):
    """An artifact frame handed to a figure is empty or lacks a column."""


def need(df, name: str, cols) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise FigureInputError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise FigureInputError(f"{name} lacks column(s) {missing}; has {list(df.columns)}")
    if df.empty:
        raise FigureInputError(f"{name} is empty: nothing to plot")
    return df


def save(fig: Figure, out_path, dpi: int) -> Path:
    out = Path(out_path)
    FigureCanvasAgg(fig)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    log.info("figure written: %s", out)
    return out


def colors(n: int):
    from matplotlib import colormaps

    cm = colormaps["viridis"]
    return [cm(x) for x in np.linspace(0.05, 0.9, max(n, 1))]
