"""rocktokens.core.stats: paired bootstrap, Eq. 22, census, multiple testing, sign test, correlations (Appendix D)."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rocktokens.core import stats as S
# A fixed example: 12 problems, m = 2 samples each -> differences in steps of 1/2.
DIFFS = np.array([-1.0, -0.5, 0.0, 0.0, -0.5, 0.5, -1.0, 0.0, 0.0, -0.5, 0.0, 0.5])


def direct_bootstrap(d, idx, ci=0.95):
    """The definition, one resample at a time: Δ̂, p = (1 + #{|Δ*−Δ̂| ≥ |Δ̂|}) / (B + 1), percentile CI."""
    delta = d.mean()
    star = np.array([d[row].mean() for row in idx])
    far = sum(abs(s - delta) >= abs(delta) - 1e-12 for s in star)
    p = 1.0 if delta == 0 else (1 + far) / (len(idx) + 1)
    return delta, p, np.quantile(star, (1 - ci) / 2), np.quantile(star, 1 - (1 - ci) / 2)


def test_paired_bootstrap_matches_direct_computation():
    idx = S.bootstrap_indices(len(DIFFS), 2000, seed=7)
    got = S.paired_bootstrap(DIFFS, idx=idx).iloc[0]
    delta, p, lo, hi = direct_bootstrap(DIFFS, idx)
    assert got["delta"] == pytest.approx(delta) == pytest.approx(-2.5 / 12)
    assert got["p"] == pytest.approx(p)
    assert (got["ci_lo"], got["ci_hi"]) == pytest.approx((lo, hi))
    assert got["p"] == pytest.approx(sps.ttest_1samp(DIFFS, 0).pvalue, abs=0.05)  # near the paired t-test
    # the same resamples from the seed: many arms at once equal one arm at a time
    many = S.paired_bootstrap(np.c_[DIFFS, -DIFFS, np.zeros_like(DIFFS)], 2000, seed=7)
    assert many["p"].iloc[0] == pytest.approx(got["p"]) and many["p"].iloc[1] == pytest.approx(got["p"])
    assert many["delta"].iloc[1] == pytest.approx(2.5 / 12)
    assert many["p"].iloc[2] == 1.0  # no effect -> no evidence


def test_paired_bootstrap_against_the_exhaustive_bootstrap():
    """With B large the p-value converges to the exact bootstrap p over all n^n resamples (n = 5 here)."""
    d = np.array([-1.0, -0.5, 0.0, -0.5, 0.5])
    n = len(d)
    means = np.array([d[list(r)].mean() for r in itertools.product(range(n), repeat=n)])
    exact = np.mean(np.abs(means - d.mean()) >= abs(d.mean()) - 1e-12)
    got = S.paired_bootstrap(d, 20000, seed=3)["p"].iloc[0]
    assert got == pytest.approx(exact, abs=0.01)


def test_paired_bootstrap_edge_cases():
    assert S.paired_bootstrap(-np.ones(6), 99, seed=1)["p"].iloc[0] == pytest.approx(1 / 100)  # never 0
    with pytest.raises(ValueError, match="at least one problem"):
        S.paired_bootstrap(np.zeros(0), 10)
    with pytest.raises(ValueError, match="NaN"):
        S.paired_bootstrap([0.0, np.nan], 10)


def test_classify_eq22():
    eps, a = 0.01, 0.05
    dt = [-0.02, -0.02, 0.00, 0.03, -0.01, 0.0, -0.05, -0.02]
    pt = [0.01, 0.20, 0.50, 0.01, 0.04, 0.9, 0.01, 0.01]
    dw = [0.00, -0.04, -0.03, 0.00, np.nan, 0.0, 0.05, 0.0]
    pw = [0.90, 0.01, 0.30, 0.90, np.nan, 0.9, 0.01, 0.9]
    got = S.classify(dt, pt, dw, pw, eps, a)
    assert list(got) == [S.STRONG_PILLAR,      # token: Δ ≤ −ε and p ≤ α
                         S.STRONG_PILLAR,      # token not significant, window is
                         S.NEUTRAL,            # window Δ beyond ε but not significant
                         S.STRONG_STUMBLING,   # Δ ≥ +ε, significant
                         S.STRONG_PILLAR,      # exactly −ε counts (≤), no window arm
                         S.NEUTRAL,
                         S.MIXED,              # pillar by token, stumbling by window
                         S.STRONG_PILLAR]
    assert S.classify([-0.009], [0.001], [np.nan], [np.nan], eps, a)[0] == S.NEUTRAL  # inside the band


HAND = pd.DataFrame({
    "benchmark": ["math"] * 5 + ["ifeval"] * 5,
    "token_id": [1, 2, 3, 4, 5] * 2,
    "category": [S.STRONG_PILLAR, S.NEUTRAL, S.NEUTRAL, S.STRONG_PILLAR, S.NEUTRAL,
                 S.NEUTRAL, S.NEUTRAL, S.STRONG_PILLAR, S.NEUTRAL, S.STRONG_STUMBLING],
})


def test_census_on_a_hand_made_table():
    t = S.census(HAND, {"math": 0.75, "ifeval": 0.5}, ["math", "ifeval"]).set_index("benchmark")
    assert t.loc["math", [S.STRONG_PILLAR, S.NEUTRAL, S.STRONG_STUMBLING, S.MIXED]].tolist() == [2, 3, 0, 0]
    assert t.loc["ifeval", [S.STRONG_PILLAR, S.NEUTRAL, S.STRONG_STUMBLING]].tolist() == [1, 3, 1]
    assert t.loc["math", "strong_pillar_pct"] == pytest.approx(40.0)
    assert t.loc["ifeval", "baseline_acc"] == 0.5 and t.loc["math", "n_candidates"] == 5
    agree = S.cross_task_agreement(HAND, ["math", "ifeval"]).set_index("pattern")["count"]
    assert agree["N||N"] == 1 and agree["P||N"] == 2 and agree["N||P"] == 1 and agree["P||P"] == 0
    assert agree["N||S"] == 1 and agree.sum() == 5 and len(agree) == 9
    with pytest.raises(ValueError, match="unknown category"):
        S.census(HAND.assign(category="pillar"))


def step_up_bh(p, q):
    """Benjamini–Hochberg by its definition, independent of scipy: sort, find the largest k with
    p_(k) <= k q / n, reject the k smallest (ties broken by position; tied p-values are all in or all out)."""
    p = np.asarray(p, float)
    n = len(p)
    order = sorted(range(n), key=lambda i: (p[i], i))
    k = max([r for r in range(1, n + 1) if p[order[r - 1]] <= r * q / n], default=0)
    reject = np.zeros(n, dtype=bool)
    reject[order[:k]] = True
    return reject


def test_bh_against_the_step_up_definition():
    rng = np.random.default_rng(0)
    n_reject = 0
    for trial in range(300):
        n = int(rng.integers(1, 60))
        p = np.concatenate([rng.uniform(0, 0.02, int(rng.integers(0, n + 1))), rng.uniform(0, 1, n)])[:n]
        if trial % 7 == 0:
            p = np.round(p, 2)  # ties
        for q in (0.05, 0.10, 0.20):
            got = S.benjamini_hochberg(p, q)
            assert got.dtype == bool and got.shape == p.shape
            np.testing.assert_array_equal(got, step_up_bh(p, q), err_msg=f"trial {trial}, q={q}")
            n_reject += int(got.sum())
    assert n_reject > 500  # the comparison saw many rejections, not only empty sets
    # step-up, by hand: 0.02 and 0.03 miss their own thresholds (0.0125, 0.025), yet 0.035 <= 3 * 0.05 / 4 carries
    # them; a step-down procedure would reject nothing here.
    assert S.benjamini_hochberg([0.035, 0.02, 0.9, 0.03], 0.05).tolist() == [True, True, False, True]
    assert S.benjamini_hochberg([0.01, 0.04, 0.03, 0.2], 0.05).tolist() == [True, False, False, False]
    assert S.benjamini_hochberg([0.5, 0.5, 0.5], 0.5).tolist() == [True, True, True]  # p_(3) <= 3q/3, ties
    assert S.benjamini_hochberg([], 0.05).tolist() == []
    with pytest.raises(ValueError, match="p-values"):
        S.benjamini_hochberg([0.1, np.nan], 0.05)


def test_bh_adjusted_is_the_step_up_minimum_and_skips_tests_not_run():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = np.concatenate([rng.uniform(0, 0.02, rng.integers(0, 5)), rng.uniform(0, 1, rng.integers(1, 20))])
        n, order = len(p), np.argsort(p, kind="stable")
        ps = p[order]
        ref = np.empty(n)  # adjusted p of the i-th smallest: min over j >= i of n p_(j) / j, capped at 1
        ref[order] = np.minimum(1.0, np.minimum.accumulate((n * ps / np.arange(1, n + 1))[::-1])[::-1])
        assert np.allclose(S.bh_adjusted(p), ref)
    adj = S.bh_adjusted([np.nan, 0.01, 0.04])  # the NaN is no test: a family of two
    assert np.isnan(adj[0]) and adj[1:] == pytest.approx([0.02, 0.04])
    with pytest.raises(ValueError, match="p-values"):
        S.bh_adjusted([0.1, 1.5])


def test_bonferroni_and_bh_nesting():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        p = np.concatenate([rng.uniform(0, 0.005, int(rng.integers(0, 4))), rng.uniform(0, 1, n)])[:n]
        bonf = S.bonferroni(p, 0.05)
        np.testing.assert_array_equal(bonf, np.minimum(p * n, 1.0) <= 0.05)
        assert not np.any(bonf & ~S.benjamini_hochberg(p, 0.05))  # Bonferroni ⊆ BH at the same level
    # the paper's numbers: min p 0.0016 among 200 tests passes neither (Appendix D.2)
    p = np.r_[0.0016, np.linspace(0.01, 1, 199)]
    assert not S.bonferroni(p, 0.05).any() and not S.benjamini_hochberg(p, 0.20).any()


def test_multiple_testing_table():
    eff = pd.DataFrame({"benchmark": ["math"] * 6, "policy": ["token", "window"] * 3,
                        "p": [1e-5, 0.04, 0.2, 0.5, 0.9, 0.01]})
    t = S.multiple_testing(eff, 0.05, (0.05, 0.2)).set_index("family")
    assert t.loc["both", "n_tests"] == 6 and t.loc["token", "n_tests"] == 3
    assert t.loc["both", "raw_rejections"] == 3 and t.loc["both", "bonferroni_rejections"] == 1
    assert t.loc["both", "bh_q0.2_rejections"] == 3 and t.loc["window", "min_p"] == 0.01


def exact_sign_p(k, n):
    """Two-sided sign test by exact rational arithmetic, independent of scipy: Bin(n, 1/2) is symmetric, so the
    outcomes no more likely than k are the two tails beyond min(k, n - k)."""
    from fractions import Fraction
    from math import comb

    if n == 0:
        return Fraction(1)
    m = min(k, n - k)
    tail = Fraction(sum(comb(n, i) for i in range(m + 1)), 2 ** n)
    return min(Fraction(1), 2 * tail)


def test_sign_test_against_exact_arithmetic():
    for n in range(0, 41):
        for k in range(n + 1):
            got = S.sign_test_p(k, n - k)
            assert isinstance(got, float)
            assert got == pytest.approx(float(exact_sign_p(k, n)), rel=1e-12, abs=0), (k, n)
    assert S.sign_test_p(10, 0) == pytest.approx(2 ** -9, rel=1e-12)   # the paper's 10:0, p ≈ 0.002
    assert S.sign_test_p(6, 0) == pytest.approx(2 ** -5, rel=1e-12)    # the K=100 core, 6:0, p ≈ 0.031
    assert S.sign_test_p(3, 1) == pytest.approx(0.625, rel=1e-12)      # 2 · (1 + 4) / 16
    assert S.sign_test_p(0, 0) == 1.0 and S.sign_test_p(4, 4) == 1.0
    assert S.sign_test_p(2, 9) == S.sign_test_p(9, 2)                  # symmetric under p0 = 1/2
    with pytest.raises(ValueError, match=">= 0"):
        S.sign_test_p(-1, 3)


def test_sign_tests_over_rejections_and_core():
    t = S.sign_tests(HAND, core_ids=[1, 2], benchmarks=["math", "ifeval"]).set_index(["scope", "benchmark"])
    assert t.loc[("all", "combined"), ["n_negative", "n_positive"]].tolist() == [3, 1]
    assert t.loc[("all", "combined"), "p_two_sided"] == pytest.approx(float(exact_sign_p(3, 4)), rel=1e-12)
    assert t.loc[("core", "combined"), ["n_negative", "n_positive"]].tolist() == [1, 0]
    assert t.loc[("core", "ifeval"), "p_two_sided"] == 1.0  # no rejection at all


def test_correlation_table_matches_scipy():
    rng = np.random.default_rng(1)
    ids = np.arange(40)
    deltas = pd.DataFrame({"benchmark": "math", "token_id": ids, "delta": rng.normal(size=40)})
    preds = pd.DataFrame({"token_id": ids, "a": rng.normal(size=40), "b": np.ones(40)})
    t = S.correlation_table(deltas, preds, {"a": "A", "b": "B"}).set_index("predictor")
    ref = sps.pearsonr(preds["a"], deltas["delta"])
    assert t.loc["a", "r"] == pytest.approx(ref.statistic) and t.loc["a", "p"] == pytest.approx(ref.pvalue)
    assert np.isnan(t.loc["b", "r"]) and t.loc["a", "n"] == 40  # constant predictor: r undefined


# ----------------------------------------------------------------------------------------------- power
def test_minimum_detectable_effect_has_the_power_it_claims():
    sd, n = 0.4, 150
    mde = float(S.minimum_detectable_effect(sd, n, 0.05, 0.80))
    assert mde == pytest.approx((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / np.sqrt(n))
    # simulated paired differences with mean = MDE: a two-sided z-test at 0.05 rejects ~80 % of the time
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(4000, n))
    z = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    assert 0.76 < (np.abs(z) > sps.norm.ppf(0.975)).mean() < 0.84
    # the number of problems for an effect inverts it
    assert S.problems_for_effect(sd, mde) in (n, n + 1)
    assert S.problems_for_effect(sd, 0.10) > S.problems_for_effect(sd, 0.20)
    with pytest.raises(ValueError):
        S.minimum_detectable_effect(sd, 1)
    with pytest.raises(ValueError):
        S.problems_for_effect(sd, 0.0)
