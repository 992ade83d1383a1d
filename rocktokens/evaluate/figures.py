"""The distillation figure (rules/evaluate.smk): accuracy per checkpoint and the OPD objective over steps."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rocktokens.core.plotting import COVERAGE_COLOR, OTHER_COLOR, ROCK_COLOR, need, save


def figure_distillation(checkpoints: pd.DataFrame, history: pd.DataFrame, out_path, dpi: int = 120,
                        benchmark: str = "") -> Path:
    """Does distillation work? (a) pass@1 per checkpoint with its 95 % interval (teacher dashed); (b) the OPD
    objective, mean reverse KL per response token of each step's rollouts, over the steps.

    Inputs: checkpoints (checkpoint, pass@1, ci_lo, ci_hi; the table of ``rocktokens.evaluate.distillation``), history
    (step, loss; the stage-2 history, or None when the run was trained elsewhere)."""
    need(checkpoints, "checkpoints", ["checkpoint", "pass@1", "ci_lo", "ci_hi"])
    if history is not None:
        need(history, "history", ["step", "loss"])
    fig = Figure(figsize=(10, 3.8))
    ax, bx = fig.subplots(1, 2)
    students = checkpoints[checkpoints["checkpoint"] != "teacher"].reset_index(drop=True)
    x = np.arange(len(students))
    y = students["pass@1"].to_numpy()
    ax.errorbar(x, y, yerr=[y - students["ci_lo"].to_numpy(), students["ci_hi"].to_numpy() - y], fmt="o-",
                color=COVERAGE_COLOR, capsize=3, label="student")
    teacher = checkpoints.loc[checkpoints["checkpoint"] == "teacher", "pass@1"]
    if len(teacher):
        ax.axhline(float(teacher.iloc[0]), color=OTHER_COLOR, ls="--", label="teacher")
    ax.set_xticks(x, students["checkpoint"].tolist(), rotation=30)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass@1" + (f" ({benchmark})" if benchmark else ""))
    ax.set_title("(a) accuracy along the distillation")
    ax.legend(loc="lower right")
    if history is None:  # source: checkpoints -- the run was trained elsewhere, its history is not here
        bx.text(0.5, 0.5, "no stage-2 history\n(checkpoints trained elsewhere)", ha="center", va="center",
                transform=bx.transAxes)
    else:
        h = history.sort_values("step")
        bx.plot(h["step"], h["loss"], color=ROCK_COLOR)
    bx.set_xlabel("OPD step")
    bx.set_ylabel("reverse KL per response token (nats)")
    bx.set_title("(b) OPD objective (Eq. 1) on each step's rollouts")
    fig.tight_layout()
    return save(fig, out_path, dpi)
