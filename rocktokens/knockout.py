"""Inference-time knockout of Rock-Token candidates (paper §3.2 and Appendix D.3–D.4).

Policies (the arms of the experiment), all decoding the post-OPD student at T = 1.0:

* **baseline** π_θ — nothing banned;
* **token knockout** π_θ^{\\v} (Eq. 17/20) — the logit of v is −∞ at every decoding step;
* **window knockout** π_θ^{\\W(v)} (Eq. 21) — every id of W(v) is −∞ at every step, where W(v) is
  :func:`rocktokens.windows.window_candidates` (THE definition of the study: v plus every *screened candidate*
  that occurs in one of v's stored high-divergence contexts, ``rocks/windows.parquet``).

Both are a per-request ``banned_ids`` set of the generation backend (``GenerationRequest.banned_ids``: −inf
logits in the HF sampler; a per-request vLLM logits processor), so **one generation batch carries a different mask
per sequence**: a shard submits all its arms × problems × samples in one ``backend.generate`` call.

Candidates (:func:`screen_candidates`): the top ``K_screen`` token types by the Rock Score R(v) (Eq. 4) of the
rock analysis — the *same* score and order (``rocktokens.rocks.ranked``) that define the rock sets ``rocks/K*.parquet``
frozen in training, so the screened pool contains every rock set with K ≤ K_screen (FACTS.md mistake 6).

Pairing: the seed of (benchmark, problem, sample) is ``derive_seed(seed, "knockout", benchmark, problem, sample)``
in every arm, so an arm whose ban never bites reproduces the baseline sample exactly (HF backend; vLLM up to its
batch-invariance caveat). Per-(arm, problem, sample) correctness indicators are saved; Δ(v) and Δ(W(v)) are
derived from them (:func:`effects`).

Arms are identified by their banned set (:func:`arm_key`): a window W(v) = {v} is the token arm itself and is
generated once.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.generation import GenerationRequest, SamplingParams
from rocktokens.seeding import derive_seed
from rocktokens.stats import classify, paired_bootstrap
from rocktokens.windows import window_candidates

log = logging.getLogger("rocktokens.knockout")

POLICIES = ("token", "window")
#: A shard's per-(arm, benchmark, problem, sample) indicator table: column → dtype.
INDICATOR_COLUMNS = {"arm": "object", "benchmark": "object", "id": "object", "sample": "int64", "correct": "bool",
                     "n_tokens": "int64", "finish_reason": "object"}
BASELINE_SHARD = "baseline"
#: Table 1's nine predictors: column → label, in the paper's order.
PREDICTORS = {
    "frequency": "Frequency",
    "rock_count": "Rock count",
    "rock_rate": "Rock rate",
    "kl_pre": "Pre-OPD KL",
    "kl_post": "Post-OPD KL",
    "kl_improvement": "KL improvement",
    "entropy_teacher": "Teacher entropy",
    "entropy_student_pre": "Pre-OPD student entropy",
    "entropy_student_post": "Post-OPD student entropy",
}
#: Figure 6's six predictors (the paper's panels), column → axis label.
FIGURE6_PREDICTORS = {
    "entropy_student_post": "post-OPD student entropy",
    "entropy_student_pre": "pre-OPD student entropy",
    "entropy_teacher": "teacher entropy",
    "log10_frequency": "log10 frequency",
    "rock_rate": "rock rate",
    "kl_post": "mean post-OPD KL",
}


class KnockoutInputError(ValueError):
    """Bad knockout input: an id outside the vocabulary, an empty benchmark, m < 1, ..."""


# ----------------------------------------------------------------------------------------------- candidates
def check_ids_in_vocab(ids: Iterable[int], vocab_size: int, what: str = "candidate") -> None:
    """One clear error naming the first offending ids when any id lies outside ``[0, vocab_size)``."""
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < int(vocab_size)]
    if bad:
        raise KnockoutInputError(f"{len(bad)} {what} id(s) outside the vocabulary [0, {vocab_size}): {bad[:10]}")


def screen_candidates(stats: pd.DataFrame, k_screen: int, core_k: int, vocab_size: int) -> pd.DataFrame:
    """The screening pool R̃: the top ``k_screen`` types by R(v) (Eq. 4), ranked exactly as the rock sets.

    Columns: ``rank`` (1-based, by R), ``token_id``, ``qwen3_id``, ``token``, ``freq``, ``R``, ``in_core``
    (rank ≤ ``core_k``: the definitional K set of §2.2, the "K=100 core" of Appendix D.2). When the corpus has
    fewer types than ``k_screen``, all are screened (logged).
    """
    from rocktokens.rocks import ranked

    if int(k_screen) < 1:
        raise KnockoutInputError(f"k_screen must be >= 1, got {k_screen}")
    if int(core_k) < 1:
        raise KnockoutInputError(f"core K must be >= 1, got {core_k}")
    df = ranked(stats, score="R")
    if len(df) < k_screen:
        log.warning("only %d token types in the corpus: screening all of them (k_screen=%d)", len(df), k_screen)
    df = df.head(int(k_screen))
    check_ids_in_vocab(df["token_id"], vocab_size)
    cols = [c for c in ("rank", "token_id", "qwen3_id", "token", "freq", "R") if c in df.columns]
    out = df[cols].reset_index(drop=True).copy()
    out["in_core"] = out["rank"] <= int(core_k)
    return out


def n_shards(k_screen: int, shard_size: int) -> int:
    """Shard jobs per benchmark: the ``len(POLICIES) · K_screen`` (candidate, policy) slots in blocks of
    ``shard_size`` (at paper scale ``shard_size: 1``: one knockout policy on one benchmark per GPU job)."""
    return max(1, math.ceil(len(POLICIES) * int(k_screen) / int(shard_size)))


def shard_names(k_screen: int, shard_size: int) -> list[str]:
    """The knockout shards (file targets, per benchmark) at parse time: ``s000``, ``s001``, ... (slot blocks)."""
    return [f"s{i:03d}" for i in range(n_shards(k_screen, shard_size))]


def plan(candidates: pd.DataFrame, contexts: pd.DataFrame, shard_size: int, min_share: float = 0.0) -> pd.DataFrame:
    """One row per (candidate, policy) slot, in rank order (token before window): ``shard`` (the slot's block of
    ``shard_size``), ``arm`` (:func:`arm_key` of the banned set), ``banned`` (list of ids), ``n_banned`` and
    ``gen_shard``, the shard that generates the arm: the shard of its first slot, so an arm shared by several slots
    (a window W(v) = {v}, or two candidates with the same window) is generated once. Window arms use
    :func:`rocktokens.windows.window_candidates`."""
    if int(shard_size) < 1:
        raise KnockoutInputError(f"shard_size must be >= 1, got {shard_size}")
    pool = candidates["token_id"].astype(int).tolist()
    rows = []
    for v in pool:
        for policy, banned in (("token", [v]), ("window", window_candidates(contexts, v, pool, min_share))):
            banned = sorted(int(b) for b in banned)
            rows.append({"token_id": v, "policy": policy, "shard": f"s{len(rows) // int(shard_size):03d}",
                         "arm": arm_key(banned), "banned": banned, "n_banned": len(banned)})
    df = pd.DataFrame(rows, columns=["token_id", "policy", "shard", "arm", "banned", "n_banned"])
    df["gen_shard"] = df.groupby("arm", sort=False)["shard"].transform("first")
    return df


def arm_key(banned: Iterable[int]) -> str:
    """The identity of an arm: its sorted banned ids joined by ``,`` (``""`` = the baseline)."""
    return ",".join(str(i) for i in sorted({int(b) for b in banned}))


def parse_arm(key: str) -> tuple[int, ...]:
    return tuple(int(x) for x in key.split(",")) if key else ()


def shard_arms(plan_df: pd.DataFrame, shard: str) -> list[str]:
    """The distinct arms a shard generates (the baseline shard: only the baseline), in first-seen order; an arm
    belongs to the shard of its first slot (``gen_shard``), so no arm is generated by two shards."""
    if shard == BASELINE_SHARD:
        return [""]
    arms = plan_df.loc[plan_df["gen_shard"] == shard, "arm"]
    return list(dict.fromkeys(arms))


# ----------------------------------------------------------------------------------------------- generation
def check_benchmark(df: pd.DataFrame, name: str) -> None:
    if df is None or len(df) == 0:
        raise KnockoutInputError(f"benchmark {name!r} has zero problems: nothing to measure a knockout on")
    missing = [c for c in ("id", "prompt", "answer", "checker") if c not in df.columns]
    if missing:
        raise KnockoutInputError(f"benchmark {name!r} lacks column(s) {missing}")


def check_samples(m) -> int:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise KnockoutInputError(f"samples per problem m must be an integer >= 1, got {m!r}")
    return int(m)


def select_problems(df: pd.DataFrame, n_problems: int | None, name: str) -> pd.DataFrame:
    """The first ``n_problems`` problems of a benchmark (all when ``None`` or more than it has)."""
    check_benchmark(df, name)
    if n_problems is not None:
        if int(n_problems) < 1:
            raise KnockoutInputError(f"n_problems must be >= 1 (or null for all), got {n_problems}")
        df = df.iloc[: int(n_problems)]
    return df.reset_index(drop=True)


def build_requests(prompt_ids: Mapping[str, Sequence[Sequence[int]]], problem_ids: Mapping[str, Sequence[str]],
                   arms: Sequence[str], m: int, seed: int) -> tuple[list[GenerationRequest], list[tuple]]:
    """Requests of every (benchmark, problem, arm, sample), problem-major so arms of one problem sit together.

    The seed depends on (benchmark, problem, sample) only — identical across arms (the pairing)."""
    m = check_samples(m)
    reqs, keys = [], []
    for bench, ids in problem_ids.items():
        for pid, pids in zip(ids, prompt_ids[bench]):
            for s in range(m):
                sd = derive_seed(seed, "knockout", bench, pid, s)
                for arm in arms:
                    reqs.append(GenerationRequest(prompt_ids=tuple(pids), seed=sd, banned_ids=parse_arm(arm)))
                    keys.append((arm, bench, pid, s))
    return reqs, keys


def generate_arms(backend, tokenizer, benches: Mapping[str, pd.DataFrame], arms: Sequence[str], m: int,
                  params: SamplingParams, seed: int) -> pd.DataFrame:
    """Generate and score every arm on every benchmark in ONE ``backend.generate`` call (one mask per sequence).

    Returns one row per (arm, benchmark, problem, sample): ``correct``, ``n_tokens``, ``finish_reason``.
    Raises ``RuntimeError`` if a generated sequence contains one of its banned ids (never expected).
    """
    from rocktokens.training.stages import encode_prompt
    from rocktokens.world.checker import grade

    m = check_samples(m)
    for name, df in benches.items():
        check_benchmark(df, name)
    vocab = int(getattr(backend, "vocab_size"))
    check_ids_in_vocab({i for a in arms for i in parse_arm(a)}, vocab, "banned")
    prompt_ids = {b: [encode_prompt(tokenizer, p) for p in df["prompt"]] for b, df in benches.items()}
    problem_ids = {b: df["id"].astype(str).tolist() for b, df in benches.items()}
    reqs, keys = build_requests(prompt_ids, problem_ids, arms, m, seed)
    results = backend.generate(reqs, params)
    meta = {b: df.assign(id=df["id"].astype(str)).set_index("id") for b, df in benches.items()}
    rows, n_timeouts = [], 0
    for (arm, bench, pid, s), q, r in zip(keys, reqs, results):
        if q.banned_ids and set(r.token_ids) & set(q.banned_ids):
            raise RuntimeError(f"arm {arm!r}, {bench}/{pid} sample {s}: a banned id was generated")
        resp = tokenizer.decode(r.token_ids, skip_special_tokens=True)
        verdict = grade(resp, meta[bench].at[pid, "checker"], meta[bench].at[pid, "answer"])
        n_timeouts += bool(verdict.timed_out)
        rows.append({"arm": arm, "benchmark": bench, "id": pid, "sample": s, "correct": bool(verdict.correct),
                     "n_tokens": len(r.token_ids), "finish_reason": r.finish_reason})
    if n_timeouts:
        log.warning("%d of %d answer checks timed out (scored incorrect)", n_timeouts, len(rows))
    return pd.DataFrame(rows)


def run_shard(backend, tokenizer, benches: Mapping[str, pd.DataFrame], arms: Sequence[str], m: int,
              params: SamplingParams, seed: int, *, arms_per_chunk: int, state_dir=None, spec: dict | None = None,
              progress: bool = True) -> pd.DataFrame:
    """All arms of one shard, ``arms_per_chunk`` arms per generate call (each call mixes their masks).

    With ``state_dir``, each finished chunk is saved there (``chunk-XXXX.parquet``) next to ``spec.json``; a rerun
    with the same ``spec`` skips the saved chunks (a killed shard resumes), a different spec starts afresh.
    """
    from tqdm.auto import tqdm

    from rocktokens.io import write_json, write_parquet

    if int(arms_per_chunk) < 1:
        raise KnockoutInputError(f"arms_per_chunk must be >= 1, got {arms_per_chunk}")
    chunks = [list(arms[i: i + int(arms_per_chunk)]) for i in range(0, len(arms), int(arms_per_chunk))]
    state = Path(state_dir) if state_dir is not None else None
    if state is not None:
        spec_path = state / "spec.json"
        full_spec = {"spec": spec or {}, "arms": list(arms), "arms_per_chunk": int(arms_per_chunk)}
        if spec_path.exists() and json.loads(spec_path.read_text()) != json.loads(json.dumps(full_spec, default=str)):
            log.info("knockout state in %s is for other settings: starting afresh", state)
            for f in state.glob("chunk-*.parquet"):
                f.unlink()
        state.mkdir(parents=True, exist_ok=True)
        write_json(full_spec, spec_path, sort_keys=True)
    parts = []
    for i, chunk in enumerate(tqdm(chunks, desc="knockout arms", unit="chunk", disable=None if progress else True)):
        path = state / f"chunk-{i:04d}.parquet" if state is not None else None
        if path is not None and path.exists():
            parts.append(pd.read_parquet(path))
            continue
        df = generate_arms(backend, tokenizer, benches, chunk, m, params, seed)
        if path is not None:
            write_parquet(df, path)
        parts.append(df)
    return pd.concat(parts, ignore_index=True)[list(INDICATOR_COLUMNS)] if parts else empty_indicators()


def clear_state(state_dir, empty_parents: int = 0) -> None:
    """Drop a finished shard's saved chunks (once its output is written), then up to ``empty_parents`` folders
    above it that are left empty (the benchmark's and all shards' state folders)."""
    import contextlib
    import shutil

    state = Path(state_dir)
    shutil.rmtree(state, ignore_errors=True)
    for folder in list(state.parents)[:empty_parents]:
        with contextlib.suppress(OSError):  # not empty: another shard still has state there
            folder.rmdir()


def empty_indicators() -> pd.DataFrame:
    """A shard's indicator table with no rows (typed, so it concatenates with full ones)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INDICATOR_COLUMNS.items()})


# ----------------------------------------------------------------------------------------------- effects
def per_problem(indicators: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each (arm, benchmark, problem): the mean of its m sample indicators."""
    g = indicators.groupby(["arm", "benchmark", "id"], sort=False)["correct"]
    return g.agg(acc="mean", m="count").reset_index()


def effects(plan_df: pd.DataFrame, indicators: pd.DataFrame, n_resamples: int, seed: int) -> pd.DataFrame:
    """Δ(v) (Eq. 20) and Δ(W(v)) (Eq. 21) with paired-bootstrap p-values, one row per (benchmark, candidate,
    policy): ``arm``, ``n_banned``, ``acc`` (knockout accuracy), ``baseline_acc``, ``delta``, ``p``, ``ci_lo``,
    ``ci_hi``, ``n_problems``, ``m``, ``n_resamples``, ``sd_diff`` (SD over problems of the paired differences).

    ``indicators`` holds the baseline arm (``""``) and every arm of ``plan_df``; a benchmark's problems and m must
    be identical across arms (the pairing), else a clear error. The bootstrap resamples are shared by all arms of a
    benchmark (seeded by ``seed`` and the benchmark name).
    """
    dup = indicators.duplicated(["arm", "benchmark", "id", "sample"])
    if dup.any():
        first = indicators.loc[dup].iloc[0]
        raise KnockoutInputError(f"{int(dup.sum())} duplicated knockout indicator row(s), e.g. arm {first['arm']!r} "
                                 f"on {first['benchmark']}/{first['id']} sample {first['sample']}: shards overlap")
    pp = per_problem(indicators)
    out = []
    for bench, g in pp.groupby("benchmark", sort=False):
        wide = g.pivot(index="id", columns="arm", values="acc")
        m_by_arm = g.groupby("arm")["m"].agg(["min", "max"])
        if "" not in wide.columns:
            raise KnockoutInputError(f"benchmark {bench!r}: no baseline indicators")
        needed = sorted(set(plan_df["arm"]))
        missing = [a for a in needed if a not in wide.columns]
        if missing:
            raise KnockoutInputError(f"benchmark {bench!r}: no indicators for {len(missing)} arm(s), e.g. {missing[:3]}")
        sub = wide[["", *needed]]
        if sub.isna().any().any():
            raise KnockoutInputError(f"benchmark {bench!r}: arms were not run on the same problems (unpaired)")
        ms = m_by_arm.loc[["", *needed]]
        if ms.to_numpy().min() != ms.to_numpy().max():
            raise KnockoutInputError(f"benchmark {bench!r}: arms have different samples per problem (unpaired)")
        base = sub[""].to_numpy()
        diffs = sub[needed].to_numpy() - base[:, None]
        bs = paired_bootstrap(diffs, n_resamples, derive_seed(seed, "knockout-bootstrap", bench))
        bs.insert(0, "arm", needed)
        bs["acc"] = sub[needed].mean(axis=0).to_numpy()
        bs["baseline_acc"] = float(base.mean())
        bs["m"] = int(ms.to_numpy().max())
        bs["sd_diff"] = diffs.std(axis=0, ddof=1) if len(diffs) > 1 else np.nan
        rows = plan_df[["token_id", "policy", "arm", "n_banned"]].merge(bs, on="arm", how="left")
        rows.insert(0, "benchmark", bench)
        out.append(rows)
    cols = ["benchmark", "token_id", "policy", "arm", "n_banned", "acc", "baseline_acc", "delta", "p", "ci_lo",
            "ci_hi", "n_problems", "m", "n_resamples", "sd_diff"]
    return pd.concat(out, ignore_index=True)[cols]


def power(eff: pd.DataFrame, alpha: float, effect: float = 0.10, power_: float = 0.80) -> pd.DataFrame:
    """Per benchmark and policy: the minimum detectable Δ of one knockout arm against the baseline (median SD of
    the per-problem differences over the arms, :func:`rocktokens.stats.minimum_detectable_effect`) and the problems
    this design (same m) needs so that ``effect`` is detectable with probability ``power_`` at level ``alpha``."""
    from rocktokens.stats import minimum_detectable_effect, problems_for_effect

    rows = []
    for (bench, policy), g in eff.groupby(["benchmark", "policy"], sort=False):
        sd, n = float(g["sd_diff"].median()), int(g["n_problems"].iloc[0])
        rows.append({"benchmark": bench, "policy": policy, "n_problems": n, "m": int(g["m"].iloc[0]),
                     "sd_diff": sd, "alpha": alpha, "power": power_,
                     "mde": float(minimum_detectable_effect(sd, n, alpha, power_)), "effect": effect,
                     "n_for_effect": problems_for_effect(sd, effect, alpha, power_) if sd > 0 else n})
    return pd.DataFrame(rows)


def categorize(eff: pd.DataFrame, candidates: pd.DataFrame, eps: float, alpha: float) -> pd.DataFrame:
    """Eq. 22 per (benchmark, candidate): the token and window effects side by side and the category."""
    t = eff[eff["policy"] == "token"].set_index(["benchmark", "token_id"])
    w = eff[eff["policy"] == "window"].set_index(["benchmark", "token_id"])
    df = pd.DataFrame({"delta_token": t["delta"], "p_token": t["p"], "ci_lo_token": t["ci_lo"], "ci_hi_token": t["ci_hi"],
                       "baseline_acc": t["baseline_acc"]})
    df = df.join(pd.DataFrame({"delta_window": w["delta"], "p_window": w["p"], "n_window": w["n_banned"]}), how="left")
    df = df.reset_index()
    df["category"] = classify(df["delta_token"], df["p_token"], df["delta_window"], df["p_window"], eps, alpha)
    cand = candidates[[c for c in ("token_id", "rank", "token", "in_core") if c in candidates.columns]]
    return df.merge(cand, on="token_id", how="left").sort_values(["benchmark", "rank"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- predictors
def predictors(stats_post: pd.DataFrame, stats_pre: pd.DataFrame, token_ids: Sequence[int]) -> pd.DataFrame:
    """Table 1's nine predictors (+ ``log10_frequency`` for Figure 6) of the screened candidates.

    ``stats_post``: the rock analysis's ``token_stats`` (post-OPD scorer: ``freq``, ``mean_loss``,
    ``mean_entropy_student``, ``mean_entropy_teacher``, ``n_consistent``); ``stats_pre``: the same DuckDB
    aggregation (``Aggregator.token_stats``, ``rocktokens/sql/token_stats.sql``) for the pre-OPD scorer on the same
    trajectories. Definitions:

    frequency = Freq(v); rock count = number of v's context-consistent persistent high-loss occurrences
    (|R(v)|, Eq. 11: ``n_consistent``); rock rate = rock count / Freq(v); pre-/post-OPD KL = mean per-occurrence
    loss ℓ̄_v (the rock analysis's ``rocks.loss``, default full-vocabulary reverse KL) under the pre-/post-OPD
    student; KL improvement = pre − post; teacher entropy = mean teacher entropy at v's positions; pre-/post-OPD
    student entropy = mean student entropy there under each student.
    """
    need_post = ["token_id", "freq", "mean_loss", "mean_entropy_student", "mean_entropy_teacher", "n_consistent"]
    need_pre = ["token_id", "mean_loss", "mean_entropy_student"]
    for df, need, what in ((stats_post, need_post, "post-OPD token stats"), (stats_pre, need_pre, "pre-OPD token stats")):
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise KnockoutInputError(f"{what} lack column(s) {missing}")
    ids = pd.DataFrame({"token_id": [int(v) for v in token_ids]})
    post = stats_post[need_post].rename(columns={"mean_loss": "kl_post", "mean_entropy_student": "entropy_student_post",
                                                 "mean_entropy_teacher": "entropy_teacher", "n_consistent": "rock_count"})
    pre = stats_pre[need_pre].rename(columns={"mean_loss": "kl_pre", "mean_entropy_student": "entropy_student_pre"})
    df = ids.merge(post, on="token_id", how="left").merge(pre, on="token_id", how="left")
    missing = df.loc[df[["freq", "kl_pre"]].isna().any(axis=1), "token_id"].tolist()
    if missing:
        raise KnockoutInputError(f"candidate(s) {missing[:10]} absent from the token statistics")
    df = df.rename(columns={"freq": "frequency"})
    df["rock_count"] = df["rock_count"].fillna(0).astype(np.int64)
    df["rock_rate"] = df["rock_count"] / df["frequency"]
    df["kl_improvement"] = df["kl_pre"] - df["kl_post"]
    df["log10_frequency"] = np.log10(df["frequency"].astype(float))
    return df[["token_id", *PREDICTORS, "log10_frequency"]]


# ----------------------------------------------------------------------------------------------- config
def check_knockout_config(config: dict) -> None:
    """Cross-field checks of the ``knockout`` section (the schema checks keys and types): its benchmarks must be
    prepared by the workflow (top-level ``benchmarks``), be distinct, and the core K must not exceed K_screen."""
    ko = config["knockout"]
    unknown = [b for b in ko["benchmarks"] if b not in config["benchmarks"]]
    if unknown:
        raise KnockoutInputError(f"config key 'knockout.benchmarks': {unknown} not in the top-level 'benchmarks' list")
    if len(set(ko["benchmarks"])) != len(ko["benchmarks"]):
        raise KnockoutInputError("config key 'knockout.benchmarks': duplicate benchmark")
    if ko.get("core_K") is not None and ko["core_K"] > ko["k_screen"]:
        raise KnockoutInputError(f"config key 'knockout.core_K': {ko['core_K']} exceeds k_screen {ko['k_screen']}")
    check_samples(ko["samples"])


# ----------------------------------------------------------------------------------------------- rule bodies
def make_plan(stats: pd.DataFrame, contexts: pd.DataFrame, chosen: dict, ko: dict, vocab_size: int):
    """Rule knockout_plan: (candidates with their shard and window size, the (candidate, policy) → arm plan).

    The core K (Appendix D.2's "K=100 core") is ``ko["core_K"]``, or the chosen K of the rock analysis when null.
    """
    core_k = ko["core_K"] if ko.get("core_K") is not None else int(chosen["K"])
    cands = screen_candidates(stats, ko["k_screen"], core_k, vocab_size)
    p = plan(cands, contexts, ko["shard_size"], ko.get("window_min_share", 0.0))
    tok = p[p["policy"] == "token"][["token_id", "shard"]]
    win = p[p["policy"] == "window"][["token_id", "n_banned"]].rename(columns={"n_banned": "window_size"})
    cands = cands.merge(tok, on="token_id").merge(win, on="token_id")
    log.info("screening %d candidates (core K=%d) in %d shard(s); %d distinct arms; mean |W(v)| = %.1f",
             len(cands), core_k, cands["shard"].nunique(), p["arm"].nunique(), cands["window_size"].mean())
    return cands, p


def tables(categories: pd.DataFrame, eff: pd.DataFrame, preds: pd.DataFrame, candidates: pd.DataFrame,
           ko: dict) -> dict[str, pd.DataFrame]:
    """Rule knockout_tables: Table 1, Table 2 (+ cross-task agreement), multiple testing, the sign tests and the
    design's power (:func:`power`)."""
    from rocktokens.stats import census, correlation_table, cross_task_agreement, multiple_testing, sign_tests

    benches = list(ko["benchmarks"])
    deltas = categories[["benchmark", "token_id", "delta_token"]].rename(columns={"delta_token": "delta"})
    baseline = categories.groupby("benchmark")["baseline_acc"].first().to_dict()
    core = candidates.loc[candidates["in_core"], "token_id"].tolist()
    return {
        "table1": correlation_table(deltas, preds, PREDICTORS, benches),
        "table2": census(categories, baseline, benches),
        "agreement": cross_task_agreement(categories, benches),
        "multiple_testing": multiple_testing(eff, ko["alpha"], ko["fdr_q"]),
        "sign_test": sign_tests(categories, core, benches),
        "power": power(eff, ko["alpha"]),
    }
