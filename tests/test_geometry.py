"""Gradient geometry (Eq. 16), group selection on disjoint splits, persistence, tests vs scipy, Figure 3."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rocktokens.workflow.config import GeometryConfigError, geometry_settings
from rocktokens.geometry.gradients import (
    GeometryResult,
    GradientAccumulator,
    build_groups,
    contrib,
    cosine,
    mann_whitney,
    measurement_problems,
    select_groups,
    split_problems,
    stream_gradient_geometry,
    wilcoxon_paired,
)
from rocktokens.core.losses import reverse_kl
from rocktokens.geometry.persistence import persistence_summary, persistence_table


# ----------------------------------------------------------------------------- ḡ against autograd
def _autograd_gbar(z_s, z_t, labels, tau=1.0):
    """Per-position ∂ D_KL(softmax(z_s/τ) ‖ softmax(z_t/τ)) / ∂ z_s by autograd, averaged per label."""
    z = z_s.clone().requires_grad_(True)
    d = reverse_kl(F.log_softmax(z / tau, -1), F.log_softmax(z_t / tau, -1))
    rows = torch.stack([torch.autograd.grad(d[i], z, retain_graph=True)[0][i] for i in range(len(labels))])
    return {int(t): rows[labels == t].mean(0).double().numpy() for t in labels.unique()}


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_gbar_and_balanced_direction_match_autograd(tau):
    g = torch.Generator().manual_seed(0)
    N, V = 60, 9
    z_s, z_t = torch.randn(N, V, generator=g, dtype=torch.float64) * 2, torch.randn(N, V, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 6, (N,), generator=g)  # types 0..5 occur, 6..8 never
    ref = _autograd_gbar(z_s, z_t, labels, tau)
    counts = np.bincount(labels.numpy(), minlength=V)
    acc = GradientAccumulator(V, [0, 3, 7], counts)
    for a in range(0, N, 16):  # streamed in chunks
        sl = slice(a, a + 16)
        acc.add(F.log_softmax(z_s[sl] / tau, -1), F.log_softmax(z_t[sl] / tau, -1), labels[sl], tau)
    res = acc.result()
    np.testing.assert_allclose(res.gbar[0], ref[0], atol=1e-12)
    np.testing.assert_allclose(res.gbar[1], ref[3], atol=1e-12)
    assert res.n.tolist() == [counts[0], counts[3], 0] and not res.gbar[2].any()
    np.testing.assert_allclose(res.G, sum(ref.values()), atol=1e-12)  # G_balanced = Σ_t ḡ_t, every type once
    assert res.n_types == 6
    tab = res.table()
    assert tab.loc[0, "grad_norm"] == pytest.approx(np.linalg.norm(ref[0]))
    assert tab.loc[1, "cos_balanced"] == pytest.approx(cosine(ref[3], sum(ref.values())))
    assert tab.loc[1, "cos_balanced_excl"] == pytest.approx(cosine(ref[3], sum(v for k, v in ref.items() if k != 3)))
    assert math.isnan(tab.loc[2, "grad_norm"])  # type 7 absent: not measured


def test_accumulator_rejects_counts_that_disagree():
    acc = GradientAccumulator(4, [1], np.array([0, 2, 1, 0]))
    z = torch.zeros(2, 4)
    acc.add(F.log_softmax(z, -1), F.log_softmax(z, -1), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="disagree"):
        acc.result()
    with pytest.raises(ValueError, match="count 0"):
        acc.add(F.log_softmax(z, -1), F.log_softmax(z, -1), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="duplicates"):
        GradientAccumulator(4, [1, 1], np.ones(4))


def test_cosine_and_contrib_on_a_hand_made_case():
    a, b = np.array([3.0, 4.0, 0.0]), np.array([0.0, 0.0, 2.0])
    G = a + b  # (3, 4, 2), ‖G‖ = √29
    res = GeometryResult([10, 11], np.array([4, 1]), np.stack([a, b]), np.array([6.0, 2.0]), G, 2,
                         np.zeros(12), np.zeros(12))
    t = res.table().set_index("token_id")
    assert t.loc[10, "grad_norm"] == pytest.approx(5.0)
    assert t.loc[10, "cos_balanced"] == pytest.approx(25 / (5 * math.sqrt(29)))
    assert t.loc[10, "cos_balanced_excl"] == pytest.approx(0.0)  # a ⟂ b: without its own term nothing aligns
    assert t.loc[10, "contrib"] == pytest.approx(4 * 5 * 5 / math.sqrt(29))  # Eq. 16: n·‖ḡ‖·cos
    assert t.loc[11, "cos_balanced"] == pytest.approx(4 / (2 * math.sqrt(29)))
    assert t.loc[11, "contrib"] == pytest.approx(1 * 2 * 2 / math.sqrt(29))
    assert contrib([2, 3], [1.0, 2.0], [0.5, -1.0]).tolist() == [1.0, -6.0]
    assert math.isnan(cosine([0, 0], [1, 2]))


def _tiny(seed, vocab, moe=False):
    from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    kw = dict(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
              head_dim=8, intermediate_size=32, max_position_embeddings=64, initializer_range=0.3, pad_token_id=0)
    if moe:
        return Qwen3MoeForCausalLM(Qwen3MoeConfig(**kw, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                                                  decoder_sparse_step=1)).eval()
    return Qwen3ForCausalLM(Qwen3Config(**kw)).eval()


def test_streamed_pass_on_tiny_models_matches_full_logits():
    from rocktokens.core.sequences import TokenSequence

    V = 12
    student, teacher = _tiny(1, V), _tiny(2, V, moe=True)
    g = torch.Generator().manual_seed(3)
    seqs = []
    for _ in range(5):
        L = int(torch.randint(6, 15, (1,), generator=g))
        seqs.append(TokenSequence(ids=torch.randint(1, V, (L,), generator=g).tolist(), prompt_len=2))
    z_s, z_t, lab = [], [], []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s.ids])
            z_s.append(student(ids).logits[0, s.prompt_len - 1:-1].double())
            z_t.append(teacher(ids).logits[0, s.prompt_len - 1:-1].double())
            lab.append(torch.tensor(s.ids[s.prompt_len:]))
    z_s, z_t, lab = torch.cat(z_s), torch.cat(z_t), torch.cat(lab)
    ref = _autograd_gbar(z_s, z_t, lab)
    groups = [int(lab[0]), int(lab[-1])] if int(lab[0]) != int(lab[-1]) else [int(lab[0])]
    res = stream_gradient_geometry(student, teacher, seqs, groups, chunk=7, batch_size=2, progress=False)
    for k, t in enumerate(groups):
        np.testing.assert_allclose(res.gbar[k], ref[t], atol=2e-6)
    np.testing.assert_allclose(res.G, sum(ref.values()), atol=1e-5)
    assert int(res.counts.sum()) == len(lab)


# ----------------------------------------------------------------------------- splits and groups
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_never_overlaps_and_is_deterministic(fraction, seed):
    ids = [f"p{i}" for i in range(37)]
    sel, meas = split_problems(ids, fraction, seed)
    assert not set(sel) & set(meas) and sorted(sel + meas) == sorted(ids)
    assert sel and meas and len(sel) == round(fraction * 37)
    assert split_problems(list(reversed(ids)), fraction, seed) == (sel, meas)  # order of input irrelevant
    assert split_problems(ids, fraction, seed + 10) != (sel, meas)


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        split_problems(["a"], 0.5, 0)
    with pytest.raises(ValueError, match="fraction"):
        split_problems(["a", "b"], 1.0, 0)
    with pytest.raises(ValueError, match="overlap"):
        measurement_problems(pd.DataFrame({"problem_id": ["a", "a"], "split": ["selection", "measurement"]}))


def _stats(V=80, seed=0):
    rng = np.random.default_rng(seed)
    freq = np.maximum(1, (2000 / np.arange(1, V + 1) ** 1.1)).astype(int)
    loss = rng.lognormal(0, 0.7, V)
    return pd.DataFrame({"token_id": np.arange(V), "qwen3_id": np.arange(V), "token": [f"t{i}" for i in range(V)],
                         "freq": freq, "mean_loss": loss, "R": freq * loss})


def test_select_groups_disjoint_and_by_their_rules():
    st = _stats()
    groups, info = select_groups(st, 8, seed=1, min_freq=5, n_high_kl=6)
    sizes = groups.groupby("group").size().to_dict()
    assert sizes == {"rock": 8, "high_kl": 6, "random": 8}
    assert not groups["token_id"].duplicated().any()
    rocks = groups.loc[groups.group == "rock", "token_id"]
    assert set(rocks) == set(st.nlargest(8, "R")["token_id"])
    hk = groups[groups.group == "high_kl"]
    eligible = st[(st.freq >= 5) & ~st.token_id.isin(rocks)]
    assert set(hk["token_id"]) == set(eligible.nlargest(6, "mean_loss")["token_id"])
    assert "control_total_ratio" in info
    with pytest.raises(ValueError, match="min_freq"):
        select_groups(st, 8, seed=1, min_freq=10_000)


def _token_table(tmp_path, n_problems=20, late=None):
    """A hive token table; problem p also holds one occurrence of its own token 10+p with a very high KL.
    ``late``: a function giving the last scorer's (opd-2's) rkl from the base column instead of the scaling."""
    rows = []
    for p in range(n_problems):
        for pos in range(30):
            tok = [1, 2, 3, 4, 1, 2][pos % 6]
            rows.append((f"q{p:02d}", pos, tok, 0.2 + 0.1 * (tok in (1, 2))))
        rows.append((f"q{p:02d}", 30, 10 + p, 5.0 + 0.01 * p))
    return write_token_table(tmp_path, pd.DataFrame(rows, columns=["problem_id", "position", "token_id", "rkl"]),
                             late)


def write_token_table(root, df, late=None):
    """``df`` (problem_id, position, token_id, rkl) as a hive token table under ``root/kl`` with the scorers
    stage1, opd-1, opd-2 (rkl × 1, 0.8, 0.6; ``late(df)``: opd-2's rkl instead). Returns the table's folder."""
    for k, scorer in enumerate(["stage1", "opd-1", "opd-2"]):
        rkl = late(df) if late is not None and scorer == "opd-2" else df.rkl * (1 - 0.2 * k)
        t = df.assign(traj_ckpt="opd-2", benchmark="math", sample=0, qwen3_id=df.token_id, token=df.token_id.astype(str),
                      logp_student=-1.0, logp_teacher=-1.0, log_ratio=0.0, rkl=rkl, fkl=0.1,
                      entropy_student=1.0, entropy_teacher=1.0)
        d = root / "kl" / f"scorer={scorer}"
        d.mkdir(parents=True)
        t.to_parquet(d / "part-0.parquet")
    return root / "kl"


def test_groups_are_selected_on_the_selection_split_only(tmp_path):
    tdir = _token_table(tmp_path)
    rocks_cfg = {"loss": "rkl", "score": "R", "control_tol": 0.5, "duckdb": {"threads": 1}}
    cfg = {"selection_fraction": 0.5, "high_kl": {"min_freq": 1, "n": 3}}
    split, groups, info = build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=4)
    assert info["high_kl_scorer"] == "opd-2" and info["rock_score"] == "R"  # no scorer named: post
    sel = set(split.loc[split.split == "selection", "problem_id"])
    meas = set(measurement_problems(split))
    assert not sel & meas and len(sel) == 10 and info["n_selection_problems"] == 10
    assert set(groups.loc[groups.group == "rock", "token_id"]) == {1, 2}
    hk = set(groups.loc[groups.group == "high_kl", "token_id"])
    own = {10 + int(p[1:]) for p in sel}
    # the three hottest problem-specific tokens of the SELECTION problems (a measurement problem's hot token,
    # though as hot, is never seen by the selection)
    assert hk == set(sorted(own)[-3:])
    assert build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=4)[1].equals(groups)
    assert not build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=5)[0].equals(split)

    from rocktokens.geometry.persistence import run_persistence

    table, summary = run_persistence(tdir, groups, split, "opd-1", "opd-2", rocks_cfg)
    assert not set(table["token_id"]) & hk  # measured on the other split, where they never occur
    assert set(table["group"]) <= {"rock", "high_kl", "random"}
    np.testing.assert_allclose(table["kl_late"] / table["kl_early"], 0.6 / 0.8)  # the scorers' scaling
    assert summary["early"] == "opd-1" and summary["groups"]["rock"]["n_types"] >= 1


def test_high_kl_selection_never_reads_the_late_checkpoint():
    """select_on early: the late (= post) checkpoint's losses can be garbage and the high-KL group is the same."""
    st = _stats()
    early = st.assign(mean_loss=np.random.default_rng(5).lognormal(0, 0.7, len(st)))
    early["R"] = early["freq"] * early["mean_loss"]
    kw = dict(seed=1, min_freq=5, n_high_kl=6)
    groups, _ = select_groups(st, 8, hk_stats=early, **kw)
    rocks = set(groups.loc[groups.group == "rock", "token_id"])
    hk = groups[groups.group == "high_kl"]
    eligible = early[(early.freq >= 5) & ~early.token_id.isin(rocks)]
    assert hk["token_id"].tolist() == eligible.nlargest(6, "mean_loss")["token_id"].tolist()
    np.testing.assert_array_equal(hk["sel_mean_loss"], eligible.nlargest(6, "mean_loss")["mean_loss"])
    assert set(hk["token_id"]) != set(select_groups(st, 8, **kw)[0].query("group == 'high_kl'")["token_id"])
    for garbage in (np.nan, -1.0):  # the late losses: NaN or garbage; R (which defines the rocks) kept
        g2, _ = select_groups(st.assign(mean_loss=garbage), 8, hk_stats=early, **kw)
        pd.testing.assert_frame_equal(g2.loc[g2.group == "high_kl"], hk)


def test_build_groups_selects_high_kl_on_the_early_scorer_only(tmp_path):
    base = _token_table(tmp_path / "a")
    # the late scorer (opd-2 = post) reverses the hot tokens' order: 5.00 + 0.01 p becomes 5.19 - 0.01 p
    flipped = _token_table(tmp_path / "b", late=lambda df: np.where(df.token_id >= 10, 10.19 - df.rkl, df.rkl * 0.6))
    rocks_cfg = {"loss": "rkl", "score": "R", "control_tol": 0.5, "duckdb": {"threads": 1}}
    cfg = {"selection_fraction": 0.5, "high_kl": {"min_freq": 1, "n": 3, "select_on": "early"}}
    hk = {}
    for name, tdir in (("base", base), ("flipped", flipped)):
        for on in ("opd-1", "opd-2"):
            split, groups, info = build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=4, high_kl_scorer=on)
            assert info["high_kl_scorer"] == on
            hk[name, on] = set(groups.loc[groups.group == "high_kl", "token_id"])
    own = sorted(10 + int(p[1:]) for p in split.loc[split.split == "selection", "problem_id"])
    assert hk["base", "opd-1"] == hk["flipped", "opd-1"] == set(own[-3:])  # early: the late column is never read
    assert hk["base", "opd-2"] == set(own[-3:]) and hk["flipped", "opd-2"] == set(own[:3])  # post follows it


def test_build_groups_ranks_the_rocks_by_R_ctx_when_it_is_in_force(tmp_path):
    from rocktokens.tokens.aggregate import Aggregator
    from rocktokens.rocks.analysis import paired_losses, rock_scores
    from rocktokens.rocks.sets import top_k_ids

    tdir = _token_table(tmp_path)
    rocks_cfg = {"loss": "rkl", "score": "R_ctx", "control_tol": 0.5, "duckdb": {"threads": 1}, "context": {"w": 1}}
    cfg = {"selection_fraction": 0.5, "high_kl": {"min_freq": 1, "n": 3}}
    with pytest.raises(ValueError, match="pre-OPD"):
        build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=4)
    split, groups, info = build_groups(tdir, 2, cfg, rocks_cfg, "opd-2", seed=4, pre="stage1")
    sel = split.loc[split.split == "selection", "problem_id"].tolist()
    with Aggregator.from_config(tdir, rocks_cfg) as agg:
        st = rock_scores(agg, paired_losses(tdir, "stage1", "opd-2", "rkl"), "opd-2", "rkl", {"w": 1}, problems=sel)[0]
    assert info["rock_score"] == "R_ctx"
    assert groups.loc[groups.group == "rock", "token_id"].tolist() == top_k_ids(st, 2, "R_ctx")


def test_geometry_settings_resolve_and_reject():
    cfg = {"stage2": {"n_checkpoints": 4}, "tokens": {"scorers": ["stage1", "opd-*"]},
           "geometry": {"checkpoint": "post", "persistence": {"early": "opd-1", "late": "post"},
                        "selection_fraction": 0.5, "high_kl": {"min_freq": 5, "select_on": "early"}}}
    assert geometry_settings(cfg) == {"checkpoint": "opd-4", "early": "opd-1", "late": "opd-4",
                                      "high_kl_scorer": "opd-1"}
    cfg["geometry"]["high_kl"]["select_on"] = "post"
    assert geometry_settings(cfg)["high_kl_scorer"] == "opd-4"
    cfg["geometry"]["high_kl"]["select_on"] = "late"
    with pytest.raises(GeometryConfigError, match="select_on"):
        geometry_settings(cfg)
    cfg["geometry"]["high_kl"]["select_on"] = "early"
    cfg["geometry"]["persistence"] = {"early": "opd-4", "late": "opd-2"}
    with pytest.raises(GeometryConfigError, match="before"):
        geometry_settings(cfg)
    cfg["geometry"]["persistence"] = {"early": "opd-1", "late": "opd-9"}
    with pytest.raises(GeometryConfigError, match="persistence.late"):
        geometry_settings(cfg)
    cfg["geometry"]["persistence"] = {"early": "opd-1", "late": "opd-3"}
    cfg["tokens"]["scorers"] = ["stage1", "opd-4"]
    with pytest.raises(GeometryConfigError, match="not a token-table scorer"):
        geometry_settings(cfg)


# ----------------------------------------------------------------------------- statistics vs scipy
X = np.array([0.11, 0.52, 0.33, 0.91, 0.27, 0.64, 0.05, 0.78, 0.44, 0.19])
Y = np.array([0.61, 0.48, 0.83, 1.02, 0.95, 0.57, 0.71, 1.20, 0.66, 0.88, 0.99, np.nan])


def test_mann_whitney_matches_scipy():
    from scipy.stats import mannwhitneyu

    r = mann_whitney(X, Y)
    ref = mannwhitneyu(X, Y[:-1], alternative="two-sided")
    assert r["U"] == ref.statistic and r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["n_b"] == 11 and r["median_a"] == np.median(X)
    assert math.isnan(mann_whitney([], Y)["p"])


def test_wilcoxon_matches_scipy():
    from scipy.stats import wilcoxon

    y = X + np.array([0.3, -0.1, 0.25, 0.4, 0.05, 0.2, 0.15, -0.05, 0.35, 0.1])
    r = wilcoxon_paired(X, y)
    ref = wilcoxon(X, y, alternative="two-sided")
    assert r["W"] == ref.statistic and r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert r["median_diff"] == pytest.approx(np.median(y - X))
    with_nan = wilcoxon_paired(np.r_[X, np.nan], np.r_[y, 1.0])
    assert with_nan["p"] == r["p"] and with_nan["n"] == 10
    assert math.isnan(wilcoxon_paired(X, X)["p"])  # no differences: no test
    with pytest.raises(ValueError, match="differ in length"):
        wilcoxon_paired(X, Y)


def test_persistence_table_and_summary():
    groups = pd.DataFrame({"token_id": [1, 2, 3, 4, 9], "token": list("abcdz"),
                           "group": ["rock", "rock", "high_kl", "high_kl", "random"]})
    early = pd.DataFrame({"token_id": [1, 2, 3, 4, 5], "freq": [10, 8, 2, 3, 1], "mean_loss": [0.2, 0.3, 2.0, 1.5, 1]})
    late = early.assign(mean_loss=[0.19, 0.31, 0.8, 0.7, 1])
    t = persistence_table(groups, early, late)
    assert t["token_id"].tolist() == [1, 2, 3, 4]  # token 9 never occurs on the split: not measured
    np.testing.assert_allclose(t["delta_kl"], [-0.01, 0.01, -1.2, -0.8])
    s = persistence_summary(t, "opd-1", "opd-7")
    assert s["groups"]["high_kl"]["median_kl_early"] == pytest.approx(1.75)
    assert s["groups"]["high_kl"]["median_kl_late"] == pytest.approx(0.75)
    assert s["groups"]["random"]["n_types"] == 0
    with pytest.raises(ValueError, match="different occurrences"):
        persistence_table(groups, early, late.assign(freq=1))


# ----------------------------------------------------------------------------- figures
def test_figure3_and_probe_figure_write_pngs(tmp_path):
    from matplotlib.image import imread

    from rocktokens.core.plotting import FigureInputError
    from rocktokens.geometry.figures import figure3, figure_optimizer_probe

    rng = np.random.default_rng(0)
    grp = ["rock"] * 15 + ["high_kl"] * 15 + ["random"] * 15
    geo = pd.DataFrame({"group": grp, "n": rng.integers(1, 50, 45), "grad_norm": rng.lognormal(-2, 1, 45),
                        "cos_balanced": rng.normal(0.03, 0.05, 45), "cos_balanced_excl": rng.normal(0.02, 0.05, 45)})
    per = pd.DataFrame({"group": grp, "kl_early": rng.lognormal(0, 0.5, 45)})
    per["kl_late"] = per.kl_early * rng.uniform(0.4, 1.05, 45)
    per["delta_kl"] = per.kl_late - per.kl_early
    out = figure3(geo, per, tmp_path / "f3.png")
    img = imread(out)
    assert img.shape[0] > 600 and img[..., :3].std() > 0.05
    with pytest.raises(FigureInputError):
        figure3(geo.head(0), per, tmp_path / "x.png")
    probe = pd.DataFrame([{"update": u, "group": g, "param": "tied", "eff_lr_gmean": 1e-3 * (1 + (g == "rock")),
                           "gain": 1.0 + u / 10} for u in range(1, 6) for g in ("rock", "high_kl", "control")])
    hist = pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.8, 0.7]})
    arms = pd.DataFrame({"group": grp * 2, "arm": ["baseline"] * 45 + ["sgd"] * 45,
                         "rel_reduction": rng.normal(0.1, 0.05, 90)})
    out = figure_optimizer_probe({"baseline": probe, "sgd": probe}, {"baseline": hist, "sgd": hist}, arms,
                                 tmp_path / "probe.png")
    assert imread(out).shape[0] > 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f3.png", "probe.png"]


# ----------------------------------------------------------------------------- the smoke DAG's artifacts
@pytest.mark.slow
def test_smoke_geometry_artifacts(smoke_results):
    r = smoke_results / "geometry"
    split = pd.read_parquet(r / "split.parquet")
    sel = set(split.loc[split.split == "selection", "problem_id"])
    assert sel and not sel & set(measurement_problems(split))
    groups = pd.read_parquet(r / "groups.parquet")
    assert not groups["token_id"].duplicated().any() and set(groups["group"]) == {"rock", "high_kl", "random"}
    summ = json.loads((r / "gradients.json").read_text())
    assert summ["rkl_check_max_abs_diff"] < 1e-4  # the streamed pass reproduces the token table's KL
    assert summ["n_measurement_problems"] == len(split) - len(sel)
    pers = json.loads((r / "persistence.json").read_text())
    assert pers["early"] != pers["late"]
    assert (r / "finding.md").read_text().startswith("# Gradient geometry")
    assert (smoke_results / "figures" / "figure3.png").stat().st_size > 10_000
