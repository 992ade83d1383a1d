"""Statistics of the knockout study (paper §3, Appendix D): paired bootstrap, Eq. 22 categories, the census of
Table 2, multiple-testing corrections, the global sign test and the predictor correlations of Table 1.

Pure functions over arrays / DataFrames (no model, no I/O); ``rocktokens.knockout.experiment`` builds their inputs.

Conventions (all documented where they are implemented):

* **Paired bootstrap** (:func:`paired_bootstrap`): problems are the resampling unit; a problem's difference is
  (mean correctness over its m samples under the knockout) − (the same under the baseline), with the *same
  seeds* per (problem, sample) in both arms. B resamples of the N problems with replacement, one shared index
  matrix per benchmark (common random numbers across candidates, seeded from the config). Two-sided p by the
  null-shifted bootstrap: p = (1 + #{b : |Δ*_b − Δ̂| ≥ |Δ̂|}) / (B + 1) — the share of resampled effects at
  least as far from the estimate as the estimate is from 0; p = 1 when Δ̂ = 0 (no evidence), never 0.
* **Rejection** at level α means p ≤ α; **Bonferroni** rejects p ≤ α / n; **Benjamini–Hochberg** rejects the
  k smallest p-values for the largest k with p_(k) ≤ k q / n (step-up), computed by scipy as BH-adjusted p ≤ q
  (``scipy.stats.false_discovery_control``).
* **Sign test**: the exact two-sided binomial test of scipy (``scipy.stats.binomtest``).
* **Categories** (Eq. 22): see :func:`classify`.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

STRONG_PILLAR = "strong_pillar"
NEUTRAL = "neutral"
STRONG_STUMBLING = "strong_stumbling"
MIXED = "mixed"  # a pillar by one perturbation and a stumbling block by the other (not in the paper)
CATEGORIES = (STRONG_PILLAR, NEUTRAL, STRONG_STUMBLING, MIXED)
LETTERS = {STRONG_PILLAR: "P", NEUTRAL: "N", STRONG_STUMBLING: "S", MIXED: "M"}
_TOL = 1e-9


# ----------------------------------------------------------------------------------------------- bootstrap
def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """``[B, n]`` problem indices drawn with replacement (numpy PCG64 seeded with ``seed``)."""
    if n < 1:
        raise ValueError("bootstrap needs at least one problem (got 0)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _counts(idx: np.ndarray) -> np.ndarray:
    """``[B, n]`` float64 multiplicities of each problem in each resample."""
    B, n = idx.shape
    flat = (idx + np.arange(B)[:, None] * n).ravel()
    return np.bincount(flat, minlength=B * n).reshape(B, n).astype(np.float64)


def paired_bootstrap(diffs, n_resamples: int = 10_000, seed: int = 0, ci: float = 0.95,
                     idx: np.ndarray | None = None) -> pd.DataFrame:
    """Paired bootstrap over problems for one or many arms (Appendix D.3, condition (ii) of Eq. 22).

    ``diffs``: ``[N]`` or ``[N, A]`` per-problem paired differences (knockout − baseline accuracy of each problem).
    Returns one row per arm: ``delta`` (Δ̂ = mean difference, Eq. 20/21), ``p`` (two-sided, null-shifted; see the
    module docstring), ``ci_lo``/``ci_hi`` (percentile interval of Δ*), ``n_problems``, ``n_resamples``.
    The resampled means are one matrix product (multiplicities × differences), so all arms share the resamples.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim == 1:
        d = d[:, None]
    if d.ndim != 2:
        raise ValueError(f"diffs must be [N] or [N, A], got shape {np.shape(diffs)}")
    if d.shape[0] < 1:
        raise ValueError("bootstrap needs at least one problem (got 0)")
    if not np.all(np.isfinite(d)):
        raise ValueError("diffs contain NaN or inf")
    n = d.shape[0]
    if idx is None:
        idx = bootstrap_indices(n, n_resamples, seed)
    elif idx.shape[1] != n:
        raise ValueError(f"bootstrap indices are for {idx.shape[1]} problems, diffs for {n}")
    B = idx.shape[0]
    total = d.sum(axis=0)                       # N·Δ̂ per arm
    star = _counts(idx) @ d                     # [B, A]: N·Δ*_b
    far = np.abs(star - total) >= np.abs(total) - _TOL * (1.0 + np.abs(total))
    p = (1.0 + far.sum(axis=0)) / (B + 1.0)
    p = np.where(np.abs(total) <= _TOL, 1.0, p)
    lo, hi = np.quantile(star / n, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
    return pd.DataFrame({"delta": total / n, "p": p, "ci_lo": lo, "ci_hi": hi, "n_problems": n, "n_resamples": B})


# ----------------------------------------------------------------------------------------------- power
def minimum_detectable_effect(sd_diff, n: int, alpha: float = 0.05, power: float = 0.80):
    """The smallest paired mean difference a two-sided test at level ``alpha`` detects with probability ``power``
    over ``n`` problems whose paired differences have standard deviation ``sd_diff`` (normal approximation):
    (z_{1−α/2} + z_{power}) · sd_diff / √n. Array-valued in ``sd_diff``."""
    from scipy.stats import norm

    if n < 2:
        raise ValueError(f"a detectable effect needs at least 2 problems (got {n})")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must lie in (0, 1), got {alpha}, {power}")
    return (norm.ppf(1 - alpha / 2) + norm.ppf(power)) * np.asarray(sd_diff, dtype=np.float64) / math.sqrt(n)


def problems_for_effect(sd_diff: float, effect: float, alpha: float = 0.05, power: float = 0.80) -> int:
    """How many problems a paired comparison needs so that ``effect`` is its minimum detectable effect."""
    from scipy.stats import norm

    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    return max(2, math.ceil(((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * float(sd_diff) / effect) ** 2))


# ----------------------------------------------------------------------------------------------- Eq. 22
def classify(delta_token, p_token, delta_window, p_window, eps: float = 0.01, alpha: float = 0.05) -> np.ndarray:
    """Eq. 22: the category of each candidate from its token-level (Eq. 20) and window-level (Eq. 21) effects.

    A perturbation *supports Pillar* iff Δ ≤ −ε and its paired bootstrap rejects H0: Δ = 0 (p ≤ α); it
    *supports Stumbling* iff Δ ≥ +ε and p ≤ α. Strong Pillar iff some perturbation supports Pillar
    (min{Δ(v), Δ(W(v))} ≤ −ε with the test passed for that perturbation) and none supports Stumbling; Strong
    Stumbling symmetrically; both → ``mixed`` (the paper leaves this case undefined; reported, never merged);
    otherwise Neutral. ``delta_window``/``p_window`` may be NaN (no window arm): then only the token counts.
    """
    dt, pt = np.asarray(delta_token, float), np.asarray(p_token, float)
    dw, pw = np.asarray(delta_window, float), np.asarray(p_window, float)
    if not 0 < alpha < 1 or eps < 0:
        raise ValueError(f"need 0 < alpha < 1 and eps >= 0, got alpha={alpha}, eps={eps}")

    def supports(d, p, sign):
        with np.errstate(invalid="ignore"):
            return np.nan_to_num(sign * d >= eps - _TOL, nan=0).astype(bool) & (np.nan_to_num(p, nan=2.0) <= alpha)

    pillar = supports(dt, pt, -1) | supports(dw, pw, -1)
    stumble = supports(dt, pt, +1) | supports(dw, pw, +1)
    out = np.full(dt.shape, NEUTRAL, dtype=object)
    out[pillar & ~stumble] = STRONG_PILLAR
    out[stumble & ~pillar] = STRONG_STUMBLING
    out[pillar & stumble] = MIXED
    return out


# ----------------------------------------------------------------------------------------------- Table 2
def census(categories: pd.DataFrame, baseline: Mapping[str, float] | None = None,
           benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2: per benchmark, the number and share of candidates in each category, and the baseline accuracy.

    ``categories``: columns ``benchmark``, ``token_id``, ``category``.
    """
    _need(categories, ["benchmark", "token_id", "category"], "categories")
    unknown = sorted(set(categories["category"]) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"unknown category value(s) {unknown}; expected {CATEGORIES}")
    benchmarks = list(benchmarks) if benchmarks is not None else list(dict.fromkeys(categories["benchmark"]))
    rows = []
    for b in benchmarks:
        c = categories[categories["benchmark"] == b]
        n = len(c)
        row: dict = {"benchmark": b, "n_candidates": n}
        for cat in CATEGORIES:
            k = int((c["category"] == cat).sum())
            row[cat] = k
            row[f"{cat}_pct"] = 100.0 * k / n if n else float("nan")
        row["baseline_acc"] = float(baseline[b]) if baseline is not None and b in baseline else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def cross_task_agreement(categories: pd.DataFrame, benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 2's last line: for each pair of benchmarks (a, b), how many candidates fall in each pair of
    categories, written ``X||Y`` with letters P (Strong Pillar), N (Neutral), S (Strong Stumbling), M (mixed).
    Every P/N/S combination is listed (zeros included); M combinations only when present."""
    _need(categories, ["benchmark", "token_id", "category"], "categories")
    benchmarks = list(benchmarks) if benchmarks is not None else list(dict.fromkeys(categories["benchmark"]))
    wide = categories.pivot_table(index="token_id", columns="benchmark", values="category", aggfunc="first")
    rows = []
    for i, a in enumerate(benchmarks):
        for b in benchmarks[i + 1:]:
            both = wide[[a, b]].dropna()
            pairs = both[a].map(LETTERS) + "||" + both[b].map(LETTERS)
            counts = pairs.value_counts()
            letters = ["N", "P", "S"] + (["M"] if (both == MIXED).to_numpy().any() else [])
            for x in letters:
                for y in letters:
                    key = f"{x}||{y}"
                    rows.append({"benchmark_a": a, "benchmark_b": b, "pattern": key, "count": int(counts.get(key, 0))})
    return pd.DataFrame(rows, columns=["benchmark_a", "benchmark_b", "pattern", "count"])


# ----------------------------------------------------------------------------------------------- multiplicity
def _pvalues(p) -> np.ndarray:
    p = np.asarray(p, dtype=float).ravel()
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must be finite and lie in [0, 1]")
    return p


def bonferroni(p, alpha: float = 0.05) -> np.ndarray:
    """Bonferroni family-wise control: reject H_i iff p_i ≤ α / n."""
    p = _pvalues(p)
    return p <= alpha / max(len(p), 1)


def bh_adjusted(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (``scipy.stats.false_discovery_control``, method ``bh``): the adjusted p
    of the i-th smallest p-value is min over j ≥ i of n·p_(j)/j (capped at 1), so H_i is rejected at FDR level q iff
    its adjusted p ≤ q. NaN (a test not run) stays NaN and does not count in the family; otherwise p must lie in
    [0, 1]."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(_pvalues(p[ok]), method="bh")
    return out


def benjamini_hochberg(p, q: float) -> np.ndarray:
    """Benjamini–Hochberg (step-up) at FDR level q: reject the k smallest p for the largest k with p_(k) ≤ kq/n —
    exactly the p whose adjusted value (:func:`bh_adjusted`) is ≤ q. Returns a boolean array in the order of ``p``
    (empty for no p-values)."""
    return bh_adjusted(_pvalues(p)) <= q


def multiple_testing(effects: pd.DataFrame, alpha: float = 0.05, qs: Sequence[float] = (0.05, 0.10, 0.20)) -> pd.DataFrame:
    """Appendix D.2, per benchmark and family: how many per-candidate tests survive Bonferroni at α and BH at
    each q. Families: ``token`` (Eq. 20 tests), ``window`` (Eq. 21 tests) and ``both`` (all tests Eq. 22 uses).
    Also reported: raw rejections p ≤ α, the smallest p, and the Bonferroni threshold α/n.

    ``effects``: columns ``benchmark``, ``policy``, ``p``.
    """
    _need(effects, ["benchmark", "policy", "p"], "effects")
    rows = []
    for b, g in effects.groupby("benchmark", sort=False):
        for fam in ("token", "window", "both"):
            sub = g if fam == "both" else g[g["policy"] == fam]
            p = _pvalues(sub["p"].to_numpy())
            row = {"benchmark": b, "family": fam, "n_tests": len(p), "min_p": float(p.min()) if len(p) else float("nan"),
                   "raw_rejections": int((p <= alpha).sum()), "bonferroni_threshold": alpha / max(len(p), 1),
                   "bonferroni_rejections": int(bonferroni(p, alpha).sum())}
            for q in qs:
                row[f"bh_q{q:g}_rejections"] = int(benjamini_hochberg(p, q).sum())
            rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- sign test
def sign_test_p(n_neg: int, n_pos: int) -> float:
    """Two-sided exact binomial test of H0: P(negative) = 1/2 (Appendix D.2's global sign-asymmetry test):
    ``scipy.stats.binomtest(n_neg, n_neg + n_pos, 0.5).pvalue``.

    With p0 = 1/2 the distribution is symmetric, so the two-sided p (the total probability of outcomes no more
    likely than the observed one) is min(1, 2 · P(X ≤ min(k, n − k))), X ~ Bin(n, 1/2). n = 0 → 1 (no evidence;
    scipy's test needs n ≥ 1).
    """
    from scipy.stats import binomtest

    n_neg, n_pos = int(n_neg), int(n_pos)
    if n_neg < 0 or n_pos < 0:
        raise ValueError(f"counts must be >= 0, got {n_neg}, {n_pos}")
    n = n_neg + n_pos
    if n == 0:
        return 1.0
    return float(binomtest(n_neg, n, 0.5, alternative="two-sided").pvalue)


def sign_tests(categories: pd.DataFrame, core_ids: Sequence[int] | None = None,
               benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """The sign-asymmetry test over the rejections: Strong Pillars count as negative, Strong Stumbling as
    positive (``mixed`` candidates have no single sign and are left out, their count reported). Rows per scope
    (``all`` candidates; ``core`` = those in ``core_ids``, the definitional K set) × benchmark (each, and
    ``combined`` over all benchmarks, as the paper's 10:0)."""
    _need(categories, ["benchmark", "token_id", "category"], "categories")
    benchmarks = list(benchmarks) if benchmarks is not None else list(dict.fromkeys(categories["benchmark"]))
    scopes = [("all", categories)]
    if core_ids is not None:
        scopes.append(("core", categories[categories["token_id"].isin(set(int(v) for v in core_ids))]))
    rows = []
    for scope, c in scopes:
        for b in [*benchmarks, "combined"]:
            g = c if b == "combined" else c[c["benchmark"] == b]
            n_neg = int((g["category"] == STRONG_PILLAR).sum())
            n_pos = int((g["category"] == STRONG_STUMBLING).sum())
            rows.append({"scope": scope, "benchmark": b, "n_candidates": int(g["token_id"].nunique()),
                         "n_negative": n_neg, "n_positive": n_pos, "n_mixed": int((g["category"] == MIXED).sum()),
                         "p_two_sided": sign_test_p(n_neg, n_pos)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- Table 1
def pearson(x, y) -> tuple[float, float]:
    """Pearson r and its two-sided p (t-test with n − 2 df, as scipy.stats.pearsonr). NaN when n < 3 or when
    either variable is constant (r undefined)."""
    from scipy import stats as sps

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = sps.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def correlation_table(deltas: pd.DataFrame, predictors: pd.DataFrame, names: Mapping[str, str],
                      benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Table 1: Pearson r and p between Δ_B(v) and each predictor, per benchmark.

    ``deltas``: columns ``benchmark``, ``token_id``, ``delta``; ``predictors``: ``token_id`` and one column per
    key of ``names`` (column → display name, in table order).
    """
    _need(deltas, ["benchmark", "token_id", "delta"], "deltas")
    _need(predictors, ["token_id", *names], "predictors")
    benchmarks = list(benchmarks) if benchmarks is not None else list(dict.fromkeys(deltas["benchmark"]))
    rows = []
    for b in benchmarks:
        m = deltas[deltas["benchmark"] == b].merge(predictors, on="token_id", how="inner")
        for col, label in names.items():
            r, p = pearson(m[col], m["delta"])
            rows.append({"benchmark": b, "predictor": col, "label": label, "r": r, "p": p, "n": int(len(m))})
    return pd.DataFrame(rows)


def _need(df, cols, what):
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} must be a DataFrame")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}")
