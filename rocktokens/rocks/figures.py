"""Figure 2 (rules/rocks.smk): the rock tokens' frequency/KL, density, coverage and stability."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rocktokens.core.plotting import COVERAGE_COLOR, OTHER_COLOR, ROCK_COLOR, FigureInputError, colors, need, save


def figure2(token_stats: pd.DataFrame, rocks: pd.DataFrame, densities: pd.DataFrame, coverage: pd.DataFrame,
            stability_summary: pd.DataFrame, out_path, dpi: int = 120, min_jaccard: float | None = None,
            score: str = "R") -> Path:
    """The four panels of the paper's Figure 2.

    (a) per-token mean KL against frequency (log x), rock tokens in red;
    (b) histogram of the per-sequence rock density (share of a sequence's tokens that are rocks) and, when
        ``densities`` has ``density_ctx``, of the context-consistent rock occurrences (the paper's retained
        occurrences, §2.3), medians marked;
    (c) cumulative KL coverage (blue, left axis) and average Jaccard (red, right axis) against K, chosen K dashed;
    (d) mean Jaccard against subset size n, one curve per K, with the 2.5–97.5 % band over resamples.

    Inputs: token_stats (token_id, freq, mean_loss), rocks (token_id), densities (density in [0, 1]), coverage
    (K, coverage), stability_summary (K, n, jaccard_mean, jaccard_lo, jaccard_hi). The chosen K is len(rocks);
    ``min_jaccard`` (the choose_K bar, ``rocks.stability.min_jaccard`` as recorded in ``chosen_K.json``) is drawn
    as a dotted line in (c) and (d) when given; ``score`` (``rocks.score``) names the ranking in (c). Returns the
    written path.
    """
    need(token_stats, "token_stats", ["token_id", "freq", "mean_loss"])
    need(rocks, "rocks", ["token_id"])
    need(densities, "densities", ["density"])
    need(coverage, "coverage", ["K", "coverage"])
    need(stability_summary, "stability_summary", ["K", "n", "jaccard_mean"])
    ts = token_stats[token_stats["freq"] > 0]
    if ts.empty:
        raise FigureInputError("token_stats has no token with freq > 0: panel (a) needs a log frequency axis")
    dens = densities["density"].dropna().to_numpy(dtype=float)
    if dens.size == 0:
        raise FigureInputError("densities has only NaN densities")
    dens_ctx = densities["density_ctx"].dropna().to_numpy(dtype=float) if "density_ctx" in densities else None
    for d in (dens, dens_ctx):
        if d is not None and ((d < 0).any() or (d > 1).any()):
            raise FigureInputError("densities.density / density_ctx must be shares in [0, 1]")

    fig = Figure(figsize=(13, 9.5))
    ax = fig.subplots(2, 2)

    # (a) mean KL vs frequency
    a = ax[0, 0]
    is_rock = ts["token_id"].isin(set(rocks["token_id"]))
    a.scatter(ts.loc[~is_rock, "freq"], ts.loc[~is_rock, "mean_loss"], s=6, alpha=0.4, color=OTHER_COLOR,
              label=f"other tokens ({int((~is_rock).sum())})", linewidths=0)
    a.scatter(ts.loc[is_rock, "freq"], ts.loc[is_rock, "mean_loss"], s=14, color=ROCK_COLOR,
              label=f"rock tokens ({int(is_rock.sum())})", linewidths=0)
    a.set_xscale("log")
    a.set_xlabel("token frequency Freq(v) (log)")
    a.set_ylabel(r"mean per-token KL $\bar{\ell}_v$")
    a.set_title("(a) per-token mean KL vs frequency")
    a.legend(loc="upper right", fontsize=8)

    # (b) rock density per sequence: every occurrence of a rock type, and the context-consistent ones (Eq. 11)
    b = ax[0, 1]
    bins = np.linspace(0, 100, min(40, max(5, int(np.sqrt(dens.size)))) + 1)
    series = [("every occurrence of a rock type", dens, ROCK_COLOR)]
    if dens_ctx is not None:
        series.append(("context-consistent occurrences (Eq. 11)", dens_ctx, "#555555"))
    for label, d, colour in series:
        med = float(np.median(d))
        b.hist(100 * d, bins=bins, color=colour, alpha=0.55, edgecolor="white", label=label)
        b.axvline(100 * med, color=colour, ls="--", lw=1.4, label=f"median {100 * med:.1f} %")
    b.set_xlabel("rock density per sequence (% of its tokens)")
    b.set_ylabel("sequences")
    b.set_title(f"(b) rock density ({dens.size} sequences)")
    b.legend(loc="upper right", fontsize=7)

    # (c) coverage and average Jaccard vs K
    c = ax[1, 0]
    cov = coverage.sort_values("K")
    c.plot(cov["K"], 100 * cov["coverage"], color=COVERAGE_COLOR, lw=1.8, label="KL coverage")
    c.set_xlabel(f"K (top-K tokens by {score})")
    c.set_ylabel("cumulative KL coverage (%)", color=COVERAGE_COLOR)
    c.tick_params(axis="y", colors=COVERAGE_COLOR)
    c.set_ylim(0, 105)
    byK = stability_summary.groupby("K")["jaccard_mean"].mean().sort_index()
    c.set_xlim(0, max(float(byK.index.max()) * 1.1, 1.0))
    c2 = c.twinx()
    c2.plot(byK.index, byK.values, color=ROCK_COLOR, marker="o", lw=1.8, label="average Jaccard")
    c2.set_ylabel("average Jaccard (over n)", color=ROCK_COLOR)
    c2.tick_params(axis="y", colors=ROCK_COLOR)
    c2.set_ylim(0, 1.05)
    if min_jaccard is not None:
        c2.axhline(min_jaccard, color=ROCK_COLOR, ls=":", lw=1)
    chosen = len(rocks)
    c.axvline(chosen, color="black", ls=":", lw=1, label=f"K = {chosen}")
    lines = c.get_legend_handles_labels()
    lines2 = c2.get_legend_handles_labels()
    c.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="center right", fontsize=8)
    c.set_title("(c) coverage and stability vs K")

    # (d) Jaccard vs n, one curve per K
    d = ax[1, 1]
    cmap = colors(stability_summary["K"].nunique())
    for col, (K, g) in zip(cmap, stability_summary.sort_values("n").groupby("K")):
        d.plot(g["n"], g["jaccard_mean"], marker="o", color=col, lw=1.5, label=f"K = {K}")
        if {"jaccard_lo", "jaccard_hi"} <= set(g.columns):
            d.fill_between(g["n"], g["jaccard_lo"], g["jaccard_hi"], color=col, alpha=0.12, linewidth=0)
    d.set_xlabel("problems in the sub-corpus (n)")
    d.set_ylabel("Jaccard(top-K on n, top-K on all)")
    d.set_ylim(0, 1.05)
    if min_jaccard is not None:
        d.axhline(min_jaccard, color="black", ls=":", lw=1, label=f"J = {min_jaccard:.2f}")
    d.legend(loc="lower right", fontsize=8, ncol=2)
    d.set_title("(d) selection stability vs sample size")

    for axis in ax.flat:
        axis.grid(alpha=0.25)
    fig.tight_layout()
    return save(fig, out_path, dpi)
