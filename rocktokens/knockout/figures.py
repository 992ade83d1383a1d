"""Figures 4 and 6 of the paper (knockout), drawn from the knockout artifacts only (Agg canvas, atomic PNG).

* :func:`figure4` — per benchmark, the token-knockout effects Δ(v) of every screened candidate sorted ascending
  as bars, the ε band shaded, bars coloured by the token-only census (the bar's own test; the paper's Figure 4
  colours the token Δ bars); the global-window and local-window effects drawn as dots per candidate; the panel
  title counts the token census and the paper's "token or window" census (Eq. 22).
* :func:`figure6` — Δ(v) on one benchmark against six predictors (post-/pre-OPD student entropy, teacher entropy,
  log10 frequency, rock rate, mean post-OPD KL), the paper's-census Strong Pillars in red, Pearson r and p in each
  panel.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rocktokens.core.plotting import FigureInputError, need, save
from rocktokens.knockout.experiment import FIGURE6_PREDICTORS
from rocktokens.core.stats import MIXED, NEUTRAL, STRONG_PILLAR, STRONG_STUMBLING, pearson

CATEGORY_COLORS = {STRONG_PILLAR: "#d62728", STRONG_STUMBLING: "#1f77b4", MIXED: "#9467bd", NEUTRAL: "#bdbdbd"}
CATEGORY_LABELS = {STRONG_PILLAR: "Strong Pillar", STRONG_STUMBLING: "Strong Stumbling", MIXED: "mixed",
                   NEUTRAL: "Neutral"}


def _counts(cats: pd.Series) -> str:
    counts = cats.value_counts()
    return ", ".join(f"{CATEGORY_LABELS[k]} {int(counts.get(k, 0))}"
                     for k in (STRONG_PILLAR, NEUTRAL, STRONG_STUMBLING, MIXED) if k != MIXED or counts.get(k, 0))


#: The other policies' effects, drawn as dots over the token bars: column → (marker colour, legend label).
POLICY_DOTS = {"delta_window": ("black", "Δ(W(v)), global window knockout"),
               "delta_local": ("#ff7f0e", "local window knockout Δ")}


def figure4(categories: pd.DataFrame, eps: float, benchmarks, out_path, dpi: int = 150):
    """Sorted Δ(v) bars with the |Δ| < ε band; colours = the token-only census (``category_token``, else
    ``category``); dots = the window and local Δ when present; title = token and paper's-census counts."""
    need(categories, "categories", ["benchmark", "token_id", "delta_token", "category", "baseline_acc"])
    benchmarks = list(benchmarks)
    absent = [b for b in benchmarks if not (categories["benchmark"] == b).any()]
    if absent:
        raise FigureInputError(f"categories have no rows for benchmark(s) {absent}")
    colour_by = "category_token" if "category_token" in categories else "category"
    paper = "category_token_or_window" if "category_token_or_window" in categories else None
    dots = {c: v for c, v in POLICY_DOTS.items() if c in categories}
    fig = Figure(figsize=(11, 3.2 * len(benchmarks)))
    axes = fig.subplots(len(benchmarks), 1, squeeze=False)[:, 0]
    for ax, b in zip(axes, benchmarks):
        c = categories[categories["benchmark"] == b].sort_values(["delta_token", "token_id"], kind="stable")
        x = np.arange(len(c))
        colors = [CATEGORY_COLORS.get(k, "#000000") for k in c[colour_by]]
        ax.axhspan(-eps, eps, color="#e0e0e0", zorder=0, label=f"|Δ| < ε = {eps:g}")
        ax.bar(x, c["delta_token"], width=0.85, color=colors, zorder=2)
        for col, (colour, label) in dots.items():
            ax.scatter(x, c[col], s=9, color=colour, zorder=3, label=label)
        ax.axhline(0, color="black", lw=0.6, zorder=1)
        title = f"{b}: baseline acc {c['baseline_acc'].iloc[0]:.3f}; token knockout: {_counts(c[colour_by])}"
        if paper:
            title += f"\ntoken or window (Eq. 22, the paper's census): {_counts(c[paper])}"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("Δ(v) = Acc(π\\v) − Acc(π)")
        ax.set_xlim(-1, len(c))
        ax.set_xticks([])
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [Patch(color=CATEGORY_COLORS[k], label=CATEGORY_LABELS[k])
                for k in (STRONG_PILLAR, STRONG_STUMBLING, MIXED, NEUTRAL)
                if k != MIXED or (categories[colour_by] == MIXED).any()]
    axes[-1].set_xlabel(f"screened candidates, sorted by Δ(v) (n = {len(c)}); bar colour = token-knockout category")
    fig.suptitle("Figure 4: token knockout effects of the screened Rock-Token candidates", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=min(len(handles), 5), frameon=False)
    return save(fig, out_path, dpi)


def figure6(categories: pd.DataFrame, predictors: pd.DataFrame, benchmark: str, out_path, dpi: int = 150):
    """Δ(v) on ``benchmark`` vs the six predictors of the paper's Figure 6, with Pearson r, p (all candidates)."""
    need(categories, "categories", ["benchmark", "token_id", "delta_token", "category"])
    need(predictors, "predictors", ["token_id", *FIGURE6_PREDICTORS])
    c = categories[categories["benchmark"] == benchmark]
    if c.empty:
        raise FigureInputError(f"categories have no rows for benchmark {benchmark!r}")
    m = c.merge(predictors, on="token_id", how="inner")
    fig = Figure(figsize=(12, 7))
    axes = fig.subplots(2, 3).ravel()
    pillar = (m["category"] == STRONG_PILLAR).to_numpy()
    for ax, (col, label) in zip(axes, FIGURE6_PREDICTORS.items()):
        x, y = m[col].to_numpy(float), m["delta_token"].to_numpy(float)
        ax.scatter(x[~pillar], y[~pillar], s=14, color="#7f7f7f", alpha=0.8, label="other candidates")
        ax.scatter(x[pillar], y[pillar], s=22, color=CATEGORY_COLORS[STRONG_PILLAR], label="Strong Pillar")
        r, p = pearson(x, y)
        ax.text(0.03, 0.95, f"r = {r:+.3f}, p = {p:.3f}" if np.isfinite(r) else "r undefined (constant)",
                transform=ax.transAxes, va="top", fontsize=9)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel(f"Δ(v) on {benchmark}")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Figure 6: knockout Δ on {benchmark} vs candidate predictors (n = {len(m)})", fontsize=11)
    fig.tight_layout()
    return save(fig, out_path, dpi)
