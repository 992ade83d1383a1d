"""Does the distillation under study work? Per-checkpoint pass@1 with paired gains, and the OPD reverse-KL curve.

Every later number of the study (rock tokens, knockout, freeze arms) is measured on a student that on-policy
distillation (Eq. 1) is supposed to have improved, so the run first shows that it did:

* :func:`distillation_table` — pass@1 of the teacher, the student base, the stage-1 (KD) checkpoint and every OPD
  checkpoint on one benchmark (the in-distribution one), each with a 95 % interval over problems, and the paired
  gains ``base → stage 1``, ``stage 1 → final OPD``, ``base → final OPD`` (same problems and sampling seeds in every
  checkpoint's evaluation, so the difference is paired problem by problem; paired bootstrap,
  :func:`rocktokens.core.stats.paired_bootstrap`), plus the share of the teacher–student gap the final student closes;
* :func:`kl_curve` — the OPD objective (mean full-vocabulary reverse KL per response token on the step's own
  rollouts, the ``loss`` column of the stage-2 history) over the steps, with its first- and last-quarter means.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.core.stats import minimum_detectable_effect, paired_bootstrap
from rocktokens.core.naming import opd_sorted

#: the gains the table reports: (name, from, to); "final" is the last OPD checkpoint
GAINS = (("stage-1 KD", "student_base", "stage1"), ("OPD", "stage1", "final"), ("KD + OPD", "student_base", "final"))


def opd_order(checkpoints: Sequence[str]) -> list[str]:
    """The OPD checkpoint names (``opd-<k>``) among ``checkpoints``, in training order."""
    return opd_sorted(checkpoints)


def per_problem(evals: pd.DataFrame, benchmark: str) -> pd.DataFrame:
    """``[problems × checkpoints]`` mean correctness over the k samples of each problem on ``benchmark``."""
    df = evals[evals["benchmark"] == benchmark]
    if df.empty:
        raise ValueError(f"no evaluation rows for benchmark {benchmark!r}")
    wide = df.groupby(["id", "checkpoint"])["correct"].mean().unstack("checkpoint")
    missing = wide.columns[wide.isna().any()].tolist()
    if missing:
        raise ValueError(f"checkpoints {missing} were not evaluated on every problem of {benchmark!r}: "
                         "gains must be paired over the same problems")
    return wide.astype(float)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson interval of a proportion over ``n`` problems (the per-problem means are in [0, 1])."""
    if n == 0:
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def distillation_table(evals: pd.DataFrame, benchmark: str, n_resamples: int = 10_000,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(checkpoint table, gains table, summary) on ``benchmark``.

    Checkpoint table: ``checkpoint, pass@1, ci_lo, ci_hi, n_problems``, in the order teacher, student base,
    stage 1, OPD checkpoints (without a student base -- an analysed run may have none -- the gains from it are
    left out and the gap is measured from stage 1, ``gap_from``). Gains table: ``gain, from, to, pass_from, pass_to, delta, ci_lo, ci_hi, p``
    (paired bootstrap over problems) and ``mde``, the smallest gain this comparison detects with 80 % power at
    α = 0.05 (:func:`rocktokens.core.stats.minimum_detectable_effect`). Summary: the final OPD checkpoint, ``gap_closed`` = (final − base) /
    (teacher − base), and the gains by name.
    """
    wide = per_problem(evals, benchmark)
    opd = opd_order(wide.columns)
    if not opd:
        raise ValueError(f"no OPD checkpoint (opd-<k>) was evaluated on {benchmark!r}")
    need = [c for c in ("teacher", "stage1") if c not in wide.columns]
    if need:
        raise ValueError(f"checkpoints {need} were not evaluated on {benchmark!r}")
    # without a student base (source: checkpoints may not have one) the gap is measured from the pre-OPD student
    base = "student_base" if "student_base" in wide.columns else "stage1"
    gains_of = [g for g in GAINS if {g[1], g[2]} <= {"final", *wide.columns} and g[1] != g[2]]
    order = ["teacher", *(["student_base"] if base == "student_base" else []), "stage1", *opd]
    n = len(wide)
    rows = []
    for c in order:
        p = float(wide[c].mean())
        lo, hi = _wilson(p, n)
        rows.append({"checkpoint": c, "pass@1": p, "ci_lo": lo, "ci_hi": hi, "n_problems": n})
    table = pd.DataFrame(rows)
    final = opd[-1]
    names = {"final": final}
    diffs = np.stack([wide[names.get(b, b)].to_numpy() - wide[names.get(a, a)].to_numpy() for _, a, b in gains_of], 1)
    boot = paired_bootstrap(diffs, n_resamples=n_resamples, seed=seed)
    gains = pd.DataFrame({
        "gain": [g for g, _, _ in gains_of],
        "from": [a for _, a, _ in gains_of],
        "to": [names.get(b, b) for _, _, b in gains_of],
        "pass_from": [float(wide[a].mean()) for _, a, _ in gains_of],
        "pass_to": [float(wide[names.get(b, b)].mean()) for _, _, b in gains_of],
        "delta": boot["delta"].to_numpy(), "ci_lo": boot["ci_lo"].to_numpy(), "ci_hi": boot["ci_hi"].to_numpy(),
        "p": boot["p"].to_numpy(),
        "mde": minimum_detectable_effect(diffs.std(axis=0, ddof=1), n) if n > 1 else np.nan,
    })
    acc = dict(zip(table["checkpoint"], table["pass@1"]))
    gap = acc["teacher"] - acc[base]
    summary = {
        "benchmark": benchmark, "n_problems": n, "final": final, "pass@1": acc, "gap_from": base,
        "gap_closed": (acc[final] - acc[base]) / gap if gap > 0 else math.nan,
        "gains": {r["gain"]: {k: r[k] for k in ("delta", "ci_lo", "ci_hi", "p", "mde")} for r in gains.to_dict("records")},
    }
    return table, gains, summary


def kl_curve(history: pd.DataFrame) -> dict:
    """The OPD objective over the steps: first- and last-quarter means of the per-token reverse KL (``loss``) and
    their ratio; ``falling`` when the last quarter's mean lies below the first's."""
    if history.empty or not {"step", "loss"} <= set(history.columns):
        raise ValueError("the stage-2 history needs rows with columns step and loss")
    h = history.sort_values("step")
    q = max(1, len(h) // 4)
    first, last = float(h["loss"].iloc[:q].mean()), float(h["loss"].iloc[-q:].mean())
    return {"steps": int(len(h)), "quarter_steps": int(q), "rkl_first_quarter": first, "rkl_last_quarter": last,
            "ratio": last / first if first > 0 else math.nan, "falling": bool(last < first)}


def summary_rows(summary: Mapping) -> list[tuple[str, str, float]]:
    """(quantity, text, value) lines of the run summary: the paired gains, the gap closed, the KL curve."""
    rows = []
    for name in (g for g, _, _ in GAINS if g in summary["gains"]):  # in the distillation's order (JSON sorts keys)
        g = summary["gains"][name]
        mde = f"; detectable ≥ {g['mde']:.3f}" if "mde" in g else ""
        rows.append((f"pass@1 gain, {name} ({summary['benchmark']}, paired)",
                     f"{g['delta']:+.3f} [{g['ci_lo']:+.3f}, {g['ci_hi']:+.3f}], p = {g['p']:.2g}{mde}", g["delta"]))
    frm = "" if summary.get("gap_from", "student_base") == "student_base" else f" (from {summary['gap_from']})"
    rows.append((f"teacher–student gap closed by {summary['final']}{frm}", f"{summary['gap_closed']:.0%}",
                 summary["gap_closed"]))
    kl = summary.get("kl_curve")
    if kl:
        rows.append(("OPD reverse KL per token, first → last quarter of the steps",
                     f"{kl['rkl_first_quarter']:.3f} → {kl['rkl_last_quarter']:.3f} (×{kl['ratio']:.2f})", kl["ratio"]))
    return rows
