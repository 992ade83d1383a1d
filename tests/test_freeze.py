"""Rock-freeze training (§4, Eq. 18–19): label-aligned masks, one normaliser for every λ, the matched random
control, real skipping of the frozen positions' head + KL, the probe hook and its resume, the SGD lr match."""
import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from rocktokens.freeze.arms import (
    ArmSpec,
    ArmWeights,
    FreezeConfigError,
    RockMasker,
    arm_accuracy,
    arm_specs,
    check_freeze_config,
    frequency_bins,
    lr_match_target,
    masked_runs,
    next_lr,
    place_runs,
    planted_set,
    rock_freeze_arm,
    random_window_mask,
    share_summary,
)
from rocktokens.core.losses import LossSpec, chunked_head_loss
from rocktokens.models import load_model
from rocktokens.core.sequences import TokenSequence, collate
from rocktokens.training.stages import OPDConfig, run_opd
from rocktokens.core.prompts import encode_prompt
from rocktokens.training.trainer import OptimConfig, Trainer
from rocktokens.rocks.windows import context_columns, elevated_columns

REPO = Path(__file__).resolve().parents[1]


def _no_contexts(w=2):
    return pd.DataFrame({"token_id": pd.Series([], dtype="int64"),
                         **{c: pd.Series([], dtype="int64") for c in context_columns(w)},
                         **{e: pd.Series([], dtype=bool) for e in elevated_columns(w)}})


def _contexts(rows, w=2):
    """rows: [(token_id, [2w context ids])], every stored neighbour elevated"""
    return pd.DataFrame([[v, *ctx, *[True] * 2 * w] for v, ctx in rows],
                        columns=["token_id", *context_columns(w), *elevated_columns(w)])


# ----------------------------------------------------------------------------- masks and weights
def test_rock_at_label_t_zeroes_the_term_predicting_x_t_not_x_t_plus_1():
    rock = 7
    masker = RockMasker([rock], _no_contexts(), w=2, gamma=0.5)
    prompt, resp = [1, 2, 3], [4, 7, 5, 6]
    s = TokenSequence(ids=prompt + resp, prompt_len=3, meta={"seed": 0})
    s.weights = ArmWeights(ArmSpec("freeze", 0.0), masker)(s)
    assert s.weights == [1.0, 0.0, 1.0, 1.0]
    b = collate([s], pad_id=0)
    i = int((b.label_index == 4).nonzero())  # label x_4 = 7, the rock
    assert b.labels[i] == rock and b.weights[i] == 0.0
    assert b.cols[i] == 3  # the logit at position t-1 = 3 predicts x_4
    j = int((b.label_index == 5).nonzero())  # x_5 follows the rock: trained
    assert b.weights[j] == 1.0 and b.cols[j] == 4
    assert s.meta["n_masked"] == 1 and s.meta["n_rock_tokens"] == 1


def test_window_occurrence_freezes_its_segment_and_soft_lambda_only_scales_the_frozen_set():
    # stored context of 7: (1, 2 | 3, 4); an occurrence with >= gamma*2w = 2 agreeing offsets opens W(7), over the
    # contiguous offsets that agree (rocktokens.rocks.windows)
    masker = RockMasker([7], _contexts([(7, [1, 2, 3, 4])]), w=2, gamma=0.5)
    resp = [9, 1, 2, 7, 3, 8, 9, 9, 7, 9]  # the first 7 matches (1 2 | 3, 3 of 4), the second (9, 9 | 9, PAD) does not
    m = masker.mask(resp)
    assert m.tolist() == [False, True, True, True, True, False, False, False, True, False]
    ws = {lam: masker.weights(resp, lam) for lam in (0.0, 0.3, 1.0)}
    for lam, w in ws.items():
        assert np.all(w[m] == lam) and np.all(w[~m] == 1.0)


def test_tokens_arm_freezes_the_rock_tokens_only_and_reports_the_rock_mask():
    masker = RockMasker([7], _contexts([(7, [1, 2, 3, 4])]), w=2, gamma=0.5)
    resp = [9, 1, 2, 7, 3, 8, 9, 9, 7, 9]  # R ∪ W_R = positions 1-4 and 8 (above); R = positions 3 and 8
    seqs = {}
    for windows in ("tokens", "rock"):
        s = TokenSequence(ids=[0, 0] + resp, prompt_len=2, meta={"seed": 0})
        s.weights = ArmWeights(ArmSpec(windows, 0.0, windows=windows), masker)(s)
        seqs[windows] = s
    t, r = seqs["tokens"], seqs["rock"]
    assert [i for i, x in enumerate(t.weights) if x == 0] == [3, 8]
    assert [i for i, x in enumerate(r.weights) if x == 0] == [1, 2, 3, 4, 8]
    assert t.meta["n_masked"] == t.meta["n_rock_tokens"] == 2 and t.meta["n_rock_mask"] == r.meta["n_masked"] == 5


def test_arm_inputs_and_params_are_narrow():
    from types import SimpleNamespace

    from rocktokens.freeze.arms import arm_freeze_settings, arm_inputs, frozen_K, frozen_set

    outs = SimpleNamespace(stats="s", occurrences="o", windows="w", info="i")  # rule rock_scores
    R = SimpleNamespace(rocks="r", controls="rc", record="rj")  # rule rock_set_R
    per_K = SimpleNamespace(rocks="res/rocks/K{k}.parquet", controls="res/rocks/K{k}_controls.parquet")  # rule rock_set
    assert frozen_set("chosen", R, per_K) == {"rocks": "r", "controls": "rc", "record": "rj"}
    # a fixed K reads that K's set: a change of the chosen K (the stability settings) does not reach the arms
    fixed = frozen_set(5, R, per_K)
    assert fixed == {"rocks": "res/rocks/K5.parquet", "controls": "res/rocks/K5_controls.parquet"}
    assert frozen_K(5, None) == 5 and frozen_K("chosen", {"K": 20}) == 20
    with pytest.raises(ValueError, match="R.json"):
        frozen_K("chosen", {})
    rset = frozen_set("chosen", R, per_K)
    specs = arm_specs({"base": {"lam": 1.0, "windows": "rock", "probe": True}, "tok": {"lam": 0.0, "windows": "tokens"},
                       "plain": {"lam": 1.0, "windows": "none"},
                       "probe": {"lam": 1.0, "windows": "none", "probe": True},
                       "rnd": {"lam": 0.0, "windows": "random"},
                       "sgd": {"lam": 1.0, "windows": "none", "optimizer": "sgd", "lr_match": "base"}})
    tok = arm_inputs(specs["tok"], rset, outs, "res")
    assert tok["occurrences"] == "o" and tok["scores"] == "i" and tok["rocks"] == "r" and tok["record"] == "rj"
    assert "windows" not in arm_inputs(specs["base"], rset, outs, "res")
    assert arm_inputs(specs["plain"], rset, outs, "res") == {}
    probe = arm_inputs(specs["probe"], rset, outs, "res")  # the probe needs the sets, not W(v)
    assert "occurrences" not in probe and probe["rocks"] == "r" and probe["controls"] == "rc"
    assert arm_inputs(specs["sgd"], rset, outs, "res") == {"lr_reference": "res/arms/base/history.parquet"}
    fz = {"K": "chosen", "steps": 4, "n_checkpoints": 2, "update_norm": True, "random": {"candidates": 4},
          "lr_match": {"steps": 1}, "eval": {"k": 5}}
    assert arm_freeze_settings(specs["tok"], fz) == {"K": "chosen", "steps": 4, "update_norm": True}
    assert set(arm_freeze_settings(specs["rnd"], fz)) == {"K", "steps", "update_norm", "random"}
    assert set(arm_freeze_settings(specs["sgd"], fz)) == {"K", "steps", "update_norm", "lr_match"}


@pytest.mark.parametrize("key, value, where, msg", [
    ("stage2.n_checkpoints", 97, "config", r"'stage2\.n_checkpoints'.*at most 96 OPD steps.*n_stage2_prompts = 512"),
    ("freeze.steps", 97, "freeze", r"'freeze\.steps'.*at most 96 OPD steps"),
    ("freeze.n_checkpoints", 97, "freeze", r"'freeze\.n_checkpoints'.*at most 96 OPD steps"),
])
def test_checkpoints_and_steps_beyond_stage2_fail_at_parse_time(key, value, where, msg):
    from rocktokens.workflow.config import ConfigError, check_config

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())  # 512 prompts x 3 epochs // 16 per step = 96 steps
    section, name = key.split(".")
    cfg[section][name] = value
    if key == "freeze.n_checkpoints":
        cfg["freeze"]["steps"] = None
    with pytest.raises(ConfigError if where == "config" else FreezeConfigError, match=msg):
        check_config(cfg) if where == "config" else check_freeze_config(cfg)
    paper = yaml.safe_load((REPO / "config.yaml").read_text())
    from snakemake.utils import update_config

    update_config(paper, yaml.safe_load((REPO / "configs/paper.yaml").read_text()))
    paper["stage2"]["n_checkpoints"] = 251  # 10,000 prompts (datasets.stage2_prompts 20k-30k) // 40 = 250 steps
    with pytest.raises(ConfigError, match="at most 250 OPD steps"):
        check_config(paper)


def test_arm_specs_validate_names_keys_and_lr_match():
    good = {"baseline": {"lam": 1.0, "windows": "rock"}, "sgd": {"lam": 1.0, "optimizer": "sgd", "lr_match": "baseline"}}
    specs = arm_specs(good)
    assert specs["sgd"].lr_match == "baseline" and specs["baseline"].optimizer == "adamw"
    for bad, msg in [({"a": {"lam": 1.5}}, r"arms\.a\.lam"), ({"a": {"lam": 0, "windows": "x"}}, r"arms\.a\.windows"),
                     ({"a": {"lam": 0, "lr_match": "b"}}, "no arm named"),
                     ({"a": {"lam": 0, "lr_match": "b"}, "b": {"lam": 0, "lr_match": "a"}}, "chain"),
                     ({"a": {"lam": 0, "typo": 1}}, "unknown keys")]:
        with pytest.raises(FreezeConfigError, match=msg):
            arm_specs(bad)


@pytest.mark.parametrize("extra", [None, "configs/smoke.yaml", "configs/paper.yaml"])
def test_shipped_configs_pass_the_freeze_checks(extra):
    from snakemake.utils import update_config  # the recursive merge `--configfile` applies

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    if extra:
        update_config(cfg, yaml.safe_load((REPO / extra).read_text()))
    specs = check_freeze_config(cfg)
    assert specs["baseline"].lam == 1.0 and specs["freeze"].lam == 0.0 and specs["random"].windows == "random"
    assert cfg["freeze"]["eval"]["k"] >= 2
    assert any(s.planted for s in specs.values()) is (extra != "configs/paper.yaml")  # planted arms: world only
    if extra == "configs/paper.yaml":
        assert cfg["freeze"]["steps"] == 200 and cfg["freeze"]["eval"]["k"] == 5
        assert cfg["freeze"]["eval"]["benchmarks"] == ["aime24", "aime25", "hmmt25"]


# ----------------------------------------------------------------------------- the random-window control
def test_place_runs_is_non_overlapping_separated_and_exact():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        lengths = []
        while sum(lengths) + len(lengths) < n and rng.random() < 0.8:
            lengths.append(int(rng.integers(1, 6)))
        if not lengths or sum(lengths) + len(lengths) - 1 > n:
            continue
        starts = place_runs(lengths, n, rng)
        m = np.zeros(n, dtype=bool)
        for s, ln in zip(starts, lengths):
            assert s >= 0 and s + ln <= n and not m[max(0, s - 1): s + ln + 1].any()  # no overlap, >= 1 gap
            m[s: s + ln] = True
        assert sorted(masked_runs(m)[1].tolist()) == sorted(lengths)
    with pytest.raises(ValueError, match="do not fit"):
        place_runs([3, 3], 6, rng)


def test_random_control_matches_lengths_share_and_frequency_and_avoids_rocks():
    rng = np.random.default_rng(1)
    vocab = 50
    freq = np.arange(vocab) ** 2 + 1.0
    stats = pd.DataFrame({"token_id": np.arange(vocab), "freq": freq})
    bins = frequency_bins(stats, 5, vocab)
    assert bins[0] == 0 and bins[vocab - 1] == 4 and np.all(np.diff(bins) >= 0)
    rocks = [30, 34, 40, 44, 48]  # frequent tokens, as rocks are; non-rocks of the same bins exist
    masker = RockMasker(rocks, _contexts([(40, [1, 2, 3, 4])]), w=2, gamma=0.25)
    tot = {"rock": 0, "best": 0}
    hist = {k: np.zeros(5) for k in ("rock", "best", "uniform")}
    on_rocks = {"best": 0, "uniform": 0}
    for i in range(300):
        resp = rng.choice(vocab, size=int(rng.integers(20, 60)), p=freq / freq.sum())
        if i % 3 == 0:
            resp[5:10] = [1, 2, 40, 3, 4]  # a window occurrence: a run of length 5
        rock = masker.mask(resp)
        is_rock = masker.is_rock(resp)
        masks = {"rock": rock,
                 "best": random_window_mask(rock, bins[resp], np.random.default_rng(i), 16, 5, is_rock, sweeps=8),
                 "uniform": random_window_mask(rock, bins[resp], np.random.default_rng(i), 1, 5, sweeps=0)}
        for k, m in masks.items():
            assert sorted(masked_runs(m)[1]) == sorted(masked_runs(rock)[1])  # window lengths matched exactly
            hist[k] += np.bincount(bins[resp][m], minlength=5)
            if k != "rock":
                on_rocks[k] += int((m & is_rock).sum())
        tot["rock"] += rock.sum()
        tot["best"] += masks["best"].sum()
    assert abs(tot["best"] / tot["rock"] - 1) <= 0.02  # masked share within ±2 % (here: equal on each trajectory)
    tv = {k: 0.5 * np.abs(hist[k] / hist[k].sum() - hist["rock"] / hist["rock"].sum()).sum() for k in ("best", "uniform")}
    assert tv["best"] < 0.6 * tv["uniform"] and tv["best"] < 0.1  # token frequencies matched, unlike a blind placement
    assert on_rocks["best"] < 0.5 * on_rocks["uniform"]  # ... on other tokens than the rocks


def test_random_arm_weights_are_seeded_by_the_rollout_and_labelled():
    vocab = 20
    bins = frequency_bins(pd.DataFrame({"token_id": np.arange(vocab), "freq": np.ones(vocab)}), 4, vocab)
    masker = RockMasker([3], _no_contexts(), w=2, gamma=0.5)
    fn = ArmWeights(ArmSpec("random", 0.0, windows="random"), masker, bins, candidates=4)
    ids = [1, 2] + [3, 5, 6, 3, 3, 7, 8, 9, 10, 11]
    w1 = fn(TokenSequence(ids=ids, prompt_len=2, meta={"seed": 11}))
    w2 = fn(TokenSequence(ids=ids, prompt_len=2, meta={"seed": 11}))
    w3 = [fn(TokenSequence(ids=ids, prompt_len=2, meta={"seed": s})) for s in range(12, 20)]
    assert w1 == w2 and any(w != w1 for w in w3)
    assert w1.count(0.0) == 3


# ----------------------------------------------------------------------------- skipped work (issue: real speed-up)
def test_weight_zero_positions_skip_both_heads_and_their_kl():
    """NaN hidden states at the frozen positions of *both* models: the loss is still finite (their head
    projections and KL are never computed), the frozen rows get exactly zero gradient, and loss and gradients
    equal the unskipped full-logit implementation with those positions weighted 0."""
    torch.manual_seed(0)
    n, h, ht, v = 12, 8, 6, 23
    h_s = torch.randn(n, h, dtype=torch.float64)
    w_s = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(n, ht, dtype=torch.float64), torch.randn(v, ht, dtype=torch.float64)
    labels = torch.randint(0, v, (n,))
    weights = torch.ones(n)
    frozen = torch.tensor([1, 4, 5, 10])
    weights[frozen] = 0.0
    spec = LossSpec("rkl", 1.0, chunk=5)
    hs_nan, ht_nan = h_s.clone(), h_t.clone()
    hs_nan[frozen] = float("nan")
    ht_nan[frozen] = float("nan")
    hs_nan.requires_grad_(True)
    loss = chunked_head_loss(spec, hs_nan, w_s, labels, weights, 17.0, ht_nan, w_t)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(hs_nan.grad[frozen] == 0)
    g_h, g_w = hs_nan.grad.clone(), w_s.grad.clone()
    # the unskipped implementation: full logits for every position, loss masked by the weights
    hs_ref = h_s.clone().requires_grad_(True)
    w_s.grad = None
    lps, lpt = F.log_softmax(hs_ref @ w_s.T, -1), F.log_softmax(h_t @ w_t.T, -1)
    ref = (weights.double() * (lps.exp() * (lps - lpt)).sum(-1)).sum() / 17.0
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)  # the chunked loss accumulates in float32
    torch.testing.assert_close(g_h, hs_ref.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_w, w_s.grad, rtol=1e-5, atol=1e-7)
    # the guard is live: NaN at a position that is trained does raise
    weights[frozen[0]] = 1.0
    with pytest.raises(FloatingPointError):
        chunked_head_loss(spec, hs_nan.detach(), w_s.detach(), labels, weights, 17.0, ht_nan, w_t)


# ----------------------------------------------------------------------------- trainer-level invariants
def _opd_setup(tiny_world, tiny_models):
    tok = tiny_models["tokenizer"]
    prompts = [encode_prompt(tok, p) for p in tiny_world["world"]["stage2_prompts"]["prompt"].iloc[:4]]
    return tok, prompts


def _factory(tok):
    from rocktokens.generation.hf import HFBackend
    from rocktokens.core.prompts import stop_ids

    return lambda model: HFBackend(model=model, stop_ids=stop_ids(tok), pad_id=tok.pad_token_id, batch_size=16,
                                   n_tokens=len(tok), progress=False)


def _trainer(tiny_models, tmp, lr=1e-3, optimizer="adamw", total=2, probe=None, gb=4):
    torch.manual_seed(0)
    tok = tiny_models["tokenizer"]
    return Trainer(load_model(tiny_models["student"]), tok, LossSpec("rkl", 1.0, chunk=64),
                   OptimConfig(lr=lr, global_batch=gb, micro_batch=2, warmup_ratio=0.0, optimizer=optimizer), total,
                   tmp, teacher=load_model(tiny_models["teacher"]), max_len=256, probe=probe, track_update_norm=True)


def _rock_fn(lam, tok, windows="rock"):
    rocks = list(range(0, len(tok), 3))  # a third of the vocabulary: masks are never empty
    masker = RockMasker(rocks, _no_contexts(), w=2, gamma=0.5)
    bins = frequency_bins(pd.DataFrame({"token_id": np.arange(len(tok)), "freq": np.arange(len(tok)) + 1}), 4,
                          len(tok)) if windows == "random" else None
    return ArmWeights(ArmSpec(f"l{lam}", lam, windows=windows), masker, bins, 4)


def test_normaliser_is_the_same_for_every_lambda_and_lambda_changes_nothing_else(tiny_world, tiny_models, tmp_path):
    tok, prompts = _opd_setup(tiny_world, tiny_models)
    cfg = OPDConfig(prompts_per_step=2, rollouts_per_prompt=2, max_new_tokens=12)
    out = {}
    for lam in (0.0, 0.5, 1.0):
        tr = _trainer(tiny_models, tmp_path / f"s{lam}", lr=0.0 + 1e-12)
        h = run_opd(tr, prompts, cfg, 5, {}, None, _factory(tok), _rock_fn(lam, tok), max_steps=1, detailed=True)[0]
        tr.model.eval()
        out[lam] = h
    # same rollouts and masks in every arm (seeds and data do not depend on λ) ...
    for k in ("mean_response_len", "stop_rate", "masked_share", "rock_tokens_share"):
        assert out[0.0][k] == out[0.5][k] == out[1.0][k]
    # ... and the loss is linear in λ: Z is the batch's response-token count, not the unfrozen count
    assert out[0.5]["loss"] == pytest.approx(0.5 * (out[0.0]["loss"] + out[1.0]["loss"]), rel=1e-5)
    assert out[0.0]["zero_weight_share"] == out[0.0]["masked_share"] > 0 and out[1.0]["zero_weight_share"] == 0
    # Z itself: the global batch's response tokens, whatever the weights
    seqs = [TokenSequence(ids=[1, 2, 3, 4, 5], prompt_len=2), TokenSequence(ids=[1, 2, 3], prompt_len=1)]
    zs = []
    for w in (None, [0.0, 0.0, 0.0], [1.0, 0.0, 0.5]):
        s0 = copy.deepcopy(seqs)
        s0[0].weights = w
        zs.append(_trainer(tiny_models, tmp_path / "z", gb=2).update(s0)["tokens"])
    assert zs == [5.0, 5.0, 5.0]


class _RecordingProbe:
    """A minimal probe: what it sees before/after opt.step(), and a JSON-able state."""

    def __init__(self):
        self.records, self._before = [], None

    def before_step(self, trainer):
        w = trainer.unwrapped().lm_head.weight
        assert w.grad is not None  # gradients present, clipping done
        self._before = w.detach().clone()

    def after_step(self, trainer):
        w = trainer.unwrapped().lm_head.weight
        self.records.append({"update": trainer.updates + 1, "moved": float((w.detach() - self._before).norm()),
                             "grad": float(w.grad.norm())})  # grads not yet zeroed

    def state_dict(self):
        return {"records": self.records}

    def load_state_dict(self, d):
        self.records = [dict(r) for r in d["records"]]


def test_probe_hook_order_and_resume_gives_the_same_records(tiny_world, tiny_models, tmp_path):
    tok, prompts = _opd_setup(tiny_world, tiny_models)
    cfg = OPDConfig(prompts_per_step=2, rollouts_per_prompt=2, max_new_tokens=10)
    fn = _rock_fn(0.0, tok)
    p1 = _RecordingProbe()
    h1 = run_opd(_trainer(tiny_models, tmp_path / "a", total=2, probe=p1), prompts, cfg, 3, {}, 1, _factory(tok), fn,
                 max_steps=2, detailed=True)
    assert [r["update"] for r in p1.records] == [1, 2]
    assert all(r["moved"] > 0 and r["grad"] > 0 for r in p1.records)
    # interrupted after step 1, resumed with a fresh probe: the same records and history
    run_opd(_trainer(tiny_models, tmp_path / "b", total=2, probe=_RecordingProbe()), prompts, cfg, 3, {}, 1,
            _factory(tok), fn, max_steps=1, detailed=True)
    p2 = _RecordingProbe()
    tr = _trainer(tiny_models, tmp_path / "b", total=2, probe=p2)
    h2 = run_opd(tr, prompts, cfg, 3, {}, 1, _factory(tok), fn, max_steps=2, detailed=True)
    assert p2.records == p1.records
    timing = ("update_s", "instrument_s", "update_s_per_token", "rollout_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in h2] == \
           [{k: v for k, v in r.items() if k not in timing} for r in h1]
    for r in h1:  # the per-token update cost: the step's update seconds over its response tokens
        assert r["response_tokens"] == pytest.approx(4 * r["mean_response_len"])
        assert r["update_s_per_token"] == pytest.approx(r["update_s"] / r["response_tokens"])


class _SlowProbe(_RecordingProbe):
    def before_step(self, trainer):
        time.sleep(1.5)
        super().before_step(trainer)

    def after_step(self, trainer):
        time.sleep(1.5)
        super().after_step(trainer)


def test_probe_and_update_norm_are_not_timed_as_update_work(tiny_world, tiny_models, tmp_path):
    """Arms with and without the probe are timed alike: the hooks' time is instrument_s, not update_s."""
    tok, prompts = _opd_setup(tiny_world, tiny_models)
    seqs = [TokenSequence(ids=p + [5, 6, 7, 8], prompt_len=len(p)) for p in prompts]
    out = _trainer(tiny_models, tmp_path / "p", probe=_SlowProbe()).update(seqs)
    plain = _trainer(tiny_models, tmp_path / "q").update(seqs)  # the same update without the probe, for scale
    # the 3 s of hooks land in instrument_s; update_s stays the plain update's order (a busy machine slows both)
    assert out["instrument_s"] >= 3.0 and 0 < out["update_s"] < plain["update_s"] + 1.5


def test_share_summary_times_updates_per_response_token():
    h = pd.DataFrame({"step": [1, 2, 3], "mean_response_len": [10.0, 20.0, 30.0], "masked_share": [0.2, 0.3, 0.1],
                      "update_s": [9.0, 2.0, 3.0], "response_tokens": [40.0, 80.0, 120.0]})
    h["update_s_per_token"] = h["update_s"] / h["response_tokens"]
    out = share_summary(h)
    assert out["masked_share"] == pytest.approx((0.2 * 10 + 0.3 * 20 + 0.1 * 30) / 60)  # token-weighted mean
    assert out["update_s_per_token"] == pytest.approx(0.025)  # median of 0.225, 0.025, 0.025: not of update_s


def test_sgd_lr_match_reaches_the_reference_update_norm(tiny_world, tiny_models, tmp_path):
    """One fixed-point step matches the first update exactly (its norm is linear in the SGD lr)."""
    tok, prompts = _opd_setup(tiny_world, tiny_models)
    cfg = OPDConfig(prompts_per_step=2, rollouts_per_prompt=2, max_new_tokens=10)  # 4 rollouts = one update
    fn = _rock_fn(1.0, tok)
    ref = pd.DataFrame(run_opd(_trainer(tiny_models, tmp_path / "r", lr=1e-3), prompts, cfg, 3, {}, None,
                               _factory(tok), fn, max_steps=1, detailed=True))
    target = lr_match_target(ref, 1)
    assert target == ref["update_norm"].iloc[0] > 0
    lr0 = 1e-3
    trial = run_opd(_trainer(tiny_models, tmp_path / "t", lr=lr0, optimizer="sgd"), prompts, cfg, 3, {}, None,
                    _factory(tok), fn, max_steps=1, detailed=True)
    lr1 = next_lr(lr0, trial[0]["update_norm"], target)
    again = run_opd(_trainer(tiny_models, tmp_path / "u", lr=lr1, optimizer="sgd"), prompts, cfg, 3, {}, None,
                    _factory(tok), fn, max_steps=1, detailed=True)
    assert again[0]["update_norm"] == pytest.approx(target, rel=1e-3)
    with pytest.raises(ValueError, match="update_norm"):
        lr_match_target(ref.drop(columns="update_norm"), 1)


# ----------------------------------------------------------------------------- the accuracy table
def test_arm_accuracy_pools_hard_benchmarks_with_an_interval_over_problems():
    rows = []
    for ck, p in (("stage1", 0.5), ("a/opd-1", 1.0)):
        for b in ("aime24", "hmmt25", "math"):
            for pid in range(4):
                for s in range(2):
                    rows.append({"checkpoint": ck, "benchmark": b, "id": f"{b}-{pid}", "sample": s,
                                 "correct": bool(p == 1.0 or (pid + s) % 2 == 0)})
    df = pd.DataFrame(rows)
    pts = pd.DataFrame({"checkpoint": ["stage1", "a/opd-1"], "arm": ["a", "a"], "step": [0, 4]})
    t = arm_accuracy([df], pts, ["aime24", "hmmt25"])
    assert t["step"].tolist() == [0, 4] and t["n_problems"].tolist() == [8, 8] and t["n_seeds"].tolist() == [2, 2]
    assert t["pass@1"].tolist() == [0.5, 1.0]  # math is not pooled
    assert t.loc[0, "ci_low"] == t.loc[0, "ci_high"] == 0.5  # every problem at 0.5: no between-problem spread
    assert t.loc[1, "se"] == 0


def test_planted_arms_parse_check_and_freeze_the_planted_types_with_their_windows():
    from types import SimpleNamespace

    from rocktokens.freeze.arms import arm_inputs

    specs = arm_specs({"pillars": {"lam": 0.0, "windows": "rock", "planted": "pillar"},
                       "neutral": {"lam": 0.0, "windows": "tokens", "planted": "neutral"}})
    assert specs["pillars"].frozen == "planted pillar types and their windows"
    assert specs["neutral"].frozen == "planted neutral types only" and ArmSpec("f", 0.0).frozen == "R and their windows"
    assert ArmSpec("b", 1.0).frozen == "nothing"
    # rows of freeze/arms.tsv read back as specs; the rock freeze is the first λ = 0 R-window AdamW arm, never a planted one
    table = pd.DataFrame({"arm": ["baseline", "pillars", "freeze", "freeze2"], "lam": [1.0, 0.0, 0.0, 0.0],
                          "windows": ["rock"] * 4, "planted": [np.nan, "pillar", np.nan, np.nan],
                          "optimizer": ["adamw"] * 4})
    assert ArmSpec.from_row(table.iloc[1]).planted == "pillar" and ArmSpec.from_row(table.iloc[0]).planted is None
    assert rock_freeze_arm(table) == "freeze" and rock_freeze_arm(table.iloc[:2]) is None
    assert rock_freeze_arm(table.drop(columns="planted").iloc[1:]) == "pillars"  # a table from before the column
    for bad, msg in [({"lam": 0, "planted": "pillars"}, r"arms\.a\.planted.*not in"),
                     ({"lam": 0, "windows": "random", "planted": "pillar"}, r"arms\.a\.planted.*windows rock or tokens"),
                     ({"lam": 0, "planted": "pillar", "probe": True}, r"arms\.a\.planted.*no probe")]:
        with pytest.raises(FreezeConfigError, match=msg):
            arm_specs({"a": bad})
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["arms"] = {"baseline": {"lam": 1.0, "windows": "rock"},
                   "neutral": {"lam": 0.0, "windows": "rock", "planted": "neutral"}}
    assert list(check_freeze_config(cfg)) == ["baseline", "neutral"]
    with pytest.raises(FreezeConfigError, match=r"arms\.neutral\.planted.*world\.neutral_share is 0"):
        check_freeze_config({**cfg, "world": {"neutral_share": 0.0}})
    # a run on staged models (config.yaml's arms merged under configs/paper.yaml) has no planted truth: no such arm
    assert list(check_freeze_config({**cfg, "source": "hub"})) == ["baseline"]
    with pytest.raises(FreezeConfigError, match="only the embedded world"):
        check_freeze_config({**cfg, "source": "hub", "arms": {"neutral": cfg["arms"]["neutral"]}})
    # the planted table reaches the arm's inputs beside the stored contexts; without one the arm cannot run
    outs = SimpleNamespace(stats="s", occurrences="o", info="i")
    rset = {"rocks": "r", "controls": "rc", "record": "rj"}
    ins = arm_inputs(specs["pillars"], rset, outs, "res", "world/planted.parquet")
    assert ins["planted"] == "world/planted.parquet" and ins["occurrences"] == "o"
    with pytest.raises(FreezeConfigError, match="no planted table"):
        arm_inputs(specs["pillars"], rset, outs, "res")
    # the frozen set: the role's types in the vocabulary, masked with their own windows as R's would be
    planted = pd.DataFrame({"token_id": [7, 8, 9, 11], "token": ["1", "2", " thus", "Okay"],
                            "role": ["pillar", "pillar", "neutral", "neutral"], "in_vocab": [True, False, True, True]})
    assert planted_set(planted, "pillar")["token_id"].tolist() == [7]
    assert planted_set(planted, "neutral")["token"].tolist() == [" thus", "Okay"]
    with pytest.raises(ValueError, match="no stumbling type"):
        planted_set(planted, "stumbling")
    masker = RockMasker(planted_set(planted, "pillar")["token_id"], _contexts([(7, [1, 2, 3, 4])]), w=2, gamma=0.5)
    s = TokenSequence(ids=[0, 0, 9, 1, 2, 7, 3, 8, 11], prompt_len=2, meta={"seed": 0})
    s.weights = ArmWeights(specs["pillars"], masker)(s)
    assert [i for i, x in enumerate(s.weights) if x == 0] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- the smoke DAG
@pytest.mark.slow  # builds the shared smoke DAG (run in .venv by `make test`; `make test-vllm` leaves it out)
def test_smoke_arms(smoke_results):
    r = smoke_results
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    arms = list(cfg["arms"])
    hist = {a: pd.read_parquet(r / f"arms/{a}/history.parquet") for a in arms}
    info = {a: json.loads((r / f"arms/{a}/arm.json").read_text()) for a in arms}
    for a in arms:
        assert (r / f"arms/{a}/opd-2/model.safetensors").exists()
        assert hist[a]["step"].tolist() == [1, 2]
        assert {"loss", "lr", "grad_norm", "update_norm", "masked_share", "update_s", "instrument_s",
                "response_tokens", "update_s_per_token"} <= set(hist[a].columns)
    # step 1: the same rollouts in every arm (same start, prompts and seeds)
    assert len({round(h["mean_response_len"].iloc[0], 9) for h in hist.values()}) == 1
    # (the planted arms' mask is their role's types, not R's)
    assert len({round(h["rock_mask_share"].iloc[0], 9) for a, h in hist.items()
                if not cfg["arms"][a].get("planted")}) == 1
    f, b, rnd = hist["freeze"], hist["baseline"], hist["random"]
    assert (f["zero_weight_share"] == f["masked_share"]).all() and (b["zero_weight_share"] == 0).all()
    assert np.allclose(rnd["masked_share"], rnd["rock_mask_share"], rtol=0.02)
    tk = hist["tokens"]  # R without W_R: its frozen set is the rock tokens, within the rock mask
    assert np.allclose(tk["masked_share"], tk["rock_tokens_share"]) and (tk["masked_share"] <= tk["rock_mask_share"]).all()
    assert info["sgd"]["lr_match"]["trace"] and info["sgd"]["lr"] > 0 and info["sgd"]["arm"]["optimizer"] == "sgd"
    probe_b, probe_f = pd.read_parquet(r / "arms/baseline/probe.parquet"), pd.read_parquet(r / "arms/freeze/probe.parquet")
    assert len(probe_b) > 0 and len(probe_f) == 0 and list(probe_f.columns) == list(probe_b.columns)
    acc = pd.read_csv(r / "freeze/accuracy.tsv", sep="\t")
    assert set(acc["arm"]) == set(arms) and set(acc["step"]) == {0, 1, 2}
    assert acc["pass@1"].between(0, 1).all() and (acc["ci_low"] <= acc["pass@1"]).all()
    table = pd.read_csv(r / "freeze/arms.tsv", sep="\t")
    assert set(table["arm"]) == set(arms) and table["masked_share"].between(0, 1).all()
    assert (table["update_s_per_token"] > 0).all() and table.set_index("arm").loc["baseline", "update_speedup"] == 1
    ref = table.set_index("arm").loc["baseline"]
    assert ref["delta_vs_reference"] == 0 and np.isnan(ref["mde_vs_reference"])
    final = acc[acc["step"] == 2].set_index("arm")["pass@1"]
    for _, row in table.iterrows():  # paired over the same problems: the difference of the two pooled means
        assert row["delta_vs_reference"] == pytest.approx(final[row["arm"]] - final["baseline"], abs=1e-3)
    assert (r / "figures/figure5.png").stat().st_size > 10_000
    # the planted arms froze their role's types (digits; the neutral words), not R: other shares than the rock arm's
    planted = {a: cfg["arms"][a]["planted"] for a in arms if cfg["arms"][a].get("planted")}
    assert set(planted.values()) == {"pillar", "neutral"}
    for a, role in planted.items():
        row = table.set_index("arm").loc[a]
        assert row["planted"] == role and 0 < row["masked_share"] < 1 and info[a]["arm"]["planted"] == role
        assert not np.allclose(hist[a]["masked_share"], hist["freeze"]["masked_share"])
        assert f"freezes the planted {role} types" in (r / f"logs/arms/{a}.log").read_text()
