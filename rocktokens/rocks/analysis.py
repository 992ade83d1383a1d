"""The rock-token analysis of one token table (§2.2–2.4, Appendix E), glued from the library pieces.

1. DuckDB aggregation of the post-OPD scorer: Freq, ℓ̄_v, R(v) (Eq. 3–4), corpus loss.
2. Context consistency (Eq. 5–14) on the occurrences paired across the pre- and post-OPD scorers:
   CCR, R_ctx (Eq. 13) and V_rock (Eq. 14) for every token type.
3. The rock score in force, ``rocks.score`` (R, Eq. 4 — Appendix E's ranking, the default — or R_ctx, Eq. 13),
   recorded in ``token_stats.parquet`` (:func:`rocktokens.rocks.sets.with_rock_score`); coverage by K under it.
4. Stability of the top-K over independent resamples of n problems, under the same score (for R_ctx the whole
   detection of step 2 is re-run on each sub-corpus, its loss thresholds included); the chosen K.
5. Rock sets for every K with functional clusters and frequency-matched controls.
6. The rock set R at the chosen K, written once (``rocks/R.parquet``, ``R_controls.parquet``, ``R.json``) and read by
   every later stage; per-sequence densities; how many of R pass Eq. 14 (``R.json`` → ``context_filter``).

Each step is one rule (rules/rocks.smk) with only the settings it reads, so a change stops where its effect stops.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rocktokens.tokens.aggregate import Aggregator
from rocktokens.rocks.context import detect_rocks, sequences_from_occurrences
from rocktokens.rocks.sets import (
    ROCK_SCORES,
    choose_K,
    coverage_curve,
    frequency_matched_controls,
    functional_cluster,
    rock_set,
    stability,
    stability_summary,
    with_rock_score,
)
from rocktokens.rocks.windows import high_divergence_contexts

log = logging.getLogger("rocktokens.rocks.sets")

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


CONTEXT_COLUMNS = ["n_PH", "n_consistent", "CCR", "R_ctx", "in_rock_vocab"]


def rock_scores(agg: Aggregator, occ: pd.DataFrame, post: str, loss: str, ctx: dict, *, problems=None,
                n_candidates: int | None = None, extras: bool = True, tokens_by_seq=None):
    """Per-type R (Eq. 4) and the context-consistency columns (Eq. 5–14: n_PH, n_consistent, CCR, R_ctx,
    in_rock_vocab) on the occurrences of ``problems`` (None: all) — the three stages of §2.2 run on that
    sub-corpus alone, its quantile thresholds included. ``occ``: :func:`paired_losses`. Returns (stats, the
    :class:`~rocktokens.rocks.context.RockDetection`)."""
    if problems is None:
        sub = occ
        stats = agg.token_stats(post, loss, extras=extras)
    else:
        keep = {str(p) for p in problems}
        sub = occ[occ["problem_id"].astype(str).isin(keep)]
        stats = agg.token_stats(post, loss, problems=sorted(keep), extras=extras)
    ctx = dict(ctx)
    ctx.setdefault("n_candidates", n_candidates)
    det = detect_rocks(sub["seq_id"].to_numpy(), sub["position"].to_numpy(), sub["token_id"].to_numpy(),
                       sub["loss_pre"].to_numpy(), sub["loss_post"].to_numpy(), stats,
                       tokens_by_seq if problems is None else None, **ctx)
    return stats.merge(det.tokens[["token_id", *CONTEXT_COLUMNS]], on="token_id", how="left"), det


def context_filter_counts(stats: pd.DataFrame, rocks: pd.DataFrame) -> dict:
    """How Eq. 14 (V_rock: R_ctx ≥ τ_R among the R candidates) relates to a rock set: |V_rock|, and how many
    of the set are in it."""
    in_v = set(stats.loc[stats["in_rock_vocab"].fillna(False).astype(bool), "token_id"].astype(int))
    return {"n_rock_vocab": len(in_v), "K": int(len(rocks)),
            "n_in_rock_vocab": int(sum(int(t) in in_v for t in rocks["token_id"]))}


def score_tokens(token_dir, cfg: Mapping, pre: str, post: str, n_candidates: int) -> dict:
    """Rule rock_scores (steps 1–3): token stats with the context columns, functional cluster and the rock score in
    force; coverage by K; the occurrences with their Eq. 5/9 flags; the stored high-divergence contexts (windows).

    ``cfg``: ``loss``, ``score``, ``context``, ``duckdb`` of config ``rocks``; ``n_candidates``: max(rocks.Ks)."""
    loss, ctx, score = cfg["loss"], cfg["context"], cfg["score"]
    if score not in ROCK_SCORES:
        raise ValueError(f"rocks.score {score!r} not in {ROCK_SCORES}")
    with Aggregator.from_config(token_dir, cfg) as agg:
        totals = agg.corpus_totals(post, loss)
        if n_candidates > totals["n_types"]:
            raise ValueError(f"rocks.Ks up to {n_candidates} exceed the {totals['n_types']} token types seen in the "
                             "trajectories")
        occ = paired_losses(token_dir, pre, post, loss)
        sid, pos, tok = occ["seq_id"].to_numpy(), occ["position"].to_numpy(), occ["token_id"].to_numpy()
        by_seq = sequences_from_occurrences(sid, pos, tok)
        stats, det = rock_scores(agg, occ, post, loss, ctx, n_candidates=n_candidates, tokens_by_seq=by_seq)
    # with each neighbour's Eq. 5 flag: W(v) for the freeze arms and the window knockout (rocktokens.rocks.windows)
    windows = high_divergence_contexts(by_seq, sid, pos, tok, det.occurrences["consistent"].to_numpy(), ctx["w"],
                                       elevated=det.occurrences["in_PH"].to_numpy())
    stats["cluster"] = [functional_cluster(t) for t in stats["token"]]
    stats = with_rock_score(stats, score)  # every later reader ranks by the score in force
    occ_out = occ[_OCC_COLS].assign(in_PH=det.occurrences["in_PH"].to_numpy(), rho=det.occurrences["rho"].to_numpy(),
                                    consistent=det.occurrences["consistent"].to_numpy())
    info = {"corpus": totals, "context_params": det.params, "loss": loss, "pre_scorer": pre, "post_scorer": post,
            "score": score}
    return {"stats": stats, "coverage": coverage_curve(stats), "occurrences": occ_out, "windows": windows,
            "info": info}


def choose_rock_K(token_dir, coverage: pd.DataFrame, cfg: Mapping, pre: str, post: str, seed: int) -> dict:
    """Rule rock_stability (step 4): Jaccard stability of the top-K under resamples of n problems, under the score in
    force (for R_ctx the whole detection is re-run on each sub-corpus), and the chosen K.

    ``cfg``: ``loss``, ``score``, ``Ks``, ``stability``, ``duckdb`` (and ``context`` when the score is R_ctx)."""
    loss, score, Ks, st = cfg["loss"], cfg["score"], cfg["Ks"], cfg["stability"]
    with Aggregator.from_config(token_dir, cfg) as agg:
        problems = agg.problems(post)
        if score == "R":
            def sub_stats(ids):
                return agg.token_stats(post, loss, problems=list(ids), extras=False)
        else:  # R_ctx of a sub-corpus: the whole detection re-run on it, on the occurrences paired across scorers
            occ = paired_losses(token_dir, pre, post, loss)

            def sub_stats(ids):
                return rock_scores(agg, occ, post, loss, cfg["context"], problems=ids, n_candidates=max(Ks),
                                   extras=False)[0]
        stab = stability(sub_stats, problems, Ks, ns=st["ns"], B=st["B"], seed=seed, score=score)
    summary = stability_summary(stab)
    K, evidence = choose_K(summary, coverage, Ks, min_jaccard=st["min_jaccard"])
    log.info("rock score %s: chosen K=%d; coverage %.3f", score, K, evidence.get("coverage", float("nan")))
    return {"stability": stab, "summary": summary, "chosen": {"K": int(K), "evidence": evidence, "score": score}}


def rock_set_with_controls(stats: pd.DataFrame, K: int, cfg: Mapping, seed: int, exclude_ids=()):
    """Rule rock_set (step 5, one K): the top-K set under the score in force, with functional clusters, and its
    frequency-matched controls. ``cfg``: ``control_tol``, ``control_strict``."""
    rocks = rock_set(stats, K)
    return rocks, frequency_matched_controls(stats, rocks, seed=seed, tol=cfg["control_tol"], exclude=exclude_ids,
                                             strict=cfg["control_strict"])


def definitional_set(token_dir, stats: pd.DataFrame, occurrences: pd.DataFrame, rocks: pd.DataFrame,
                     controls: pd.DataFrame, chosen: Mapping, info: Mapping, cfg: Mapping) -> dict:
    """Rule rock_set_R: the study's one rock set R (the chosen K's set, read by every later stage), its controls,
    per-sequence densities, and ``R.json``: the chosen K with its evidence, the scoring info, how many of R pass
    Eq. 14 and the median densities. ``cfg``: ``duckdb``."""
    K = int(chosen["K"])
    if len(rocks) != K:
        raise ValueError(f"the rock set handed in has {len(rocks)} types, the chosen K is {K}")
    with Aggregator.from_config(token_dir, cfg) as agg:
        density = agg.seq_density(info["post_scorer"], rocks["token_id"].tolist(),
                                  consistent=occurrences[occurrences["consistent"]])
    record = {**chosen, **info, "controls_total_ratio": float(controls["total_ratio"].iloc[0]),
              "context_filter": context_filter_counts(stats, rocks),
              "median_density": float(np.median(density["density"])) if len(density) else float("nan"),
              "median_density_ctx": float(np.median(density["density_ctx"])) if len(density) else float("nan")}
    log.info("rock set R: K=%d; median rock density %.3f (context-consistent occurrences %.3f); %d of the %d rocks "
             "pass Eq. 14", K, record["median_density"], record["median_density_ctx"],
             record["context_filter"]["n_in_rock_vocab"], K)
    return {"rocks": rocks, "controls": controls, "density": density, "record": record}
