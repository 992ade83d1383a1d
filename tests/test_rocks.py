"""Rock set, clusters, frequency-matched controls, independent-resample stability and the choice of K."""
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rocktokens.rocks.sets import (
    ROCK_COLUMNS,
    SCORE_COLUMN,
    choose_K,
    cluster_counts,
    coverage_at,
    coverage_curve,
    frequency_matched_controls,
    functional_cluster,
    jaccard,
    ranked,
    rock_set,
    stability,
    stability_summary,
    top_k_ids,
    with_rock_score,
)


# ------------------------------------------------------------------------------------------- clusters

@pytest.mark.parametrize("tok,cluster", [
    # LaTeX / math delimiters (Appendix B cluster 1)
    (" $", "latex_math"), ("$", "latex_math"), ("$$", "latex_math"), ("\\(", "latex_math"), ("\\)", "latex_math"),
    ("\\\\", "latex_math"), ("\\frac", "latex_math"), ("frac", "latex_math"), ("\\times", "latex_math"),
    ("\\boxed", "latex_math"), ("=", "latex_math"), (" =", "latex_math"), ("^", "latex_math"), ("{", "latex_math"),
    ("}", "latex_math"), ("(", "latex_math"), (")", "latex_math"), ("}{", "latex_math"), ("^{", "latex_math"),
    ("$.", "latex_math"), ("$$\n", "latex_math"), (" -", "latex_math"),
    # Markdown / whitespace (cluster 2)
    ("**", "markdown_whitespace"), (" **", "markdown_whitespace"), ("\n", "markdown_whitespace"),
    ("\n\n", "markdown_whitespace"), (":\n\n", "markdown_whitespace"), (".\n\n", "markdown_whitespace"),
    ("---\n\n", "markdown_whitespace"), ("###", "markdown_whitespace"), (" ###", "markdown_whitespace"),
    ("---", "markdown_whitespace"), ("   ", "markdown_whitespace"), (" \n\n\n", "markdown_whitespace"),
    (":**", "markdown_whitespace"),
    # discourse markers (cluster 3), sentence-initial, with or without the leading space
    (" So", "discourse"), ("So", "discourse"), ("Let", "discourse"), (" Let", "discourse"), ("We", "discourse"),
    (" But", "discourse"), ("Now", "discourse"), (" Wait", "discourse"), ("Then", "discourse"),
    (" Since", "discourse"), ("This", "discourse"),
    # digits (cluster 4)
    ("5", "digits"), (" 1", "digits"), ("0", "digits"), ("9", "digits"),
    # content tokens of the control set
    (" triangle", "other"), (" equation", "other"), (" must", "other"), (" find", "other"), (" as", "other"),
    (" a", "other"), ("b", "other"), (" so", "other"), ("Sofia", "other"), (" Someone", "other"), (".", "other"),
    (",", "other"), ("", "other"), ("1a", "other"),
])
def test_functional_cluster(tok, cluster):
    assert functional_cluster(tok) == cluster


# --------------------------------------------------------------------------------------------- rock set

def _stats(rows):
    df = pd.DataFrame(rows, columns=["token_id", "token", "freq", "mean_loss"])
    df["qwen3_id"] = df["token_id"] + 1000
    df["R"] = df["mean_loss"] * df["freq"]
    df["rank"] = df["R"].rank(ascending=False, method="first").astype(int)
    return df


def test_rock_set_orders_by_R_ties_by_token_id_and_clusters():
    ts = _stats([(7, " So", 10, 1.0), (3, "\n\n", 20, 0.5), (5, "5", 5, 2.0), (1, " cat", 4, 0.25),
                 (9, " $", 40, 0.5), (2, " dog", 1, 0.5)])
    r = rock_set(ts, 4)
    assert list(r.columns) == ROCK_COLUMNS
    # R: 9→20, 3→10, 5→10, 7→10, 1→1, 2→0.5; ties at 10 broken by token_id
    assert r["token_id"].tolist() == [9, 3, 5, 7]
    assert r["rank"].tolist() == [1, 2, 3, 4]
    assert r["cluster"].tolist() == ["latex_math", "markdown_whitespace", "digits", "discourse"]
    assert r["qwen3_id"].tolist() == [1009, 1003, 1005, 1007]
    assert r["CCR"].isna().all() and r["R_ctx"].isna().all()  # context step absent
    # input row order must not matter
    assert rock_set(ts.sample(frac=1, random_state=3), 4)["token_id"].tolist() == [9, 3, 5, 7]
    counts = cluster_counts(r).set_index("cluster")
    assert counts.loc["digits", "n_tokens"] == 1 and counts.loc["other", "n_tokens"] == 0


def test_rock_set_keeps_ccr_and_rejects_bad_K():
    ts = _stats([(1, "a", 10, 1.0), (2, "b", 5, 1.0), (3, "c", 1, 1.0)])
    ts["CCR"] = [0.5, 1.0, 0.0]
    r = rock_set(ts, 2)
    assert r["R_ctx"].tolist() == [5.0, 5.0]
    with pytest.raises(ValueError, match=r"K=4 exceeds the 3 token types observed"):
        rock_set(ts, 4)
    with pytest.raises(ValueError, match="positive integer"):
        rock_set(ts, 0)
    with pytest.raises(ValueError, match="duplicated token_id"):
        rock_set(pd.concat([ts, ts.head(1)]), 2)
    with pytest.raises(ValueError, match="lacks column"):
        rock_set(ts.drop(columns="R"), 2)


def test_coverage_curve():
    ts = _stats([(1, "a", 10, 1.0), (2, "b", 5, 1.0), (3, "c", 5, 1.0), (4, "d", 20, 1.0)])
    cov = coverage_curve(ts)
    assert cov["K"].tolist() == [1, 2, 3, 4]
    assert cov["token_id"].tolist() == [4, 1, 2, 3]
    assert coverage_at(cov, 2) == pytest.approx(30 / 40)
    assert coverage_at(cov, 4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not tabulated at K=5"):
        coverage_at(cov, 5)


def _ctx_table():
    """R and R_ctx rank differently: the two most burdensome types (frequent, context-dependent) have low CCR."""
    ts = _stats([(1, "\n\n", 100, 1.0), (2, " So", 80, 1.0), (3, " $", 20, 1.5), (4, "5", 10, 2.0),
                 (5, " cat", 5, 1.0), (6, " dog", 40, 0.1)])
    ts["CCR"] = [0.05, 0.10, 0.90, 1.00, 0.80, 0.0]
    ts["R_ctx"] = ts["R"] * ts["CCR"]  # R: 100, 80, 30, 20, 5, 4; R_ctx: 5, 8, 27, 20, 4, 0
    ts["in_rock_vocab"] = [False, True, True, True, False, False]
    return ts


def test_R_and_R_ctx_rankings_differ_on_a_hand_made_table():
    ts = _ctx_table()
    assert rock_set(ts, 3)["token_id"].tolist() == [1, 2, 3]  # no recorded score: R (Eq. 4)
    assert rock_set(ts, 3, score="R")["token_id"].tolist() == [1, 2, 3]
    assert rock_set(ts, 3, score="R_ctx")["token_id"].tolist() == [3, 4, 2]
    assert top_k_ids(ts, 3, "R_ctx") == [3, 4, 2]
    with pytest.raises(ValueError, match="not in"):
        rock_set(ts, 3, score="CCR")
    # the score in force, recorded once, ranks every reader: rock sets, coverage and the knockout screen
    for score, order in (("R", [1, 2, 3, 4, 5, 6]), ("R_ctx", [3, 4, 2, 1, 5, 6])):
        rec = with_rock_score(ts.sample(frac=1, random_state=1), score)
        assert rec[SCORE_COLUMN].tolist() == ts.set_index("token_id").loc[order, score].tolist()
        assert rec["token_id"].tolist() == order and rec["rank"].tolist() == list(range(1, 7))
        assert rock_set(rec, 4)["token_id"].tolist() == order[:4]
        assert ranked(rec)["token_id"].tolist() == order
        from rocktokens.knockout.experiment import mark_core, screen_candidates

        cands = mark_core(screen_candidates(rec, k_screen=5, vocab_size=10), 2)
        assert cands["token_id"].tolist() == order[:5] and cands["in_core"].tolist() == [True] * 2 + [False] * 3
        assert set(rock_set(rec, 2)["token_id"]) == set(cands.loc[cands["in_core"], "token_id"])  # one R
        cov = coverage_curve(rec)
        assert cov["token_id"].tolist() == order
        # coverage is always the share of the corpus KL, Σ R (Eq. 3), held by the top-K under the score
        np.testing.assert_allclose(cov["coverage"], np.cumsum(ts.set_index("token_id").loc[order, "R"]) / 239)
        assert cov["coverage"].iloc[-1] == 1.0
    assert coverage_at(coverage_curve(with_rock_score(ts, "R_ctx")), 2) == pytest.approx(50 / 239)
    with pytest.raises(ValueError, match="rocks.score"):
        with_rock_score(ts, "CCR")


def test_stability_under_R_ctx_uses_the_context_score_of_each_subset():
    ts = _ctx_table()
    stab = stability(lambda ids: ts[["token_id", "R_ctx"]], ["a", "b", "c"], Ks=[2], ns=(2,), B=2, seed=0,
                     score="R_ctx")
    assert (stab["jaccard"] == 1.0).all()
    with pytest.raises(ValueError, match="lacks column"):
        stability(lambda ids: ts[["token_id", "R"]], ["a", "b", "c"], Ks=[2], ns=(2,), B=2, seed=0, score="R_ctx")


def _occurrence_table(tmp_path, n_problems=16, seed=0):
    """A hive token table (stage1, opd-1, opd-2 = post) of random sequences over 12 token types; token 0 is
    frequent with mostly low loss, tokens 7–8 recur after the same context with high loss at both stages."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_problems):
        toks = list(rng.choice(7, size=40, p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05]))
        toks[10:13] = [9, 10, 7]
        toks[25:28] = [9, 10, 8]
        toks[33:35] = [11, int(rng.integers(0, 7))]
        for pos, t in enumerate(toks):
            hot = t in (7, 8) or (t == 0 and rng.random() < 0.05)
            rows.append((f"q{p:02d}", pos, int(t), (3.0 if hot else 0.1) * rng.uniform(0.8, 1.2)))
    from test_geometry import write_token_table

    return write_token_table(tmp_path, pd.DataFrame(rows, columns=["problem_id", "position", "token_id", "rkl"]))


def analyse(token_dir, cfg: dict, pre: str, post: str, seed: int) -> dict:
    """The four rock rules in their DAG order (rock_scores → rock_stability → rock_set per K → rock_set_R)."""
    from rocktokens.rocks.analysis import choose_rock_K, definitional_set, rock_set_with_controls, score_tokens

    scored = score_tokens(token_dir, cfg, pre, post, max(cfg["Ks"]))
    chosen = choose_rock_K(token_dir, scored["coverage"], cfg, pre, post, seed)
    sets = {k: rock_set_with_controls(scored["stats"], k, cfg, seed) for k in cfg["Ks"]}
    K = chosen["chosen"]["K"]
    R = definitional_set(token_dir, scored["stats"], scored["occurrences"], *sets[K], chosen["chosen"],
                         scored["info"], cfg)
    return {**scored, "chosen": R["record"], "sets": {k: s[0] for k, s in sets.items()}}


def test_rock_analysis_ranks_every_artifact_by_the_score_in_force(tmp_path):

    tdir = _occurrence_table(tmp_path)
    cfg = {"loss": "rkl", "Ks": [2, 4], "control_tol": 0.5, "control_strict": False,
           "stability": {"ns": [8], "B": 2, "min_jaccard": 0.0},
           "context": {"tau_mode": "quantile", "tau_pre": 0.8, "tau_post": 0.8, "w": 1, "gamma": 0.5, "eta": 0.1},
           "duckdb": {"threads": 1}}
    out = {score: analyse(tdir, {**cfg, "score": score}, "stage1", "opd-2", seed=0) for score in ("R", "R_ctx")}
    for score, o in out.items():
        st = o["stats"]
        assert o["chosen"]["score"] == score
        np.testing.assert_array_equal(st[SCORE_COLUMN], st[score])
        assert st["rank"].tolist() == list(range(1, len(st) + 1)) and st[SCORE_COLUMN].is_monotonic_decreasing
        for k, rs in o["sets"].items():
            assert rs["token_id"].tolist() == top_k_ids(st, k, score)
        assert o["coverage"]["token_id"].tolist() == st["token_id"].tolist()
        assert o["coverage"]["coverage"].iloc[-1] == 1.0
        cf = o["chosen"]["context_filter"]
        assert cf["n_in_rock_vocab"] <= min(cf["K"], cf["n_rock_vocab"])
    # the frequent, context-dependent token 0 leads R but not R_ctx; the recurring hot 7 and 8 lead R_ctx
    assert out["R"]["sets"][2]["token_id"].tolist()[0] == 0
    assert set(out["R_ctx"]["sets"][2]["token_id"]) == {7, 8}
    pd.testing.assert_frame_equal(out["R"]["stats"].sort_values("token_id").drop(columns=[SCORE_COLUMN, "rank"])
                                  .reset_index(drop=True),
                                  out["R_ctx"]["stats"].sort_values("token_id").drop(columns=[SCORE_COLUMN, "rank"])
                                  .reset_index(drop=True))  # same measurements, different order


def test_first_scorer_must_be_the_pre_opd_checkpoint():
    import yaml

    from rocktokens.workflow.config import ConfigError, check_config

    cfg = yaml.safe_load(open(Path(__file__).resolve().parents[1] / "config.yaml"))
    check_config(cfg)
    cfg["tokens"]["scorers"] = ["opd-1", "opd-*"]
    with pytest.raises(ConfigError, match=r"tokens.scorers.*first scorer .* must be 'stage1'.*got 'opd-1'"):
        check_config(cfg)
    cfg["tokens"]["scorers"] = ["stage1", "opd-1"]
    with pytest.raises(ConfigError, match="post-OPD checkpoint"):
        check_config(cfg)


# ---------------------------------------------------------------------------------------------- controls

def _zipf_vocab(V=4000, N=2_000_000, seed=0, interleaved=True):
    """Zipf frequencies. interleaved: every third frequent token is "structural" (high KL), the rest are easy,
    so rocks sit between easy frequent tokens (as in real outputs, where rocks hold ~18 % of the tokens).
    Otherwise losses are independent of frequency, and the top-R tokens are simply the most frequent ones."""
    rng = np.random.default_rng(seed)
    rank = np.arange(1, V + 1)
    freq = np.maximum(1, np.round(N / rank ** 1.05 / 8)).astype(int)
    if interleaved:
        structural = (rank % 3 == 2) & (rank < 600)
        loss = np.where(structural, rng.lognormal(0, 0.5, V), rng.lognormal(-7, 0.5, V))
    else:
        loss = rng.lognormal(-1.5, 1.0, V)
    ids = rng.permutation(V) + 10  # token ids unrelated to the frequency rank
    return pd.DataFrame({"token_id": ids, "qwen3_id": ids + 5, "token": [f"t{i}" for i in ids], "freq": freq,
                         "mean_loss": loss, "R": loss * freq})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_controls_match_total_occurrences_within_tolerance(seed):
    ts = _zipf_vocab(seed=seed)
    rocks = rock_set(ts, 100)
    ctl = frequency_matched_controls(ts, rocks, seed=seed)
    assert len(ctl) == 100
    assert set(ctl["rock_token_id"]) == set(rocks["token_id"])
    assert not set(ctl["control_token_id"]) & set(rocks["token_id"])  # no rock is its own control
    assert ctl["control_token_id"].is_unique  # without replacement
    ratio = ctl["control_freq"].sum() / rocks["freq"].sum()
    assert abs(ratio - 1) <= 0.10
    assert ctl.attrs["total_ratio"] == pytest.approx(ratio)
    # pairs are matched, not just the totals
    assert np.median(np.abs(ctl["log_freq_ratio"])) < 0.1
    assert np.abs(ctl["log_freq_ratio"]).max() < np.log(2)
    # controls' own stats agree with token_stats
    m = ctl.merge(ts, left_on="control_token_id", right_on="token_id")
    assert (m["control_freq"] == m["freq"]).all() and (m["control_qwen3_id"] == m["qwen3_id"]).all()


def test_controls_are_deterministic_under_seed_and_random_among_ties():
    ts = _zipf_vocab(V=3000)
    rocks = rock_set(ts, 50)
    a = frequency_matched_controls(ts, rocks, seed=5)
    b = frequency_matched_controls(ts.sample(frac=1, random_state=1), rocks.iloc[::-1], seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs
    # many exact frequency ties: the seed decides among them
    flat = pd.DataFrame({"token_id": np.arange(200), "token": [f"w{i}" for i in range(200)],
                         "freq": [100] * 200, "mean_loss": np.linspace(1, 0, 200)})
    flat["R"] = flat["freq"] * flat["mean_loss"]
    fr = rock_set(flat, 10)
    runs = [frequency_matched_controls(flat, fr, seed=s) for s in range(4)]
    assert len({tuple(c["control_token_id"]) for c in runs}) > 1
    for c in runs:
        assert (c["control_freq"] == 100).all() and not set(c["control_token_id"]) & set(fr["token_id"])


def test_controls_repair_when_nearest_matching_misses_the_total(caplog):
    # nearest-frequency gives 10 x 700 (ratio 0.70); taking both 3000s gives 1.16; one 3000 gives 0.93
    freq = [1000] * 10 + [700] * 20 + [3000] * 2
    ts = pd.DataFrame({"token_id": np.arange(len(freq)), "token": [f"x{i}" for i in range(len(freq))],
                       "freq": freq, "mean_loss": [1.0] * 10 + [0.01] * 22})
    ts["R"] = ts["freq"] * ts["mean_loss"]
    rocks = rock_set(ts, 10)
    with caplog.at_level(logging.WARNING, logger="rocktokens.rocks.sets"):
        ctl = frequency_matched_controls(ts, rocks, seed=0)
    assert ctl.attrs["repaired_swaps"] >= 1 and "swaps" in caplog.text
    assert ctl["control_freq"].sum() == 3000 + 9 * 700
    assert abs(ctl.attrs["total_ratio"] - 1) <= 0.10


def test_controls_infeasible_vocabulary_raises_with_ratio():
    # the rocks are the only frequent tokens: every non-rock is 10x rarer
    ts = pd.DataFrame({"token_id": np.arange(40), "token": [f"x{i}" for i in range(40)],
                       "freq": [1000] * 10 + [100] * 30, "mean_loss": [1.0] * 40})
    ts["R"] = ts["freq"] * ts["mean_loss"]
    rocks = rock_set(ts, 10)
    with pytest.raises(ValueError, match=r"largest possible total ratio achieved is 0\.100"):
        frequency_matched_controls(ts, rocks, seed=0)
    with pytest.raises(ValueError, match="non-rock token types"):
        frequency_matched_controls(ts.head(15), rock_set(ts.head(15), 10), seed=0)
    # rare rocks among frequent non-rocks
    ts2 = ts.assign(mean_loss=[100.0] * 10 + [0.01] * 30, freq=[10] * 10 + [100] * 30)
    ts2["R"] = ts2["freq"] * ts2["mean_loss"]
    with pytest.raises(ValueError, match=r"smallest possible total ratio achieved is 10\.000"):
        frequency_matched_controls(ts2, rock_set(ts2, 10), seed=0)
    # pure Zipf with KL independent of frequency: the top-R tokens are the most frequent ones, so no
    # one-for-one non-rock set can carry as many occurrences
    z = _zipf_vocab(interleaved=False)
    with pytest.raises(ValueError, match=r"cannot frequency-match 100 controls within ±10%"):
        frequency_matched_controls(z, rock_set(z, 100), seed=0)


def test_controls_non_strict_returns_the_closest_set_flagged():
    ts = pd.DataFrame({"token_id": np.arange(40), "token": [f"x{i}" for i in range(40)],
                       "freq": [1000] * 10 + [100] * 25 + [50] * 5, "mean_loss": [1.0] * 40})
    ts["R"] = ts["freq"] * ts["mean_loss"]
    rocks = rock_set(ts, 10)
    c = frequency_matched_controls(ts, rocks, seed=0, strict=False)
    assert len(c) == 10 and not c["within_tol"].any()
    assert c["total_ratio"].iloc[0] == pytest.approx(0.1)  # the 10 most frequent non-rocks (all 100s)
    assert set(c["control_freq"]) == {100} and not set(c["control_token_id"]) & set(rocks["token_id"])
    ok = frequency_matched_controls(_zipf_vocab(), rock_set(_zipf_vocab(), 100), seed=0, strict=False)
    assert ok["within_tol"].all() and 0.9 <= ok["total_ratio"].iloc[0] <= 1.1


# --------------------------------------------------------------------------------------------- stability

def test_jaccard():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == pytest.approx(0.5)
    assert jaccard([1, 2], [1, 2]) == 1.0
    assert jaccard([], []) == 1.0
    assert jaccard([1], []) == 0.0


class _Corpus:
    """An in-memory token table (problem, token, loss) with the plain-Python aggregation; records its calls."""

    def __init__(self, n_problems=60, V=300, seed=0):
        rng = np.random.default_rng(seed)
        p = 1 / np.arange(1, V + 1) ** 1.1
        base = rng.lognormal(-1.0, 1.0, size=V)
        rows = []
        for pid in range(n_problems):
            toks = rng.choice(V, size=150, p=p / p.sum())
            rows.append(pd.DataFrame({"problem_id": pid, "token_id": toks,
                                      "loss": base[toks] * rng.lognormal(0, 0.8, size=toks.size)}))
        self.table = pd.concat(rows, ignore_index=True)
        self.ids = list(range(n_problems))
        self.calls = []

    def __call__(self, problem_ids):
        self.calls.append(sorted(problem_ids))
        t = self.table[self.table["problem_id"].isin(set(problem_ids))]
        g = t.groupby("token_id")["loss"].agg(["size", "mean"]).reset_index()
        g.columns = ["token_id", "freq", "mean_loss"]
        g["R"] = g["freq"] * g["mean_loss"]
        return g[["token_id", "R"]]  # only what the sweep needs (the aggregator's extras=False frame)


def test_stability_is_deterministic_and_full_subset_is_exact(caplog):
    c = _Corpus()
    with caplog.at_level(logging.WARNING, logger="rocktokens.rocks.sets"):
        s1 = stability(c, c.ids, Ks=[5, 20], ns=(10, 30, 60, 100), B=4, seed=11)
    assert "dropping n=[100]" in caplog.text
    assert sorted(s1["n"].unique()) == [10, 30, 60]
    assert len(s1) == 3 * 2 * 4 and list(s1.columns) == ["n", "K", "b", "jaccard"]
    s2 = stability(_Corpus(), list(reversed(c.ids)), Ks=[20, 5], ns=(60, 30, 10), B=4, seed=11)
    pd.testing.assert_frame_equal(s1, s2)  # same seed → same frame, whatever the order of ids / ns / Ks
    assert (s1.loc[s1["n"] == 60, "jaccard"] == 1.0).all()  # n = all problems
    assert (s1.loc[s1["n"] == 10, "jaccard"] < 1.0).any()
    s3 = stability(c, c.ids, Ks=[5, 20], ns=(10, 30), B=4, seed=12)
    assert not s3["jaccard"].equals(s1.loc[s1["n"] < 60, "jaccard"].reset_index(drop=True))
    with pytest.raises(ValueError, match="no subset size"):
        stability(c, c.ids[:5], Ks=[5], ns=(10,), B=2, seed=0)


def test_stability_resamples_are_independent_not_nested():
    c = _Corpus(n_problems=40)
    stability(c, c.ids, Ks=[10], ns=(10, 20), B=6, seed=3)
    calls = c.calls[1:]  # first call: all problems (reference)
    assert c.calls[0] == c.ids
    sub10, sub20 = calls[:6], calls[6:]
    assert all(len(s) == 10 for s in sub10) and all(len(s) == 20 for s in sub20)
    assert all(len(set(s)) == len(s) for s in calls)  # without replacement within a resample
    assert len({tuple(s) for s in sub10}) == 6  # resamples of the same n differ
    # nested prefixes of one shuffle would make every n=10 subset part of the matching n=20 subset
    assert sum(set(a) <= set(b) for a, b in zip(sub10, sub20)) < 6
    # the draw for (seed, n, b) does not depend on which other n are swept
    c2 = _Corpus(n_problems=40)
    stability(c2, c2.ids, Ks=[10], ns=(20,), B=6, seed=3)
    assert c2.calls[1:] == sub20


def test_stability_summary_and_choose_K():
    stab = pd.DataFrame({"n": [50, 50, 100, 100], "K": [10] * 4, "b": [0, 1, 0, 1], "jaccard": [0.6, 0.8, 0.9, 1.0]})
    s = stability_summary(stab)
    row = s.set_index("n").loc[50]
    assert row["jaccard_mean"] == pytest.approx(0.7) and row["B"] == 2
    assert 0.6 <= row["jaccard_lo"] < row["jaccard_hi"] <= 0.8
    assert s["jaccard_avg"].tolist() == pytest.approx([0.825, 0.825])
    with pytest.raises(ValueError, match="empty"):
        stability_summary(stab.head(0))


def _summary(avg_by_K, ns=(50, 100, 200)):
    rows = []
    for K, avg in avg_by_K.items():
        spread = np.linspace(-0.05, 0.05, len(ns))  # per-n means that average to `avg`
        rows += [{"K": K, "n": n, "jaccard_mean": avg + d, "jaccard_lo": avg + d - 0.1, "jaccard_hi": avg + d + 0.1,
                  "B": 20} for n, d in zip(ns, spread)]
    return pd.DataFrame(rows)


def test_choose_K_rule_on_hand_made_table():
    summary = _summary({25: 0.90, 50: 0.81, 100: 0.72, 150: 0.60, 200: 0.57})
    cov = pd.DataFrame({"K": np.arange(1, 301), "coverage": np.linspace(0.01, 1.0, 300)})
    K, ev = choose_K(summary, cov, [25, 50, 100, 150, 200])
    assert K == 100 and ev["rule_met"] and ev["K"] == 100
    assert ev["jaccard_avg"] == pytest.approx(0.72) and ev["coverage"] == pytest.approx(coverage_at(cov, 100))
    assert ev["ns"] == [50, 100, 200] and len(ev["candidates"]) == 5 and "largest candidate" in ev["rule"]
    assert choose_K(summary, cov, [25, 50, 100, 150, 200], min_jaccard=0.85)[0] == 25
    assert choose_K(summary, cov, [150, 200], min_jaccard=0.58)[0] == 150
    # nothing reaches the bar: the most stable candidate, flagged, or an error
    K, ev = choose_K(summary, cov, [100, 150, 200], min_jaccard=0.95)
    assert K == 100 and ev["rule_met"] is False
    with pytest.raises(ValueError, match="reaches average Jaccard"):
        choose_K(summary, cov, [100, 150], min_jaccard=0.95, fallback=None)
    with pytest.raises(ValueError, match="not in the stability summary"):
        choose_K(summary, cov, [75])
