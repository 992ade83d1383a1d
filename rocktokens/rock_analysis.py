"""The rock-token analysis of one token table (§2.2–2.4, Appendix E), glued from the library pieces.

1. DuckDB aggregation of the post-OPD scorer: Freq, ℓ̄_v, R(v) (Eq. 3–4), corpus loss, coverage by K.
2. Context consistency (Eq. 5–14) on the occurrences paired across the pre- and post-OPD scorers.
3. Stability of the top-K over independent resamples of n problems; the chosen K.
4. Rock sets for every K with functional clusters and frequency-matched controls; per-sequence densities.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rocktokens.aggregate import Aggregator
from rocktokens.context import detect_rocks, sequences_from_occurrences
from rocktokens.rocks import (
    choose_K,
    frequency_matched_controls,
    functional_cluster,
    rock_set,
    stability,
    stability_summary,
)
from rocktokens.windows import high_divergence_contexts

log = logging.getLogger("rocktokens.rocks")

_OCC_COLS = ["benchmark", "problem_id", "sample", "position", "token_id"]


def _occurrences(token_dir, scorer: str, loss: str) -> pd.DataFrame:
    t = pq.read_table(f"{token_dir}/scorer={scorer}", columns=[*_OCC_COLS, loss]).to_pandas()
    if t.empty:
        raise ValueError(f"scorer {scorer!r} has no token rows in {token_dir}")
    return t


def paired_losses(token_dir, pre: str, post: str, loss: str) -> pd.DataFrame:
    """Occurrences with ℓ^pre and ℓ^post side by side (same trajectories, same order by construction)."""
    a, b = _occurrences(token_dir, pre, loss), _occurrences(token_dir, post, loss)
    if len(a) != len(b) or not a[_OCC_COLS].equals(b[_OCC_COLS]):
        raise ValueError(f"scorers {pre!r} and {post!r} did not score the same occurrences")
    out = b[_OCC_COLS].copy()
    out["loss_pre"], out["loss_post"] = a[loss].to_numpy(), b[loss].to_numpy()
    out["seq_id"] = out.groupby(["benchmark", "problem_id", "sample"], sort=False).ngroup()
    return out


def analyse(token_dir, cfg: dict, pre: str, post: str, seed: int, exclude_ids=()) -> dict:
    """Every artifact of the rock analysis as DataFrames/dicts (written by the rule's script)."""
    loss = cfg["loss"]
    ctx = cfg["context"]
    with Aggregator.from_config(token_dir, cfg) as agg:
        stats = agg.token_stats(post, loss)
        n_types = len(stats)
        bad_K = [K for K in cfg["Ks"] if K > n_types]
        if bad_K:
            raise ValueError(f"rocks.Ks {bad_K} exceed the {n_types} token types seen in the trajectories")
        coverage = agg.coverage(post, loss)
        totals = agg.corpus_totals(post, loss)
        occ = paired_losses(token_dir, pre, post, loss)
        sid, pos, tok = occ["seq_id"].to_numpy(), occ["position"].to_numpy(), occ["token_id"].to_numpy()
        by_seq = sequences_from_occurrences(sid, pos, tok)
        det = detect_rocks(sid, pos, tok, occ["loss_pre"].to_numpy(), occ["loss_post"].to_numpy(), stats, by_seq,
                           n_candidates=max(cfg["Ks"]), **ctx)
        windows = high_divergence_contexts(by_seq, sid, pos, tok, det.occurrences["consistent"].to_numpy(), ctx["w"])
        stats = stats.merge(det.tokens[["token_id", "n_PH", "n_consistent", "CCR", "R_ctx", "in_rock_vocab"]],
                            on="token_id", how="left")
        stats["cluster"] = [functional_cluster(t) for t in stats["token"]]
        problems = sorted(occ["problem_id"].unique())
        st = cfg["stability"]
        stab = stability(lambda ids: agg.token_stats(post, loss, problems=list(ids), extras=False), problems,
                         cfg["Ks"], ns=st["ns"], B=st["B"], seed=seed)
        summary = stability_summary(stab)
        K, evidence = choose_K(summary, coverage, cfg["Ks"], min_jaccard=st["min_jaccard"])
        sets, controls = {}, {}
        for k in cfg["Ks"]:
            sets[k] = rock_set(stats, k)
            controls[k] = frequency_matched_controls(stats, sets[k], seed=seed, tol=cfg["control_tol"],
                                                     exclude=exclude_ids, strict=cfg["control_strict"])
        occ_out = occ[_OCC_COLS].assign(in_PH=det.occurrences["in_PH"].to_numpy(),
                                        rho=det.occurrences["rho"].to_numpy(),
                                        consistent=det.occurrences["consistent"].to_numpy())
        density = agg.seq_density(post, sets[K]["token_id"].tolist(), consistent=occ_out[occ_out["consistent"]])
    chosen = {"K": int(K), "evidence": evidence,
              "controls_total_ratio": {int(k): float(c["total_ratio"].iloc[0]) for k, c in controls.items()}, "corpus": totals, "context_params": det.params,
              "loss": loss, "pre_scorer": pre, "post_scorer": post,
              "median_density": float(np.median(density["density"])) if len(density) else float("nan"),
              "median_density_ctx": float(np.median(density["density_ctx"])) if len(density) else float("nan")}
    log.info("chosen K=%d; coverage %.3f; median rock density %.3f (context-consistent occurrences %.3f)", K,
             evidence.get("coverage", float("nan")), chosen["median_density"], chosen["median_density_ctx"])
    return {"stats": stats, "coverage": coverage, "occurrences": occ_out, "stability": stab, "summary": summary,
            "chosen": chosen, "sets": sets, "controls": controls, "density": density, "windows": windows}
