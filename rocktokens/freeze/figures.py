"""Figure 5 (rock-freeze training) from the freeze artifacts only: ``freeze/accuracy.parquet``,
``freeze/arms.tsv`` and the arms' histories."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rocktokens.core.plotting import FigureInputError, need, save

ARM_STYLE = {"baseline": ("#1f77b4", "-"), "freeze": ("#d62728", "-"), "tokens": ("#ff7f0e", "-"),
             "random": ("#7f7f7f", "--"), "sgd": ("#9467bd", "-.")}
PAPER_MASKED = (0.18, 0.30)  # §4: the rock share of output tokens (≈18 %) to "these 30 % high-cost tokens"


def _style(name: str, i: int):
    if name in ARM_STYLE:
        return ARM_STYLE[name]
    from matplotlib import colormaps

    return colormaps["autumn"](0.15 + 0.2 * (i % 4)), ":"


def figure5(accuracy: pd.DataFrame, arms: pd.DataFrame, histories: Mapping[str, pd.DataFrame], out_path,
            dpi: int = 120) -> Path:
    """(a) pooled pass@1 on the hard benchmarks against OPD step per arm, 95 % interval as a band (the paper's
    Figure 5; step 0 is the shared stage-1 start); (b) masked share per step per arm (x_t ∈ R or t ∈ W_R, x_t ∈ R
    only, or the random windows; the band is the paper's 18–30 %); (c) the speed-up of each arm's updates over the
    reference arm's per response token (update seconds / response tokens of a step, median over steps, probe
    instrumentation excluded: the real effect of skipping the head and KL at frozen positions as the arms ran in
    the DAG; ``freeze/arms.tsv``).

    ``accuracy``: arm, step, pass@1, ci_low, ci_high; ``arms``: arm, masked_share, update_speedup,
    zero_weight_share; ``histories``: arm → history (step, masked_share).
    """
    need(accuracy, "accuracy", ["arm", "step", "pass@1", "ci_low", "ci_high"])
    need(arms, "arms table", ["arm"])
    if not histories:
        raise FigureInputError("no arm histories to plot")
    names = list(histories)
    fig = Figure(figsize=(15, 4.3))
    ax = fig.subplots(1, 3)
    share = dict(zip(arms["arm"], arms["masked_share"])) if "masked_share" in arms.columns else {}
    for i, name in enumerate(names):
        c, ls = _style(name, i)
        d = accuracy[accuracy["arm"] == name].sort_values("step")
        if d.empty:
            raise FigureInputError(f"accuracy has no rows for arm {name!r}")
        s = share.get(name, float("nan"))
        label = f"{name} (masked {100 * s:.0f} %)" if np.isfinite(s) and s > 0 else name
        ax[0].plot(d["step"], d["pass@1"], color=c, ls=ls, marker="o", ms=3.5, label=label)
        ax[0].fill_between(d["step"], d["ci_low"], d["ci_high"], color=c, alpha=0.12, lw=0)
        h = histories[name]
        if "masked_share" in h.columns:
            ax[1].plot(h["step"], h["masked_share"], color=c, ls=ls, label=name)
    if "update_speedup" in arms.columns:
        x = np.arange(len(arms))
        ax[2].bar(x, arms["update_speedup"], color=[_style(a, i)[0] for i, a in enumerate(arms["arm"])])
        zero = arms["zero_weight_share"] if "zero_weight_share" in arms.columns else pd.Series(np.nan, index=arms.index)
        for xi, sp, z in zip(x, arms["update_speedup"], zero):
            ax[2].annotate(f"{sp:.2f}x\n{100 * z:.0f} % skipped" if np.isfinite(z) else f"{sp:.2f}x", (xi, sp),
                           ha="center", va="bottom", fontsize=7)
        ax[2].set_xticks(x, arms["arm"], rotation=30, fontsize=8)
        ax[2].set_ylim(0, 1.25 * float(np.nanmax(arms["update_speedup"])))
    ax[0].set_xlabel("OPD step")
    ax[0].set_ylabel("pass@1, AIME24+AIME25+HMMT25 pooled")
    ax[0].set_title("(a) accuracy during OPD (95 % interval over problems)")
    ax[0].legend(fontsize=7)
    ax[1].axhspan(*PAPER_MASKED, color="k", alpha=0.07, lw=0, label="paper: 18–30 %")
    ax[1].legend(fontsize=7)
    ax[1].set_xlabel("OPD step")
    ax[1].set_ylabel("share of response tokens frozen")
    ax[1].set_ylim(0, 1)
    ax[1].set_title("(b) masked share")
    ax[2].axhline(1.0, color="k", lw=0.6)
    ref = arms["speedup_reference"].iloc[0] if "speedup_reference" in arms.columns else "baseline"
    ax[2].set_ylabel(f"s per response token, {ref} / arm (median)", fontsize=9)
    ax[2].set_title("(c) update speed-up per response token, in-DAG\n(head + KL skipped at weight 0; probe not timed)",
                    fontsize=10)
    for a in ax:
        a.grid(alpha=0.25)
    fig.tight_layout()
    return save(fig, out_path, dpi)
