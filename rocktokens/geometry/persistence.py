"""Persistence of token groups across training (paper §2.6, Figure 3 c–d).

Per token type, the mean per-occurrence loss (``rocks.loss``, full-vocabulary reverse KL by default) under an
early and a late OPD checkpoint, on the *measurement* split of the analysis trajectories (the groups were
selected on the other split: :func:`rocktokens.geometry.gradients.split_problems`). Both checkpoints are teacher-forced
on the same occurrences (the token table), so the pair is matched per token. The pair itself is fixed in the
config before any run (``geometry.persistence``; FACTS mistake 5): by default the first OPD checkpoint and the
final one. ΔKL = KL_late − KL_early; per group a two-sided Wilcoxon signed-rank test of KL_early vs KL_late.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rocktokens.geometry.gradients import GROUPS, mann_whitney, wilcoxon_paired

PERSISTENCE_COLUMNS = ["token_id", "token", "group", "n", "kl_early", "kl_late", "delta_kl"]


def _per_type(stats: pd.DataFrame, what: str) -> pd.DataFrame:
    for c in ("token_id", "freq", "mean_loss"):
        if c not in stats.columns:
            raise ValueError(f"{what} lacks column {c!r}")
    return stats.set_index("token_id")


def persistence_table(groups: pd.DataFrame, early: pd.DataFrame, late: pd.DataFrame) -> pd.DataFrame:
    """One row per group token measured on the split: n (occurrences), kl_early, kl_late, delta_kl.

    ``early`` / ``late``: per-type stats (token_id, freq, mean_loss) of the two scorers on the *same*
    occurrences; a token that does not occur on the measured split is dropped (it has no measurement).
    """
    e, l_ = _per_type(early, "early stats"), _per_type(late, "late stats")
    if not e["freq"].sort_index().equals(l_["freq"].sort_index()):
        raise ValueError("early and late stats count different occurrences: they must score the same trajectories")
    g = groups[groups["token_id"].isin(e.index)]
    out = pd.DataFrame({
        "token_id": g["token_id"].to_numpy(), "token": g["token"].to_numpy(), "group": g["group"].to_numpy(),
        "n": e.loc[g["token_id"], "freq"].to_numpy(np.int64),
        "kl_early": e.loc[g["token_id"], "mean_loss"].to_numpy(float),
        "kl_late": l_.loc[g["token_id"], "mean_loss"].to_numpy(float)})
    out["delta_kl"] = out["kl_late"] - out["kl_early"]
    return out[PERSISTENCE_COLUMNS]


def persistence_summary(table: pd.DataFrame, early: str, late: str) -> dict:
    """Per group: tokens measured, median KL early / late / ΔKL, relative change of the medians, Wilcoxon of
    KL_early vs KL_late; and Mann–Whitney of the per-token relative change ΔKL/KL_early, rock vs high_kl."""
    out = {"early": early, "late": late, "groups": {}}
    for g in GROUPS:
        sub = table[table["group"] == g]
        w = wilcoxon_paired(sub["kl_early"], sub["kl_late"])
        med_e, med_l = w["median_x"], w["median_y"]
        out["groups"][g] = {"n_types": int(len(sub)), "median_kl_early": med_e, "median_kl_late": med_l,
                            "median_delta_kl": w["median_diff"],
                            "relative_change_of_median": (med_l - med_e) / med_e if med_e and not math.isnan(med_e)
                            else math.nan,
                            "wilcoxon_W": w["W"], "wilcoxon_p": w["p"]}
    rel = table["delta_kl"] / table["kl_early"]
    out["relative_delta_rock_vs_high_kl"] = mann_whitney(rel[table["group"] == "rock"], rel[table["group"] == "high_kl"])
    return out


def run_persistence(token_dir, groups: pd.DataFrame, split: pd.DataFrame, early: str, late: str,
                    rocks_cfg) -> tuple[pd.DataFrame, dict]:
    """Per-type mean loss (``rocks.loss``) of the early and late scorers on the measurement split (DuckDB,
    :meth:`rocktokens.tokens.aggregate.Aggregator.token_stats`), then :func:`persistence_table` and its summary."""
    from rocktokens.tokens.aggregate import Aggregator
    from rocktokens.geometry.gradients import measurement_problems

    meas = measurement_problems(split)
    with Aggregator.from_config(token_dir, rocks_cfg) as agg:
        e = agg.token_stats(early, rocks_cfg["loss"], problems=meas)
        l_ = agg.token_stats(late, rocks_cfg["loss"], problems=meas)
    table = persistence_table(groups, e, l_)
    summary = persistence_summary(table, early, late)
    summary.update(loss=rocks_cfg["loss"], n_measurement_problems=len(meas))
    return table, summary
