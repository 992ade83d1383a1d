"""Inference-time knockout of Rock-Token candidates (paper §3.2 and Appendix D.3–D.4).

Policies (the arms of the experiment), all decoding the post-OPD student at T = 1.0:

* **baseline** π_θ — nothing banned;
* **token knockout** π_θ^{\\v} (Eq. 17/20) — the logit of v is −∞ at every decoding step;
* **window knockout** π_θ^{\\W(v)} (Eq. 21, *global*) — every id of W(v) is −∞ at every step, where W(v) is
  :func:`rocktokens.rocks.windows.window_candidates` (THE definition of the study: v plus every *screened candidate*
  that occurs in one of v's stored high-divergence contexts, ``rocks/windows.parquet``). For digit or delimiter
  candidates W(v) holds several frequent tokens, so this policy is a global multi-token ban;
* **local window knockout** (ours; the paper's "suppresses all Rock Token candidates appearing in the local
  high-divergence window W(v) during decoding" read literally) — the ids of W(v) are −∞ only while decoding inside
  a context that matches one of v's stored contexts (:func:`local_ban`; the rule is
  :class:`rocktokens.generation.base.LocalBan`): at step t the ban is active iff for some step s ∈ [t − w, t] the
  last w generated tokens before s agree with the left half (offsets −w … −1) of a stored context of v on at least
  m_left elements, m_left = the least agreement whose Eq. 8 similarity over w elements reaches γ
  (:func:`left_min_matches`; positional, γ = 0.5, w = 2 → 1 of 2). The prompt is not part of the left context:
  positions before the response are PAD, which agrees with nothing under ``pad_policy="never"`` — as the stored
  contexts, which come from responses, treat them. So the ban covers the step at which v's context is recognised
  (where v itself would be emitted) and the w steps after it (v's right half): the part of W(v)'s segment that
  left-to-right decoding reaches once the segment is recognised.

The token and window bans are a per-request ``banned_ids`` set of the generation backend, the local ban a
per-request ``local_ban`` (``GenerationRequest``: −inf logits in the HF sampler; a per-request vLLM logits
processor), so **one generation batch carries a different mask per sequence**: a shard submits all its arms ×
problems × samples in one ``backend.generate`` call.

Candidates (:func:`screen_candidates`): the top ``K_screen`` token types by the Rock Score R(v) (Eq. 4) of the
rock analysis — the *same* score and order (``rocktokens.rocks.sets.ranked``) that define the rock sets ``rocks/K*.parquet``
frozen in training, so the screened pool contains every rock set with K ≤ K_screen (FACTS.md mistake 6; checked:
K_screen ≥ max(rocks.Ks) at parse time, ≥ the core K when the effects are categorised).

Pairing: the seed of (benchmark, problem, sample) is ``derive_seed(seed, "knockout", benchmark, problem, sample)``
in every arm, so an arm whose ban never bites reproduces the baseline sample exactly (HF backend; vLLM up to its
batch-invariance caveat). Per-(arm, problem, sample) correctness indicators are saved; Δ(v), Δ(W(v)) and the local
Δ are derived from them (:func:`effects`).

Arms are identified by their banned set (:func:`arm_key`): a window W(v) = {v} is the token arm itself and is
generated once; a local arm is ``local:<v>`` (its ban depends on v's contexts), or the baseline when no stored
context of v can ever match.

Census (:data:`CENSUSES`, :func:`tables`): Eq. 22's categories, the multiple testing and the sign tests are
reported **per policy** — token only first, then the global window, the local window — and for the two
"token or window" unions: ``token_or_window`` is **the paper's census** (Eq. 22 with the global window, Table 2),
``token_or_local`` the same with the local window. A pooled multiple-testing family counts an arm shared by two
policies (W(v) = {v}) once.
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
from rocktokens.generation.base import LocalBan
from rocktokens.core.io import read_json
from rocktokens.core.seeding import derive_seed
from rocktokens.core.stats import classify, paired_bootstrap
from rocktokens.rocks.windows import contexts_by_token, window_candidates

log = logging.getLogger("rocktokens.knockout.experiment")

#: The knockout policies, in report order (token only first).
POLICIES = ("token", "window", "local")
#: The censuses of Eq. 22: name → (the policies whose tests count, label). Each single policy, then the unions.
CENSUSES = {
    "token": (("token",), "token knockout only (Eq. 20)"),
    "window": (("window",), "global window knockout only (Eq. 21: W(v) banned at every step)"),
    "local": (("local",), "local window knockout only (W(v) banned inside v's stored contexts)"),
    "token_or_window": (("token", "window"), "token or global window (Eq. 22; the paper's census, Table 2)"),
    "token_or_local": (("token", "local"), "token or local window (Eq. 22 with the local window)"),
}
#: The census the paper reports (Table 2, the sign test of Appendix D.2).
PAPER_CENSUS = "token_or_window"
#: The multiple-testing family the paper reports (Appendix D.2: α/200, one token-knockout test per candidate).
PAPER_FAMILY = "token"
LOCAL_PREFIX = "local:"
#: A shard's per-(arm, benchmark, problem, sample) indicator table: column → dtype. ``n_ban_active``: decoding steps
#: at which a ban was in force (all of them for a token/window arm, those where the ban was active for a local one).
INDICATOR_COLUMNS = {"arm": "object", "benchmark": "object", "id": "object", "sample": "int64", "correct": "bool",
                     "n_tokens": "int64", "n_ban_active": "int64", "finish_reason": "object"}
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


def screen_candidates(stats: pd.DataFrame, k_screen: int, vocab_size: int) -> pd.DataFrame:
    """The screening pool R̃: the top ``k_screen`` types by R(v) (Eq. 4), ranked exactly as the rock sets.

    Columns: ``rank`` (1-based, by R), ``token_id``, ``qwen3_id``, ``token``, ``freq``, ``R``. When the corpus has
    fewer types than ``k_screen``, all are screened (logged). The core (:func:`mark_core`) is a statistic, marked
    after the generation: it never reaches the plan the shards read.
    """
    from rocktokens.rocks.sets import ranked

    if int(k_screen) < 1:
        raise KnockoutInputError(f"k_screen must be >= 1, got {k_screen}")
    df = ranked(stats)  # the rock score in force (token_stats.rock_score, rocks.score), as the rock sets
    if len(df) < k_screen:
        log.warning("only %d token types in the corpus: screening all of them (k_screen=%d)", len(df), k_screen)
    df = df.head(int(k_screen))
    check_ids_in_vocab(df["token_id"], vocab_size)
    cols = [c for c in ("rank", "token_id", "qwen3_id", "token", "freq", "R") if c in df.columns]
    return df[cols].reset_index(drop=True).copy()


def mark_core(candidates: pd.DataFrame, core_k: int) -> pd.DataFrame:
    """``in_core``: rank ≤ ``core_k``, the definitional K set of §2.2 (the "K=100 core" of Appendix D.2; the
    sign tests' core). The pool must contain it (the paper screens R̃ ⊃ R, FACTS.md mistake 6)."""
    if int(core_k) < 1:
        raise KnockoutInputError(f"core K must be >= 1, got {core_k}")
    check_k_screen(int(candidates["rank"].max()) if len(candidates) else 0, int(core_k), "the core")
    return candidates.assign(in_core=candidates["rank"] <= int(core_k))


def check_policies(policies: Iterable[str] | None = None) -> tuple[str, ...]:
    """The configured policies in report order (:data:`POLICIES`); None = all. The token knockout is required (Eq.
    20: Table 1, Figure 4 and every census start from it)."""
    if policies is None:
        return POLICIES
    policies = list(policies)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or len(set(policies)) != len(policies) or "token" not in policies:
        raise KnockoutInputError(f"knockout policies must be distinct entries of {list(POLICIES)} including 'token', "
                                 f"got {policies}")
    return tuple(p for p in POLICIES if p in policies)


def n_shards(k_screen: int, shard_size: int, policies: Iterable[str] | None = None) -> int:
    """Shard jobs per benchmark: the ``len(policies) · K_screen`` (candidate, policy) slots in blocks of
    ``shard_size`` (at paper scale ``shard_size: 1``: one knockout policy on one benchmark per GPU job)."""
    return max(1, math.ceil(len(check_policies(policies)) * int(k_screen) / int(shard_size)))


def shard_names(k_screen: int, shard_size: int, policies: Iterable[str] | None = None) -> list[str]:
    """The knockout shards (file targets, per benchmark) at parse time: ``s000``, ``s001``, ... (slot blocks)."""
    return [f"s{i:03d}" for i in range(n_shards(k_screen, shard_size, policies))]


def left_min_matches(gamma: float, w: int, similarity: str = "positional") -> int:
    """m_left: the least agreement k ∈ {0..w} of two left halves (w elements each) whose Eq. 8 similarity — the
    analysis's own ``similarity`` applied to w elements instead of 2w — reaches γ (``rocktokens.rocks.context.min_matches``
    for windows of w elements)."""
    from rocktokens.rocks.context import get_similarity

    spec = get_similarity(similarity)
    for k in range(int(w) + 1):
        if spec.sim_of_k(k, int(w)) >= gamma:
            return k
    raise KnockoutInputError(f"no agreement of {w} elements reaches similarity gamma={gamma}")


def local_ban(contexts: pd.DataFrame, v: int, banned: Sequence[int], context: Mapping) -> LocalBan | None:
    """The local window knockout of v: W(v)'s ids (``banned``) banned while decoding inside one of v's stored
    contexts (module docstring; the rule is :class:`rocktokens.generation.base.LocalBan`), with ``reach`` = w (the
    ban lasts from the recognised centre through v's right half).

    ``context``: the rock analysis's context parameters (``rocks/scores.json`` ``context_params``: ``w``, ``gamma``,
    ``similarity``, ``pad_policy``). The left halves (offsets −w … −1) of v's stored contexts are deduplicated;
    halves that can never match (fewer than m_left non-PAD ids under ``pad_policy="never"``) are dropped. None when
    no stored context of v can ever match: the arm is the baseline."""
    missing = [k for k in ("w", "gamma") if k not in context]
    if missing:
        raise KnockoutInputError(f"the context parameters lack {missing} (rocks/scores.json context_params)")
    rows = contexts[contexts["token_id"] == int(v)]
    if rows.empty:
        return None
    ctx = contexts_by_token(rows)[int(v)]
    w = ctx.shape[1] // 2
    if w != int(context["w"]):
        raise KnockoutInputError(f"windows table has radius {w}, the context parameters w={context['w']}")
    similarity, pad_policy = context.get("similarity", "positional"), context.get("pad_policy", "never")
    m = left_min_matches(float(context["gamma"]), w, similarity)
    left = np.unique(ctx[:, :w], axis=0)
    if pad_policy == "never":
        left = left[(left >= 0).sum(axis=1) >= m]
    if len(left) == 0:
        return None
    return LocalBan(ids=tuple(int(b) for b in banned), contexts=tuple(tuple(int(x) for x in r) for r in left),
                    min_matches=m, reach=w, similarity=similarity, pad_policy=pad_policy)


def plan(candidates: pd.DataFrame, contexts: pd.DataFrame, shard_size: int, min_share: float = 0.0,
         policies: Iterable[str] | None = None, context: Mapping | None = None) -> pd.DataFrame:
    """One row per (candidate, policy) slot, in rank order (policies in :data:`POLICIES` order, token first):
    ``shard`` (the slot's block of ``shard_size``), ``arm`` (:func:`arm_key` of the banned set, ``local:<v>`` for a
    local arm), ``banned`` (list of ids), ``n_banned``, ``local`` (the local ban as JSON, ``""`` for the others) and
    ``gen_shard``, the shard that generates the arm: the shard of its first slot, so an arm shared by several slots
    (a window W(v) = {v}, or two candidates with the same window) is generated once. Window and local arms ban
    :func:`rocktokens.rocks.windows.window_candidates`; the local arms need ``context`` (:func:`local_ban`)."""
    if int(shard_size) < 1:
        raise KnockoutInputError(f"shard_size must be >= 1, got {shard_size}")
    policies = check_policies(policies)
    if "local" in policies and context is None:
        raise KnockoutInputError("the local policy needs the context parameters (rocks/scores.json context_params)")
    pool = candidates["token_id"].astype(int).tolist()
    rows = []
    for v in pool:
        window = sorted(int(b) for b in window_candidates(contexts, v, pool, min_share)) \
            if {"window", "local"} & set(policies) else []
        for policy in policies:
            banned, spec = ([v] if policy == "token" else window), ""
            arm = arm_key(banned)
            if policy == "local":
                ban = local_ban(contexts, v, banned, context)
                if ban is None:
                    arm = ""  # no stored context can match: the ban never bites, the arm is the baseline
                elif ban.min_matches > 0:  # (m = 0: always active, the global window arm itself)
                    arm, spec = f"{LOCAL_PREFIX}{v}", json.dumps(ban.to_dict())
            rows.append({"token_id": v, "policy": policy, "shard": f"s{len(rows) // int(shard_size):03d}",
                         "arm": arm, "banned": banned, "n_banned": len(banned), "local": spec})
    df = pd.DataFrame(rows, columns=["token_id", "policy", "shard", "arm", "banned", "n_banned", "local"])
    df["gen_shard"] = df.groupby("arm", sort=False)["shard"].transform("first")
    df.loc[df["arm"] == "", "gen_shard"] = BASELINE_SHARD  # the baseline shard generates it
    return df


def arm_key(banned: Iterable[int]) -> str:
    """The identity of a token or window arm: its sorted banned ids joined by ``,`` (``""`` = the baseline)."""
    return ",".join(str(i) for i in sorted({int(b) for b in banned}))


def is_local(key: str) -> bool:
    return key.startswith(LOCAL_PREFIX)


def parse_arm(key: str) -> tuple[int, ...]:
    """The banned ids of a token or window arm (a local arm's ban is in the plan: :func:`local_bans`)."""
    if is_local(key):
        raise KnockoutInputError(f"arm {key!r} is a local arm: its ban is the plan's 'local' column (local_bans)")
    return tuple(int(x) for x in key.split(",")) if key else ()


def local_bans(plan_df: pd.DataFrame) -> dict[str, LocalBan]:
    """{arm: LocalBan} of the plan's local arms (what a shard needs besides the arm keys)."""
    rows = plan_df[plan_df["arm"].map(is_local)] if "local" in plan_df else plan_df.iloc[:0]
    return {a: LocalBan.from_dict(json.loads(spec)) for a, spec in zip(rows["arm"], rows["local"])}


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


def _arm_bans(arms: Sequence[str], local: Mapping[str, LocalBan] | None) -> dict[str, tuple]:
    """{arm: (static banned ids, local ban or None)}; a local arm missing from ``local`` is one clear error."""
    out = {}
    for arm in arms:
        if is_local(arm):
            if local is None or arm not in local:
                raise KnockoutInputError(f"local arm {arm!r} has no local ban (pass the plan's local_bans)")
            out[arm] = ((), local[arm])
        else:
            out[arm] = (parse_arm(arm), None)
    return out


def build_requests(prompt_ids: Mapping[str, Sequence[Sequence[int]]], problem_ids: Mapping[str, Sequence[str]],
                   arms: Sequence[str], m: int, seed: int, local: Mapping[str, LocalBan] | None = None
                   ) -> tuple[list[GenerationRequest], list[tuple]]:
    """Requests of every (benchmark, problem, arm, sample), problem-major so arms of one problem sit together.

    The seed depends on (benchmark, problem, sample) only — identical across arms (the pairing). ``local``: the
    local arms' bans (:func:`local_bans`)."""
    m = check_samples(m)
    bans = _arm_bans(arms, local)
    reqs, keys = [], []
    for bench, ids in problem_ids.items():
        for pid, pids in zip(ids, prompt_ids[bench]):
            for s in range(m):
                sd = derive_seed(seed, "knockout", bench, pid, s)
                for arm in arms:
                    banned, lb = bans[arm]
                    reqs.append(GenerationRequest(prompt_ids=tuple(pids), seed=sd, banned_ids=banned, local_ban=lb))
                    keys.append((arm, bench, pid, s))
    return reqs, keys


def ban_activity(request: GenerationRequest, token_ids: Sequence[int]) -> list[bool]:
    """For each generated token: was a ban of ``request`` in force at the step that chose it?"""
    if request.local_ban is not None:
        return request.local_ban.active_steps(token_ids)
    return [bool(request.banned_ids)] * len(token_ids)


def generate_arms(backend, tokenizer, benches: Mapping[str, pd.DataFrame], arms: Sequence[str], m: int,
                  params: SamplingParams, seed: int, local: Mapping[str, LocalBan] | None = None) -> pd.DataFrame:
    """Generate and score every arm on every benchmark in ONE ``backend.generate`` call (one mask per sequence).

    Returns one row per (arm, benchmark, problem, sample): ``correct``, ``n_tokens``, ``n_ban_active``,
    ``finish_reason``. Raises ``RuntimeError`` if a generated sequence holds one of its banned ids at a step where
    the ban was in force (never expected).
    """
    from rocktokens.core.prompts import encode_prompt
    from rocktokens.checking.checker import grade

    m = check_samples(m)
    for name, df in benches.items():
        check_benchmark(df, name)
    vocab = int(getattr(backend, "vocab_size"))
    bans = _arm_bans(arms, local)
    check_ids_in_vocab({i for ids, lb in bans.values() for i in (*ids, *(lb.ids if lb else ()))}, vocab, "banned")
    prompt_ids = {b: [encode_prompt(tokenizer, p) for p in df["prompt"]] for b, df in benches.items()}
    problem_ids = {b: df["id"].astype(str).tolist() for b, df in benches.items()}
    reqs, keys = build_requests(prompt_ids, problem_ids, arms, m, seed, local)
    results = backend.generate(reqs, params)
    meta = {b: df.assign(id=df["id"].astype(str)).set_index("id") for b, df in benches.items()}
    rows, n_timeouts = [], 0
    for (arm, bench, pid, s), q, r in zip(keys, reqs, results):
        active = ban_activity(q, r.token_ids)
        ids = set(q.banned_ids) | set(q.local_ban.ids if q.local_ban is not None else ())
        if any(a and t in ids for a, t in zip(active, r.token_ids)):
            raise RuntimeError(f"arm {arm!r}, {bench}/{pid} sample {s}: a banned id was generated")
        resp = tokenizer.decode(r.token_ids, skip_special_tokens=True)
        verdict = grade(resp, meta[bench].at[pid, "checker"], meta[bench].at[pid, "answer"])
        n_timeouts += bool(verdict.timed_out)
        rows.append({"arm": arm, "benchmark": bench, "id": pid, "sample": s, "correct": bool(verdict.correct),
                     "n_tokens": len(r.token_ids), "n_ban_active": int(sum(active)), "finish_reason": r.finish_reason})
    if n_timeouts:
        log.warning("%d of %d answer checks timed out (scored incorrect)", n_timeouts, len(rows))
    return pd.DataFrame(rows)


def run_shard(backend, tokenizer, benches: Mapping[str, pd.DataFrame], arms: Sequence[str], m: int,
              params: SamplingParams, seed: int, *, arms_per_chunk: int, state_dir=None, spec: dict | None = None,
              progress: bool = True, local: Mapping[str, LocalBan] | None = None) -> pd.DataFrame:
    """All arms of one shard, ``arms_per_chunk`` arms per generate call (each call mixes their masks); ``local``:
    the local arms' bans (:func:`local_bans`).

    With ``state_dir``, each finished chunk is saved there (``chunk-XXXX.parquet``) next to ``spec.json``; a rerun
    with the same ``spec`` (and the same arms and local bans) skips the saved chunks (a killed shard resumes), a
    different one starts afresh.
    """
    from tqdm.auto import tqdm

    from rocktokens.core.io import write_json, write_parquet

    if int(arms_per_chunk) < 1:
        raise KnockoutInputError(f"arms_per_chunk must be >= 1, got {arms_per_chunk}")
    chunks = [list(arms[i: i + int(arms_per_chunk)]) for i in range(0, len(arms), int(arms_per_chunk))]
    state = Path(state_dir) if state_dir is not None else None
    if state is not None:
        spec_path = state / "spec.json"
        full_spec = {"spec": spec or {}, "arms": list(arms), "arms_per_chunk": int(arms_per_chunk),
                     "local": {a: local[a].to_dict() for a in arms if is_local(a) and local and a in local}}
        if spec_path.exists() and read_json(spec_path) != json.loads(json.dumps(full_spec, default=str)):
            log.info("knockout state in %s is for other settings: starting afresh", state)
            for f in state.glob("chunk-*.parquet"):
                f.unlink()
        state.mkdir(parents=True, exist_ok=True)
        write_json(full_spec, spec_path, sort_keys=True)
    parts = []
    for i, chunk in enumerate(tqdm(chunks, desc="knockout arms", unit="chunk", disable=not progress)):
        path = state / f"chunk-{i:04d}.parquet" if state is not None else None
        if path is not None and path.exists():
            parts.append(pd.read_parquet(path))
            continue
        df = generate_arms(backend, tokenizer, benches, chunk, m, params, seed, local)
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
    """Δ(v) (Eq. 20), Δ(W(v)) (Eq. 21) and the local-window Δ with paired-bootstrap p-values, one row per
    (benchmark, candidate, policy): ``arm``, ``n_banned``, ``acc`` (knockout accuracy), ``baseline_acc``, ``delta``,
    ``p``, ``ci_lo``, ``ci_hi``, ``n_problems``, ``m``, ``n_resamples``, ``sd_diff`` (SD over problems of the paired
    differences), ``active_share`` (the share of the arm's decoding steps at which its ban was in force: 1 for a
    token or window arm, the local ban's reach for a local arm; NaN for indicators without ``n_ban_active``).

    ``indicators`` holds the baseline arm (``""``) and every arm of ``plan_df``; a benchmark's problems and m must
    be identical across arms (the pairing), else a clear error. A slot whose arm is the baseline (a local ban that
    can never match) gets Δ = 0, p = 1. The bootstrap resamples are shared by all arms of a benchmark (seeded by
    ``seed`` and the benchmark name).
    """
    dup = indicators.duplicated(["arm", "benchmark", "id", "sample"])
    if dup.any():
        first = indicators.loc[dup].iloc[0]
        raise KnockoutInputError(f"{int(dup.sum())} duplicated knockout indicator row(s), e.g. arm {first['arm']!r} "
                                 f"on {first['benchmark']}/{first['id']} sample {first['sample']}: shards overlap")
    pp = per_problem(indicators)
    if "n_ban_active" in indicators:
        act = indicators.groupby(["benchmark", "arm"], sort=False)[["n_ban_active", "n_tokens"]].sum()
        share = (act["n_ban_active"] / act["n_tokens"].where(act["n_tokens"] > 0)).rename("active_share")
    else:
        share = pd.Series(np.nan, index=pd.MultiIndex.from_tuples([], names=["benchmark", "arm"]), name="active_share")
    out = []
    for bench, g in pp.groupby("benchmark", sort=False):
        wide = g.pivot(index="id", columns="arm", values="acc")
        m_by_arm = g.groupby("arm")["m"].agg(["min", "max"])
        if "" not in wide.columns:
            raise KnockoutInputError(f"benchmark {bench!r}: no baseline indicators")
        arms = sorted(set(plan_df["arm"]))
        needed = [a for a in arms if a != ""]
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
        diffs = np.column_stack([sub[a].to_numpy() - base for a in arms])
        bs = paired_bootstrap(diffs, n_resamples, derive_seed(seed, "knockout-bootstrap", bench))
        bs.insert(0, "arm", arms)
        bs["acc"] = [float(sub[a].mean()) for a in arms]
        bs["baseline_acc"] = float(base.mean())
        bs["m"] = int(ms.to_numpy().max())
        bs["sd_diff"] = diffs.std(axis=0, ddof=1) if len(diffs) > 1 else np.nan
        bs["active_share"] = [share.get((bench, a), np.nan) if a else 0.0 for a in arms]
        rows = plan_df[["token_id", "policy", "arm", "n_banned"]].merge(bs, on="arm", how="left")
        rows.insert(0, "benchmark", bench)
        out.append(rows)
    cols = ["benchmark", "token_id", "policy", "arm", "n_banned", "acc", "baseline_acc", "delta", "p", "ci_lo",
            "ci_hi", "n_problems", "m", "n_resamples", "sd_diff", "active_share"]
    return pd.concat(out, ignore_index=True)[cols]


def power(eff: pd.DataFrame, alpha: float, effect: float = 0.10, power_: float = 0.80) -> pd.DataFrame:
    """Per benchmark and policy: the minimum detectable Δ of one knockout arm against the baseline (median SD of
    the per-problem differences over the arms, :func:`rocktokens.core.stats.minimum_detectable_effect`) and the problems
    this design (same m) needs so that ``effect`` is detectable with probability ``power_`` at level ``alpha``."""
    from rocktokens.core.stats import minimum_detectable_effect, problems_for_effect

    rows = []
    for (bench, policy), g in eff.groupby(["benchmark", "policy"], sort=False):
        sd, n = float(g["sd_diff"].median()), int(g["n_problems"].iloc[0])
        rows.append({"benchmark": bench, "policy": policy, "n_problems": n, "m": int(g["m"].iloc[0]),
                     "sd_diff": sd, "alpha": alpha, "power": power_,
                     "mde": float(minimum_detectable_effect(sd, n, alpha, power_)), "effect": effect,
                     "n_for_effect": problems_for_effect(sd, effect, alpha, power_) if sd > 0 else n})
    return pd.DataFrame(rows)


def censuses_of(policies: Iterable[str]) -> list[str]:
    """The censuses (:data:`CENSUSES`, in order) whose policies were all run."""
    have = set(policies)
    return [c for c, (pols, _) in CENSUSES.items() if set(pols) <= have]


def categorize(eff: pd.DataFrame, candidates: pd.DataFrame, eps: float, alpha: float) -> pd.DataFrame:
    """Eq. 22 per (benchmark, candidate): each policy's effect side by side (``delta_<policy>``, ``p_<policy>``,
    ``ci_lo_<policy>``, ``ci_hi_<policy>``, ``n_<policy>`` = |banned| for window and local) and one category per
    census (``category_<census>``, :data:`CENSUSES`: a single policy's test, or Eq. 22's "token or window" union).
    ``category`` is the paper's census (``token_or_window``; ``token`` when no window policy was run)."""
    policies = [p for p in POLICIES if (eff["policy"] == p).any()]
    if "token" not in policies:
        raise KnockoutInputError("the knockout effects hold no token policy (Eq. 20)")
    by = {p: eff[eff["policy"] == p].set_index(["benchmark", "token_id"]) for p in policies}
    t = by["token"]
    df = pd.DataFrame({"baseline_acc": t["baseline_acc"]})
    for p in policies:
        e = by[p]
        part = {f"delta_{p}": e["delta"], f"p_{p}": e["p"], f"ci_lo_{p}": e["ci_lo"], f"ci_hi_{p}": e["ci_hi"]}
        if p != "token":
            part[f"n_{p}"] = e["n_banned"]
        df = df.join(pd.DataFrame(part), how="left")
    nan = np.full(len(df), np.nan)
    for c in censuses_of(policies):
        pols = CENSUSES[c][0]
        first, second = pols[0], (pols[1] if len(pols) > 1 else None)
        df[f"category_{c}"] = classify(df[f"delta_{first}"], df[f"p_{first}"],
                                       df[f"delta_{second}"] if second else nan, df[f"p_{second}"] if second else nan,
                                       eps, alpha)
    df["category"] = df[f"category_{PAPER_CENSUS}" if "window" in policies else "category_token"]
    df = df.reset_index()
    cand = candidates[[c for c in ("token_id", "rank", "token", "in_core") if c in candidates.columns]]
    return df.merge(cand, on="token_id", how="left").sort_values(["benchmark", "rank"], kind="stable").reset_index(drop=True)


def multiple_testing(eff: pd.DataFrame, alpha: float, qs: Sequence[float]) -> pd.DataFrame:
    """Appendix D.2 per benchmark and family: the tests of each census (:data:`CENSUSES`: each policy alone, then
    the pooled "token or window" / "token or local" families), how many survive Bonferroni at α and
    Benjamini–Hochberg at each q (``rocktokens.core.stats``), the raw rejections p ≤ α, the smallest p and α/n.

    One test per distinct arm: an arm shared by two slots (W(v) = {v} is the token arm; two candidates with the same
    window) is one test, counted once in a family (``n_shared`` slots were merged so); a slot whose arm is the
    baseline (a local ban that never matches) is no test (``n_untestable``). ``paper`` marks the paper's family
    (token knockout, α/200)."""
    from rocktokens.core.stats import benjamini_hochberg, bonferroni

    policies = [p for p in POLICIES if (eff["policy"] == p).any()]
    rows = []
    for b, g in eff.groupby("benchmark", sort=False):
        for fam in censuses_of(policies):
            slots = g[g["policy"].isin(CENSUSES[fam][0])]
            tests = slots[slots["arm"] != ""].drop_duplicates("arm")
            p = tests["p"].to_numpy(float)
            row = {"benchmark": b, "family": fam, "label": CENSUSES[fam][1], "paper": fam == PAPER_FAMILY,
                   "n_tests": len(p), "n_shared": int((slots["arm"] != "").sum()) - len(p),
                   "n_untestable": int((slots["arm"] == "").sum()),
                   "min_p": float(p.min()) if len(p) else float("nan"), "raw_rejections": int((p <= alpha).sum()),
                   "bonferroni_threshold": alpha / max(len(p), 1),
                   "bonferroni_rejections": int(bonferroni(p, alpha).sum())}
            for q in qs:
                row[f"bh_q{q:g}_rejections"] = int(benjamini_hochberg(p, q).sum())
            rows.append(row)
    return pd.DataFrame(rows)


def _per_census(categories: pd.DataFrame, fn) -> pd.DataFrame:
    """``fn(categories with category = that census's)`` for every census present, stacked with ``census``,
    ``label`` and ``paper`` (the paper's census) in front, token only first."""
    parts = []
    for c in CENSUSES:
        if f"category_{c}" not in categories:
            continue
        t = fn(categories.assign(category=categories[f"category_{c}"]))
        t.insert(0, "paper", c == PAPER_CENSUS)
        t.insert(0, "label", CENSUSES[c][1])
        t.insert(0, "census", c)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------------------------- predictors
def predictors(stats_post: pd.DataFrame, stats_pre: pd.DataFrame, token_ids: Sequence[int]) -> pd.DataFrame:
    """Table 1's nine predictors (+ ``log10_frequency`` for Figure 6) of the screened candidates.

    ``stats_post``: the rock analysis's ``token_stats`` (post-OPD scorer: ``freq``, ``mean_loss``,
    ``mean_entropy_student``, ``mean_entropy_teacher``, ``n_consistent``); ``stats_pre``: the same DuckDB
    aggregation (``Aggregator.token_stats``, ``rocktokens/tokens/sql/token_stats.sql``) for the pre-OPD scorer on the same
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
def check_k_screen(k_screen: int, K: int, what: str) -> None:
    """The screening pool must contain the rock set R (the paper's R̃ ⊃ R, FACTS.md mistake 6): K_screen ≥ K."""
    if int(k_screen) < int(K):
        raise KnockoutInputError(f"config key 'knockout.k_screen': {k_screen} is below {what} K={K}, so the screened "
                                 f"pool would not contain the rock set R (the paper screens R̃ ⊃ R); raise it to >= {K}")


def check_knockout_config(config: dict) -> None:
    """Cross-field checks of the ``knockout`` section (the schema checks keys and types): its benchmarks must be
    prepared by the workflow (top-level ``benchmarks``), be distinct, K_screen must reach the largest K of
    ``rocks.Ks`` (any of them may be chosen), the core K must not exceed K_screen, and the policies must be known
    and include ``token``."""
    ko = config["knockout"]
    unknown = [b for b in ko["benchmarks"] if b not in config["benchmarks"]]
    if unknown:
        raise KnockoutInputError(f"config key 'knockout.benchmarks': {unknown} not in the top-level 'benchmarks' list")
    if len(set(ko["benchmarks"])) != len(ko["benchmarks"]):
        raise KnockoutInputError("config key 'knockout.benchmarks': duplicate benchmark")
    if config.get("rocks", {}).get("Ks"):
        check_k_screen(ko["k_screen"], max(config["rocks"]["Ks"]), "the largest rock set size in rocks.Ks,")
    if ko.get("core_K") is not None and ko["core_K"] > ko["k_screen"]:
        raise KnockoutInputError(f"config key 'knockout.core_K': {ko['core_K']} exceeds k_screen {ko['k_screen']}")
    check_policies(ko.get("policies"))
    check_samples(ko["samples"])


# ----------------------------------------------------------------------------------------------- rule bodies
def make_plan(stats: pd.DataFrame, contexts: pd.DataFrame, scores: dict, *, k_screen: int, shard_size: int,
              window_min_share: float = 0.0, policies: Iterable[str] | None = None, vocab_size: int):
    """Rule knockout_plan: (candidates with their shard and window size, the (candidate, policy) → arm plan).

    It reads the rock scores only (not which K is chosen): the pool is the top K_screen by the score in force. The
    local policy's matching uses the rock analysis's own context parameters (``scores["context_params"]``,
    ``rocks/scores.json``: w, γ, similarity, PAD policy).
    """
    policies = check_policies(policies)
    cands = screen_candidates(stats, k_screen, vocab_size)
    p = plan(cands, contexts, shard_size, window_min_share, policies,
             scores.get("context_params") if "local" in policies else None)
    tok = p[p["policy"] == "token"][["token_id", "shard"]]
    cands = cands.merge(tok, on="token_id")
    if "window" in policies or "local" in policies:
        win = p[p["policy"] == ("window" if "window" in policies else "local")][["token_id", "n_banned"]]
        cands = cands.merge(win.rename(columns={"n_banned": "window_size"}), on="token_id")
    if "local" in policies:
        loc = p[p["policy"] == "local"]
        n_ctx = loc["local"].map(lambda sp: len(json.loads(sp)["contexts"]) if sp else 0)
        cands = cands.merge(pd.DataFrame({"token_id": loc["token_id"], "local_contexts": n_ctx.to_numpy()}),
                            on="token_id")
    log.info("screening %d candidates under %s in %d shard(s); %d distinct arms%s", len(cands),
             "/".join(policies), p["shard"].nunique(), p["arm"].nunique(),
             f"; mean |W(v)| = {cands['window_size'].mean():.1f}" if "window_size" in cands else "")
    return cands, p


def tables(categories: pd.DataFrame, eff: pd.DataFrame, preds: pd.DataFrame, candidates: pd.DataFrame, *,
           benchmarks: Sequence[str], alpha: float, fdr_q: Sequence[float]) -> dict[str, pd.DataFrame]:
    """Rule knockout_tables: Table 1 (token Δ), and per census (:data:`CENSUSES`, token only first; ``paper`` marks
    the paper's) Table 2 with the cross-task agreement and the sign tests; the multiple testing per family
    (:func:`multiple_testing`); the design's power per policy (:func:`power`)."""
    from rocktokens.core.stats import census, correlation_table, cross_task_agreement, sign_tests

    benches = list(benchmarks)
    deltas = categories[["benchmark", "token_id", "delta_token"]].rename(columns={"delta_token": "delta"})
    baseline = categories.groupby("benchmark")["baseline_acc"].first().to_dict()
    core = sorted(set(categories.loc[categories["in_core"].astype(bool), "token_id"].astype(int)))
    return {
        "table1": correlation_table(deltas, preds, PREDICTORS, benches),
        "table2": _per_census(categories, lambda c: census(c, baseline, benches)),
        "agreement": _per_census(categories, lambda c: cross_task_agreement(c, benches)),
        "multiple_testing": multiple_testing(eff, alpha, fdr_q),
        "sign_test": _per_census(categories, lambda c: sign_tests(c, core, benches)),
        "power": power(eff, alpha),
    }
