"""Rock tokens from per-token statistics: the top-K set, functional clusters, frequency-matched controls,
selection stability under independent resampling (Appendix E) and the choice of the cutoff K (§2.4).

Everything here works on small pandas frames of *token types* (one row per token): the per-occurrence work
(losses, densities, the per-problem aggregation) happens in SQL elsewhere. The stability sweep takes that
aggregation as an injected callable ``stats_for_problems(problem_ids) -> token_stats``.

Conventions
-----------
* ``token_stats`` has columns token_id, qwen3_id, token, freq, mean_loss, R (= mean_loss · freq, Eq. 4) and,
  optionally, CCR and R_ctx from the context-consistency step. Missing CCR / R_ctx read as NaN.
* Ranking (:func:`ranked`, THE order of the study): the rock score in force descending, ties broken by
  token_id ascending. The score is ``rocks.score`` (:data:`ROCK_SCORES`): ``R`` (Eq. 4, the ranking of
  Appendix E and of every number the paper reports; the default) or ``R_ctx`` (Eq. 13, the context-consistent
  score of §2.2). The rock analysis writes it into ``token_stats.parquet`` as the column ``rock_score``
  (:func:`with_rock_score`), so every reader of that file — the figures, the knockout screen — ranks by the
  same score without being told which (:func:`score_column`): one R for the rock sets frozen in training and
  the candidates screened by knockout (FACTS, mistake 6). The same order is used for the rock set, the
  coverage curve and every resample of the stability sweep, so a top-K is a pure function of the frame.
* Corpus-level KL is Σ_v R(v) (R(v) is the total loss carried by v, Eq. 3), so coverage(K) = Σ_{top-K} R / Σ_all R,
  the top-K taken under the ranking score (for ``R_ctx``: the share of the KL carried by the R_ctx top-K).
"""
from __future__ import annotations

import logging
import math
import re
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("rocktokens.rocks.sets")

CLUSTERS = ("latex_math", "markdown_whitespace", "discourse", "digits", "other")

# Sentence-initial discourse markers. The first nine are the paper's (Appendix B); the rest are the other
# common step-openers of math reasoning traces. Case-sensitive: a lower-case " so" mid-clause is not one.
DISCOURSE_MARKERS = (
    "So", "Let", "We", "But", "Now", "Wait", "Then", "Since", "This",
    "Therefore", "Thus", "Hence", "However", "First", "Next", "Finally", "Also", "Alternatively",
    "Actually", "Hmm", "Okay", "Note", "Here", "Because",
)
# LaTeX command names that byte-level BPE can split off their backslash (the paper lists "frac").
LATEX_WORDS = frozenset({
    "frac", "dfrac", "tfrac", "sqrt", "boxed", "times", "cdot", "cdots", "ldots", "left", "right", "text",
    "textbf", "mathrm", "mathbf", "mathbb", "mathcal", "operatorname", "binom", "infty", "quad", "qquad",
    "pmatrix", "bmatrix", "implies", "Rightarrow", "rightarrow", "approx", "equiv", "pmod", "neq", "leq",
    "geq", "overline", "lfloor", "rfloor", "lceil", "rceil",
})
_MATH_CHARS = frozenset("=^_{}()[]+-/<>|~")
_PROSE_PUNCT = frozenset(".,;:!?")
_RE_DIGITS = re.compile(r"\s?\d+")
_RE_DISCOURSE = re.compile(r"[ \t]?(?:%s)" % "|".join(DISCOURSE_MARKERS))
_RE_MARKDOWN = re.compile(r"\*{1,3}|#{1,6}|-{3,}|_{3,}|={3,}|`{1,3}")


def functional_cluster(token: str) -> str:
    """The functional cluster of a decoded token string (Appendix B). Rules, first match wins:

    1. empty → "other"; only whitespace (spaces, tabs, newlines, e.g. "\\n", "\\n\\n", "   ") → "markdown_whitespace";
    2. only digits with at most one leading whitespace ("5", " 1") → "digits";
    3. a discourse marker of :data:`DISCOURSE_MARKERS` with an optional leading space ("So", " So") → "discourse";
    4. the stripped body contains "$" or a backslash (" $", "$$", "\\\\", "\\\\(", "\\\\frac", "$\\n\\n") → "latex_math";
    5. the token contains a newline (punctuation ending a line, ":\\n\\n", ".\\n\\n", "---\\n\\n") → "markdown_whitespace";
    6. the body is markdown markup ("**", "###", "---", "```", or contains "**" as in ":**") → "markdown_whitespace";
    7. the body is math operators/brackets ("=", " =", "^", "{", "}", "(", ")", "}{", "^{"; trailing prose
       punctuation allowed, ")." ) or a LaTeX command name split off its backslash, without a leading space
       ("frac", "sqrt"; but " right" is a word) → "latex_math";
    8. otherwise → "other" (content words, prose punctuation, single letters).

    A single "-" counts as a minus sign (latex_math); a single "*" as markdown emphasis/bullet.
    """
    if not isinstance(token, str) or token == "":
        return "other"
    if token.strip() == "":
        return "markdown_whitespace"
    if _RE_DIGITS.fullmatch(token):
        return "digits"
    if _RE_DISCOURSE.fullmatch(token):
        return "discourse"
    body = token.strip()
    if "$" in body or "\\" in body:
        return "latex_math"
    if "\n" in token or "\r" in token:
        return "markdown_whitespace"
    if _RE_MARKDOWN.fullmatch(body) or "**" in body:
        return "markdown_whitespace"
    core = body.rstrip("".join(_PROSE_PUNCT))
    if core and all(c in _MATH_CHARS for c in core):
        return "latex_math"
    if token in LATEX_WORDS:  # split off its backslash: no leading space (" right" is a word)
        return "latex_math"
    return "other"


# ----------------------------------------------------------------------------------------------- ranking

REQUIRED = ("token_id", "token", "freq", "mean_loss", "R")
ROCK_COLUMNS = ["token_id", "qwen3_id", "token", "freq", "mean_loss", "R", "CCR", "R_ctx", "rank", "cluster"]
#: ``rocks.score``: R (Eq. 4; Appendix E, the paper's ranking) or R_ctx (Eq. 13; R · CCR, context-consistent).
ROCK_SCORES = ("R", "R_ctx")
#: The column of ``token_stats.parquet`` holding the rock score in force (written by :func:`with_rock_score`).
SCORE_COLUMN = "rock_score"


def score_column(token_stats: pd.DataFrame, score: str | None = None) -> str:
    """The column the rock ranking sorts by: ``score`` when given (a name of :data:`ROCK_SCORES`, or
    :data:`SCORE_COLUMN`); otherwise :data:`SCORE_COLUMN` when the frame carries it (the rock analysis's
    ``token_stats.parquet``, where it holds ``rocks.score``), else ``R`` (Eq. 4: frames straight from the
    aggregator, which know no other score)."""
    if score is None:
        return SCORE_COLUMN if SCORE_COLUMN in token_stats.columns else "R"
    if score not in (*ROCK_SCORES, SCORE_COLUMN):
        raise ValueError(f"rock score {score!r} not in {ROCK_SCORES}")
    return score


def with_rock_score(token_stats: pd.DataFrame, score: str) -> pd.DataFrame:
    """``token_stats`` with :data:`SCORE_COLUMN` = the ``score`` column (``rocks.score``: R or R_ctx), ranked
    under it (:func:`ranked`: ``rank`` 1-based, rows in rock order). What the rock analysis writes, so that
    every later reader ranks by the score in force."""
    if score not in ROCK_SCORES:
        raise ValueError(f"rocks.score {score!r} not in {ROCK_SCORES}")
    _check_stats(token_stats, score=score)
    return ranked(token_stats.assign(**{SCORE_COLUMN: token_stats[score].to_numpy(dtype=float)}), SCORE_COLUMN)


def _check_stats(token_stats: pd.DataFrame, what: str = "token_stats", score: str = "R",
                 required: Sequence[str] = REQUIRED) -> None:
    if not isinstance(token_stats, pd.DataFrame):
        raise TypeError(f"{what} must be a pandas DataFrame, got {type(token_stats).__name__}")
    missing = [c for c in dict.fromkeys((*required, score)) if c not in token_stats.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {list(token_stats.columns)}")
    if token_stats["token_id"].duplicated().any():
        dup = token_stats.loc[token_stats["token_id"].duplicated(), "token_id"].head(5).tolist()
        raise ValueError(f"{what} has duplicated token_id(s), e.g. {dup}: one row per token type expected")
    if token_stats[score].isna().any():
        raise ValueError(f"{what} has NaN in column {score!r}")


def ranked(token_stats: pd.DataFrame, score: str | None = None) -> pd.DataFrame:
    """All token types in rock order: by the rock score (:func:`score_column`: ``score``, else the frame's
    recorded ``rock_score``, else R) descending, ties by token_id ascending; ``rank`` is 1-based. The one
    ranking of the rock sets, the coverage curve and the knockout screen."""
    score = score_column(token_stats, score)
    _check_stats(token_stats, score=score)
    df = token_stats.sort_values([score, "token_id"], ascending=[False, True], kind="mergesort")
    df = df.reset_index(drop=True)
    df["rank"] = np.arange(1, len(df) + 1)
    return df


def top_k_ids(token_stats: pd.DataFrame, K: int, score: str | None = None) -> list[int]:
    """token_ids of the top-K in the order of :func:`ranked` (all of them when fewer than K types were
    observed — used on sub-corpora)."""
    if len(token_stats) == 0:
        return []
    score = score_column(token_stats, score)
    idx = np.lexsort((token_stats["token_id"].to_numpy(), -token_stats[score].to_numpy(dtype=float)))
    return token_stats["token_id"].to_numpy()[idx[:K]].tolist()


def _check_K(K, n_types: int) -> int:
    if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 1:
        raise ValueError(f"K must be a positive integer, got {K!r}")
    if K > n_types:
        raise ValueError(f"K={K} exceeds the {n_types} token types observed")
    return int(K)


def rock_set(token_stats: pd.DataFrame, K: int, score: str | None = None) -> pd.DataFrame:
    """The top-K rock tokens in the order of :func:`ranked` (the recorded rock score, else R, Eq. 4), ties by
    token_id, with their cluster.

    Columns: token_id, qwen3_id, token, freq, mean_loss, R, CCR, R_ctx, rank, cluster. CCR and R_ctx are NaN
    when the context-consistency step did not run (R_ctx is R·CCR, Eq. 13, when only CCR is given).
    """
    df = ranked(token_stats, score=score)
    K = _check_K(K, len(df))
    df = df.head(K).copy()
    if "qwen3_id" not in df.columns:
        df["qwen3_id"] = pd.NA
    if "CCR" not in df.columns:
        df["CCR"] = np.nan
    if "R_ctx" not in df.columns:
        df["R_ctx"] = df["R"] * df["CCR"]
    df["cluster"] = [functional_cluster(t) for t in df["token"]]
    return df[ROCK_COLUMNS].reset_index(drop=True)


def cluster_counts(rocks: pd.DataFrame) -> pd.DataFrame:
    """Tokens and occurrences per functional cluster (all five clusters listed, zeros included)."""
    g = rocks.groupby("cluster").agg(n_tokens=("token_id", "size"), occurrences=("freq", "sum"))
    g = g.reindex(list(CLUSTERS), fill_value=0).rename_axis("cluster").reset_index()
    g["share_tokens"] = g["n_tokens"] / max(len(rocks), 1)
    return g


# ---------------------------------------------------------------------------------------------- coverage

def coverage_curve(token_stats: pd.DataFrame, score: str | None = None) -> pd.DataFrame:
    """Cumulative share of the corpus-level KL (Σ_v R(v), Eq. 3) held by the top-K, for K = 1 … number of
    types, the top-K taken in the order of :func:`ranked` (under R_ctx: the KL share of the R_ctx top-K).

    Columns: K, token_id, R, cum_R, coverage. The sums run left to right, so coverage never steps down while
    every R ≥ 0, and the last row is exactly 1.
    """
    df = ranked(token_stats, score=score)
    cum = np.cumsum(df["R"].to_numpy(dtype=float))
    total = float(cum[-1]) if cum.size else 0.0
    if not total > 0:
        raise ValueError(f"total R is {total}: coverage is undefined")
    return pd.DataFrame({"K": df["rank"].to_numpy(), "token_id": df["token_id"].to_numpy(),
                         "R": df["R"].to_numpy(dtype=float), "cum_R": cum, "coverage": cum / total})


def coverage_at(coverage_df: pd.DataFrame, K: int) -> float:
    """coverage(K) from a :func:`coverage_curve` frame (columns K, coverage)."""
    for c in ("K", "coverage"):
        if c not in coverage_df.columns:
            raise ValueError(f"coverage frame lacks column {c!r}")
    hit = coverage_df.loc[coverage_df["K"] == K, "coverage"]
    if hit.empty:
        kmax = int(coverage_df["K"].max()) if len(coverage_df) else 0
        raise ValueError(f"coverage is not tabulated at K={K} (K runs up to {kmax})")
    return float(hit.iloc[0])


# ---------------------------------------------------------------------------------------------- controls

def frequency_matched_controls(token_stats: pd.DataFrame, rocks: pd.DataFrame, seed: int, tol: float = 0.10,
                               tie_rel: float = 0.01, exclude: Iterable[int] = (), strict: bool = True) -> pd.DataFrame:
    """One control token per rock, drawn without replacement from the non-rock tokens, matched on occurrence
    count, with the control set's total occurrences within ±``tol`` of the rock set's (FACTS, mistake 3).

    Matching, with d = log(f_control / f_rock) for a pair:

    1. Nearest-frequency matching. Rocks are taken in order of decreasing frequency (ties by token_id); each
       takes the unused non-rock token minimising the asymmetric cost ``(1+λ)|d|`` (d ≤ 0) / ``(1-λ)d`` (d > 0),
       drawn uniformly (``seed``) among the unused tokens whose cost is within log(1+``tie_rel``) of the best
       ("near ties"). λ = 0 is plain nearest-frequency matching; λ ≷ 0 settles close calls upward/downward,
       which moves the total. λ is swept over a fixed grid; of the runs with total ratio within ±tol, the one
       with the smallest mean d² is kept (ties: smallest |λ|).
    2. Repair, only if no λ meets the tolerance: starting from the run closest to it, controls are swapped one
       at a time for unused non-rock tokens, each time the swap with the least increase of Σd² per occurrence
       of gap closed (d² is convex, so the gap is spread over many pairs rather than dumped on one), until the
       total is within tolerance.
    3. If the vocabulary cannot reach the tolerance (checked up front: even the K most frequent non-rocks are
       too rare, or the K rarest too frequent), or the repair stalls, ValueError states the ratio achieved —
       unless ``strict`` is False: then the closest achievable set is returned (the K most / least frequent
       non-rocks, paired in frequency order), flagged ``within_tol = False`` with its ratio, and a warning is
       logged. (When the rocks are the most frequent token types, no one-per-rock control set can carry as
       many occurrences.)

    Columns ``total_ratio`` and ``within_tol`` repeat the set-level outcome on every row.

    Returns one row per rock (by decreasing rock frequency): rock_token_id, rock_qwen3_id, rock_token,
    rock_freq, control_token_id, control_qwen3_id, control_token, control_freq, log_freq_ratio.
    ``attrs``: total_ratio, lam, repaired_swaps, median_abs_log_ratio, seed, tol.
    """
    _check_stats(token_stats)
    if len(rocks) == 0:
        raise ValueError("rocks is empty: nothing to match")
    if not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol}")
    stats = token_stats.set_index(token_stats["token_id"].to_numpy())
    missing = set(rocks["token_id"]) - set(stats.index)
    if missing:
        raise ValueError(f"{len(missing)} rock token_id(s) are not in token_stats, e.g. {sorted(missing)[:5]}")
    rock_ids = set(int(t) for t in rocks["token_id"])
    banned = rock_ids | set(int(t) for t in exclude)
    pool = token_stats[~token_stats["token_id"].isin(banned) & (token_stats["freq"] > 0)]
    K = len(rock_ids)
    if len(pool) < K:
        raise ValueError(f"only {len(pool)} non-rock token types for {K} rocks: cannot draw one control per rock")

    rk = stats.loc[sorted(rock_ids)]
    rk = rk.sort_values(["freq", "token_id"], ascending=[False, True], kind="mergesort")
    r_freq = rk["freq"].to_numpy(dtype=float)
    if (r_freq <= 0).any():
        raise ValueError("rock tokens with freq <= 0 cannot be frequency-matched")
    pool = pool.sort_values(["freq", "token_id"], kind="mergesort")
    p_freq = pool["freq"].to_numpy(dtype=float)
    rock_total = r_freq.sum()
    lo_tot, hi_tot = (1 - tol) * rock_total, (1 + tol) * rock_total

    def fail(ratio, how):
        raise ValueError(
            f"cannot frequency-match {K} controls within ±{tol:.0%} of the rocks' {int(rock_total)} occurrences "
            f"from {len(pool)} non-rock token types: {how} total ratio achieved is {ratio:.3f}")

    top, bottom = p_freq[-K:].sum(), p_freq[:K].sum()
    logr, logp = np.log(r_freq), np.log(p_freq)
    extreme = None
    if top < lo_tot:
        if strict:
            fail(top / rock_total, "even the most frequent non-rocks fall short: the largest possible")
        extreme = np.arange(len(p_freq) - 1, len(p_freq) - 1 - K, -1)  # most frequent, paired by rank
    elif bottom > hi_tot:
        if strict:
            fail(bottom / rock_total, "even the rarest non-rocks are too frequent: the smallest possible")
        extreme = np.arange(K - 1, -1, -1)
    if extreme is not None:
        log.warning("controls: ±%.0f%% is unreachable from this vocabulary; using the closest set, total ratio %.3f",
                    100 * tol, p_freq[extreme].sum() / rock_total)
        return _controls_frame(rk, pool.iloc[extreme], logp[extreme] - logr, p_freq[extreme].sum() / rock_total,
                               False, lam=float("nan"), swaps=0, seed=seed, tol=tol)

    runs = []  # (cost, |λ|, λ, picks, total)
    for lam in _LAMBDA_GRID:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 7919, int(round(lam * 1000)) + 1000]))
        picks = _greedy_match(r_freq, p_freq, lam, math.log1p(tie_rel), rng)
        runs.append((float(np.mean((logp[picks] - logr) ** 2)), abs(lam), lam, picks, p_freq[picks].sum()))
    ok = [r for r in runs if lo_tot <= r[4] <= hi_tot]
    swaps = 0
    if ok:
        _, _, lam, picks, total = min(ok, key=lambda r: r[:2])
    else:
        _, _, lam, picks, total = min(runs, key=lambda r: (_dist(r[4], lo_tot, hi_tot), r[1]))
        picks, total, swaps = _repair(logr, p_freq, picks.copy(), rock_total, lo_tot, hi_tot, max_iter=50 * K + 100)
        if not lo_tot <= total <= hi_tot:
            fail(total / rock_total, "the repair stalled; the closest")
        log.warning("controls: nearest-frequency matching missed ±%.0f%%; %d swaps brought the total ratio to %.3f",
                    100 * tol, swaps, total / rock_total)
    return _controls_frame(rk, pool.iloc[picks], logp[picks] - logr, float(total / rock_total), True,
                           lam=float(lam), swaps=swaps, seed=seed, tol=tol)


def _controls_frame(rk: pd.DataFrame, ctrl: pd.DataFrame, log_ratio: np.ndarray, ratio: float, within: bool, *,
                    lam: float, swaps: int, seed: int, tol: float) -> pd.DataFrame:
    """The rock → control pairs as one frame (see :func:`frequency_matched_controls`)."""
    out = pd.DataFrame({
        "rock_token_id": rk["token_id"].to_numpy(),
        "rock_qwen3_id": rk["qwen3_id"].to_numpy() if "qwen3_id" in rk else pd.NA,
        "rock_token": rk["token"].to_numpy(),
        "rock_freq": rk["freq"].to_numpy(),
        "control_token_id": ctrl["token_id"].to_numpy(),
        "control_qwen3_id": ctrl["qwen3_id"].to_numpy() if "qwen3_id" in ctrl else pd.NA,
        "control_token": ctrl["token"].to_numpy(),
        "control_freq": ctrl["freq"].to_numpy(),
    })
    out["log_freq_ratio"] = log_ratio
    out["total_ratio"] = float(ratio)
    out["within_tol"] = bool(within)
    med = float(np.median(np.abs(out["log_freq_ratio"])))
    out.attrs.update(total_ratio=float(ratio), lam=float(lam), repaired_swaps=int(swaps), median_abs_log_ratio=med,
                     seed=int(seed), tol=float(tol))
    log.info("controls: %d pairs, total occurrences ratio %.3f (λ=%+.2f, %d repair swaps), median |log f ratio| %.3f",
             len(out), ratio, lam, swaps, med)
    return out


def _dist(total: float, lo: float, hi: float) -> float:
    return max(lo - total, total - hi, 0.0)


def _repair(logr: np.ndarray, p_freq: np.ndarray, picks: np.ndarray, target: float, lo: float, hi: float,
            max_iter: int) -> tuple[np.ndarray, float, int]:
    """Swap controls for unused pool tokens until the total lies in [lo, hi] (see frequency_matched_controls)."""
    n = len(p_freq)
    used = np.zeros(n, dtype=bool)
    used[picks] = True
    logp = np.log(p_freq)
    total = float(p_freq[picks].sum())
    swaps = 0
    for _ in range(max_iter):
        gap = _dist(total, lo, hi)
        if gap == 0:
            break
        up = total < lo
        best = None  # (score, i, c)
        for i, cur in enumerate(picks):
            options = []
            # the next unused token in the needed direction (smallest step) …
            c = cur + (1 if up else -1)
            while 0 <= c < n and used[c]:
                c += 1 if up else -1
            if 0 <= c < n:
                options.append(c)
            # … and the unused token that would alone bring the total to the rocks' total
            want = p_freq[cur] + (target - total)
            if want > 0:
                c = int(np.searchsorted(p_freq, want))
                for start, step in ((c, 1), (c - 1, -1)):
                    j = start
                    while 0 <= j < n and used[j]:
                        j += step
                    if 0 <= j < n:
                        options.append(j)
            d_old = (logp[cur] - logr[i]) ** 2
            for c in options:
                new_total = total - p_freq[cur] + p_freq[c]
                closed = gap - _dist(new_total, lo, hi)
                if closed <= 0:
                    continue
                score = ((logp[c] - logr[i]) ** 2 - d_old) / closed
                if best is None or score < best[0]:
                    best = (score, i, c)
        if best is None:
            break
        _, i, c = best
        used[picks[i]] = False
        used[c] = True
        total += p_freq[c] - p_freq[picks[i]]
        picks[i] = c
        swaps += 1
    return picks, total, swaps


_LAMBDA_GRID = tuple(sorted({0.0, *[s * x for x in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
                                      for s in (1, -1)]}, key=lambda v: (abs(v), v)))


def _greedy_match(r_freq: np.ndarray, p_freq: np.ndarray, lam: float, tie_log: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Indices into the ascending ``p_freq`` chosen for each rock (see :func:`frequency_matched_controls`)."""
    used = np.zeros(len(p_freq), dtype=bool)
    logp = np.log(p_freq)
    picks = np.empty(len(r_freq), dtype=np.int64)
    for i, f in enumerate(r_freq):
        lf = math.log(f)
        j = int(np.searchsorted(p_freq, f, side="right")) - 1  # last index with p <= f
        while j >= 0 and used[j]:
            j -= 1
        k = j + 1  # first index with p > f
        while k < len(p_freq) and used[k]:
            k += 1
        cands = []
        if j >= 0:
            cands.append((1 + lam) * (lf - logp[j]))
        if k < len(p_freq):
            cands.append((1 - lam) * (logp[k] - lf))
        bound = min(cands) + tie_log
        lo = lf - bound / (1 + lam)
        hi = lf + bound / (1 - lam)
        a = int(np.searchsorted(logp, lo - 1e-12, side="left"))
        b = int(np.searchsorted(logp, hi + 1e-12, side="right"))
        band = np.flatnonzero(~used[a:b]) + a
        pick = int(band[rng.integers(len(band))])
        used[pick] = True
        picks[i] = pick
    return picks


# --------------------------------------------------------------------------------------------- stability

def jaccard(a: Iterable, b: Iterable) -> float:
    """|A ∩ B| / |A ∪ B|; two empty sets count as identical (1.0)."""
    a, b = set(a), set(b)
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def stability(stats_for_problems: Callable[[Sequence], pd.DataFrame], all_problem_ids: Sequence, Ks: Sequence[int],
              ns: Sequence[int] = (50, 100, 200, 300, 400), B: int = 20, seed: int = 0,
              score: str = "R") -> pd.DataFrame:
    """Selection stability of the top-K (Appendix E) with INDEPENDENT resamples (FACTS, mistake 4).

    For each n and each b < B, a fresh subset of n problems is drawn without replacement from all problems, with
    its own generator seeded by (seed, n, b) — so resamples are independent across b and across n (never
    nested prefixes of one shuffle) and a given (seed, n, b) always gives the same subset whatever else is
    swept. The top-K of ``stats_for_problems(subset)`` is compared (Jaccard) with the top-K on all problems.
    n larger than the number of problems is dropped with a warning.

    ``stats_for_problems`` needs to return only token_id and the ``score`` column (e.g. the aggregator's
    ``extras=False`` frame). Returns a long frame with columns n, K, b, jaccard (sorted by n, K, b).
    """
    ids = list(all_problem_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("all_problem_ids has duplicates")
    if not ids:
        raise ValueError("all_problem_ids is empty")
    try:
        ids = sorted(ids)  # the caller's order (e.g. from SQL) must not change the draws
    except TypeError:
        ids = sorted(ids, key=str)
    N = len(ids)
    if B < 1:
        raise ValueError(f"B must be >= 1, got {B}")
    Ks = sorted({int(k) for k in Ks})
    keep = sorted({int(n) for n in ns if 0 < int(n) <= N})
    dropped = sorted({int(n) for n in ns} - set(keep))
    if dropped:
        log.warning("stability: dropping n=%s (only %d problems available)", dropped, N)
    if not keep:
        raise ValueError(f"no subset size in ns={list(ns)} fits the {N} problems available")
    ref = stats_for_problems(list(ids))
    _check_stats(ref, "stats_for_problems(all problems)", score=score, required=("token_id",))
    for K in Ks:
        _check_K(K, len(ref))
    ref_top = {K: set(top_k_ids(ref, K, score)) for K in Ks}
    arr = np.array(ids, dtype=object)
    rows = []
    for n in keep:
        for b in range(B):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 104729, n, b]))
            subset = arr[np.sort(rng.choice(N, size=n, replace=False))].tolist()
            sub = stats_for_problems(subset)
            for K in Ks:
                rows.append((n, K, b, jaccard(top_k_ids(sub, K, score), ref_top[K])))
    return pd.DataFrame(rows, columns=["n", "K", "b", "jaccard"])


def stability_summary(stab: pd.DataFrame) -> pd.DataFrame:
    """Per (K, n): mean Jaccard, 2.5/97.5 % percentile interval over the B resamples, B; plus
    ``jaccard_avg`` = the mean over n of the per-n means for that K (the paper's "average" curve), repeated on
    every row of the K. Columns: K, n, jaccard_mean, jaccard_lo, jaccard_hi, B, jaccard_avg."""
    for c in ("n", "K", "b", "jaccard"):
        if c not in stab.columns:
            raise ValueError(f"stability frame lacks column {c!r}")
    if stab.empty:
        raise ValueError("stability frame is empty")
    g = stab.groupby(["K", "n"])["jaccard"]
    out = pd.DataFrame({
        "jaccard_mean": g.mean(),
        "jaccard_lo": g.quantile(0.025),
        "jaccard_hi": g.quantile(0.975),
        "B": g.size(),
    }).reset_index()
    out["jaccard_avg"] = out.groupby("K")["jaccard_mean"].transform("mean")
    return out.sort_values(["K", "n"]).reset_index(drop=True)


def stability_by_K(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per K: jaccard_avg (mean over n) and the worst per-n mean (jaccard_min_n)."""
    g = summary.groupby("K")
    return pd.DataFrame({"jaccard_avg": g["jaccard_mean"].mean(), "jaccard_min_n": g["jaccard_mean"].min(),
                         "ns": g["n"].apply(lambda s: sorted(int(x) for x in s))}).reset_index()


CHOOSE_K_RULE = ("K = the largest candidate whose average Jaccard (mean over subset sizes n of the mean over "
                 "independent resamples of J(top-K on n problems, top-K on all problems)) is >= min_jaccard; "
                 "coverage(K) = share of the corpus KL held by the top-K is reported alongside.")


def choose_K(summary: pd.DataFrame, coverage: pd.DataFrame, candidates: Sequence[int], min_jaccard: float = 0.70,
             fallback: str | None = "most_stable") -> tuple[int, dict]:
    """Choose the cutoff K (§2.4 / Appendix E) by :data:`CHOOSE_K_RULE`.

    Larger K covers more of the KL, so the largest stable candidate is the trade-off point (the paper: average
    Jaccard > 0.70 up to K = 100, which holds ≈60 % of the KL). If no candidate reaches ``min_jaccard``:
    ``fallback="most_stable"`` returns the candidate with the highest average Jaccard (ties: smaller K) with
    ``rule_met = False`` in the evidence and a warning; ``fallback=None`` raises ValueError.

    Returns (K, evidence) where evidence is a JSON-able dict.
    """
    if not len(candidates):
        raise ValueError("no candidate K given")
    byK = stability_by_K(summary).set_index("K")
    cands = sorted({int(k) for k in candidates})
    absent = [k for k in cands if k not in byK.index]
    if absent:
        raise ValueError(f"candidate K(s) {absent} are not in the stability summary (has {sorted(byK.index.tolist())})")
    table = []
    for k in cands:
        try:
            cov = coverage_at(coverage, k)
        except ValueError:
            cov = None
        table.append({"K": k, "jaccard_avg": float(byK.loc[k, "jaccard_avg"]),
                      "jaccard_min_n": float(byK.loc[k, "jaccard_min_n"]), "coverage": cov})
    ok = [r for r in table if r["jaccard_avg"] >= min_jaccard]
    if ok:
        chosen, met = max(ok, key=lambda r: r["K"]), True
    elif fallback == "most_stable":
        chosen, met = max(table, key=lambda r: (r["jaccard_avg"], -r["K"])), False
        log.warning("choose_K: no candidate reaches average Jaccard %.2f (best %.3f at K=%d); using K=%d",
                    min_jaccard, chosen["jaccard_avg"], chosen["K"], chosen["K"])
    else:
        best = max(r["jaccard_avg"] for r in table)
        raise ValueError(f"no candidate K in {cands} reaches average Jaccard {min_jaccard} (best {best:.3f})")
    if chosen["coverage"] is None:
        raise ValueError(f"coverage is not tabulated at the chosen K={chosen['K']}")
    evidence = {
        "rule": CHOOSE_K_RULE, "min_jaccard": float(min_jaccard), "rule_met": met, "K": int(chosen["K"]),
        "jaccard_avg": chosen["jaccard_avg"], "coverage": chosen["coverage"],
        "ns": [int(x) for x in byK.loc[chosen["K"], "ns"]], "candidates": table,
    }
    return int(chosen["K"]), evidence
