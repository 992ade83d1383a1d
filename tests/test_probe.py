"""The optimizer probe on tiny models with real optimizer steps, and the verdict / finding from the numbers."""
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from rocktokens.geometry.probe import (
    PROBE_COLUMNS,
    OptimizerProbe,
    arm_table,
    finding_markdown,
    mechanism_check,
    outcome_check,
    probe_groups,
    verdict,
)

V = 40
GROUPS = {"rock": [1, 2, 3], "control": [7, 8], "high_kl": [20, 30, 39]}


def _model(tie: bool, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=8, intermediate_size=32, max_position_embeddings=64, tie_word_embeddings=tie,
                      pad_token_id=0)
    return Qwen3ForCausalLM(cfg)


class _Loop:
    """The trainer surface the probe reads (.unwrapped(), .opt, .updates) around a real torch optimizer."""

    def __init__(self, model, opt, probe, clip=1.0):
        self.model, self.opt, self.probe, self.updates, self.clip = model, opt, probe, 0, clip
        self.captured = []

    def unwrapped(self):
        return self.model

    def step(self, ids):
        self.opt.zero_grad(set_to_none=True)
        self.model(input_ids=ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        w = self.model.get_output_embeddings().weight
        self.captured.append({"grad": w.grad.detach().clone(), "before": w.detach().clone()})
        self.probe.before_step(self)
        self.opt.step()
        self.captured[-1]["after"] = w.detach().clone()
        self.probe.after_step(self)
        self.updates += 1


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (4, 12), generator=g)


def _rec(probe, update, group, param):
    r = [x for x in probe.records if x["update"] == update and x["group"] == group and x["param"] == param]
    assert len(r) == 1
    return r[0]


def test_adamw_first_step_matches_the_adam_formulas():
    model = _model(tie=False)
    lr, eps = 1e-2, 1e-8
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=0.0)
    probe = OptimizerProbe(GROUPS)
    loop = _Loop(model, opt, probe)
    loop.step(_ids())
    assert {r["param"] for r in probe.records} == {"lm_head", "embed"}
    assert len(probe.records) == 2 * len(GROUPS)
    cap = loop.captured[0]
    for name, ids in GROUPS.items():
        r = _rec(probe, 1, name, "lm_head")
        g = cap["grad"][ids].double()
        d = (cap["after"][ids] - cap["before"][ids]).double()
        assert r["optimizer"] == "adamw" and r["n_rows"] == len(ids) and r["lr"] == lr and not r["tied"]
        assert r["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
        assert r["update_norm"] == pytest.approx(float(d.norm()), rel=1e-4)
        # first Adam step: v = (1-β2) g², v̂ = g², effective step lr / (|g| + eps)
        assert r["v_mean"] == pytest.approx(float((0.001 * g ** 2).mean()), rel=1e-4)
        assert r["vhat_mean"] == pytest.approx(float((g ** 2).mean()), rel=1e-4)
        assert r["sqrt_vhat_mean"] == pytest.approx(float(g.abs().mean()), rel=1e-4)
        assert r["eff_lr_mean"] == pytest.approx(float((lr / (g.abs() + eps)).mean()), rel=1e-4)
        assert r["eff_lr_gmean"] == pytest.approx(float((lr / (g.abs() + eps)).log().mean().exp()), rel=1e-4)
        assert r["gain"] == pytest.approx(r["update_norm"] / (lr * r["grad_norm"]), rel=1e-9)
    assert list(probe.frame().columns) == PROBE_COLUMNS


def test_sgd_records_what_applies_and_tied_embeddings_are_one_parameter():
    model = _model(tie=True)
    lr = 0.05
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    probe = OptimizerProbe(GROUPS)
    loop = _Loop(model, opt, probe)
    loop.step(_ids(1))
    loop.step(_ids(2))
    assert {r["param"] for r in probe.records} == {"tied"}
    first = _rec(probe, 1, "rock", "tied")
    assert first["tied"] and first["optimizer"] == "sgd"
    assert math.isnan(first["v_mean"]) and math.isnan(first["sqrt_vhat_mean"])
    assert first["eff_lr_mean"] == lr and first["eff_lr_gmean"] == lr
    # first SGD-momentum step: Δθ = -lr·g exactly, so the gain is 1
    assert first["gain"] == pytest.approx(1.0, rel=1e-5)
    second = _rec(probe, 2, "rock", "tied")
    assert second["gain"] != pytest.approx(1.0, rel=1e-3)  # momentum carries the first gradient


def test_every_state_roundtrip_and_bad_groups():
    model = _model(tie=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    probe = OptimizerProbe(GROUPS, every=2)
    loop = _Loop(model, opt, probe)
    for s in range(4):
        loop.step(_ids(s))
    assert sorted({r["update"] for r in probe.records}) == [2, 4]
    fresh = OptimizerProbe(GROUPS, every=2)
    fresh.load_state_dict(probe.state_dict())
    assert fresh.records == probe.records and fresh.records is not probe.records
    with pytest.raises(ValueError, match="other token groups"):
        OptimizerProbe({"rock": [1]}).load_state_dict(probe.state_dict())
    with pytest.raises(ValueError, match="empty"):
        OptimizerProbe({"rock": []})
    bad = OptimizerProbe({"rock": [V + 5]})
    with pytest.raises(ValueError, match="outside"):
        _Loop(model, opt, bad).step(_ids())


def test_probe_inside_the_real_trainer(tmp_path):
    from rocktokens.core.losses import LossSpec
    from rocktokens.core.sequences import TokenSequence
    from rocktokens.training.trainer import OptimConfig, Trainer

    model = _model(tie=True, seed=3)
    probe = OptimizerProbe(GROUPS)
    tr = Trainer(model, SimpleNamespace(pad_token_id=0), LossSpec(divergence="rkl", kd_ratio=0.0, chunk=16),
                 OptimConfig(lr=1e-2, global_batch=2, micro_batch=2, warmup_ratio=0.0, schedule="constant"),
                 total_updates=3, state_dir=tmp_path / "state", probe=probe)
    g = torch.Generator().manual_seed(0)
    for u in range(3):
        seqs = [TokenSequence(ids=torch.randint(1, V, (10,), generator=g).tolist(), prompt_len=3) for _ in range(2)]
        tr.update(seqs)
    f = probe.frame()
    assert sorted(f["update"].unique()) == [1, 2, 3]
    assert set(f["group"]) == set(GROUPS) and (f["param"] == "tied").all()
    assert (f["grad_norm"] > 0).all() and (f["update_norm"] > 0).all() and (f["eff_lr_mean"] > 0).all()


def test_probe_groups_from_artifacts(tmp_path):
    stats = pd.DataFrame({"token_id": range(10), "freq": [100, 90, 3, 50, 40, 30, 20, 10, 8, 12],
                          "mean_loss": [1, 1, 9, 2, 0.5, 5, 0.1, 4, 3, 6.0]})
    rocks = pd.DataFrame({"token_id": [0, 1]})
    ctrl = pd.DataFrame({"rock_token_id": [0, 1], "control_token_id": [3, 4]})
    for name, df in (("s", stats), ("r", rocks), ("c", ctrl)):
        df.to_parquet(tmp_path / f"{name}.parquet")
    g = probe_groups(tmp_path / "r.parquet", tmp_path / "c.parquet", tmp_path / "s.parquet", min_freq=10)
    # high-KL: freq >= 10, not a rock/control, highest mean loss: 9 (6.0) and 5 (5.0); token 2 is too rare
    assert g == {"rock": [0, 1], "control": [3, 4], "high_kl": [5, 9]}


# ----------------------------------------------------------------------------- verdict from numbers
def _probe_frame(ratio, n=30, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n + 1):
        base = rng.uniform(1, 2)
        for grp, val in (("rock", base * ratio * rng.uniform(0.95, 1.05)), ("high_kl", base), ("control", base)):
            rows.append({"update": u, "group": grp, "param": "lm_head", "eff_lr_gmean": val})
    return pd.DataFrame(rows)


def test_mechanism_check_scores_direction():
    assert mechanism_check(_probe_frame(0.5), "high_kl", 0.05)["score"] == 1
    assert mechanism_check(_probe_frame(2.0), "high_kl", 0.05)["score"] == -1
    m = mechanism_check(_probe_frame(0.5), "high_kl", 0.05)
    assert m["median_ratio"] == pytest.approx(0.5, rel=0.06)


def _arms(rock_gain):
    rng = np.random.default_rng(1)
    groups = pd.DataFrame({"token_id": range(60), "token": [f"t{i}" for i in range(60)],
                           "group": ["rock"] * 20 + ["high_kl"] * 20 + ["random"] * 20})
    start = pd.DataFrame({"token_id": range(60), "freq": 5, "mean_loss": rng.uniform(1, 2, 60)})
    adam = start.assign(mean_loss=start["mean_loss"] * 0.9)
    sgd = adam.copy()
    sgd.loc[:19, "mean_loss"] = start["mean_loss"][:20] * (0.9 - rock_gain) + rng.normal(0, 1e-3, 20)
    sgd.loc[20:, "mean_loss"] = start["mean_loss"][20:] * 0.9 + rng.normal(0, 1e-3, 40)
    return arm_table(groups, start, {"baseline": adam, "sgd": sgd})


def test_outcome_check_and_verdict_rule():
    t = _arms(0.3)
    assert set(t["arm"]) == {"baseline", "sgd"} and len(t) == 120
    o = outcome_check(t, "baseline", "sgd", "high_kl", 0.05)
    assert o["score"] == 1 and o["median_d_rock"] == pytest.approx(0.3, abs=0.01)
    assert outcome_check(_arms(-0.3), "baseline", "sgd", "high_kl", 0.05)["score"] == -1
    assert outcome_check(_arms(0.0), "baseline", "sgd", "high_kl", 0.05)["score"] == 0
    assert verdict({"score": 1}, {"score": 1}) == "supported"
    assert verdict({"score": 1}, {"score": 0}) == "inconclusive"
    assert verdict({"score": 0}, {"score": 0}) == "inconclusive"
    assert verdict({"score": 1}, {"score": -1}) == "refuted"
    with pytest.raises(ValueError, match="arm 'a' vs the starting checkpoint: .*different occurrences"):
        arm_table(t.head(0).assign(token_id=[]), pd.DataFrame({"token_id": [0], "freq": [1], "mean_loss": [1.0]}),
                  {"a": pd.DataFrame({"token_id": [0], "freq": [2], "mean_loss": [1.0]})})


def test_finding_markdown_states_the_verdict_and_rule():
    from rocktokens.geometry.gradients import geometry_summary
    from rocktokens.geometry.persistence import persistence_summary

    rng = np.random.default_rng(0)
    geo_t = pd.DataFrame({"token_id": range(30), "group": ["rock"] * 10 + ["high_kl"] * 10 + ["random"] * 10,
                          "n": 5, "grad_norm": np.r_[rng.uniform(0.01, 0.02, 10), rng.uniform(0.4, 0.6, 20)],
                          "cos_balanced": np.r_[rng.normal(0.1, 0.01, 10), rng.normal(0.01, 0.01, 20)],
                          "cos_balanced_excl": rng.normal(0.04, 0.01, 30),
                          "contrib": rng.normal(1, 0.1, 30)})
    pers_t = pd.DataFrame({"token_id": range(30), "group": geo_t["group"], "kl_early": rng.uniform(1, 2, 30)})
    pers_t["kl_late"] = pers_t["kl_early"] * np.r_[np.ones(10) * 0.99, np.ones(10) * 0.4, np.ones(10) * 0.9]
    pers_t["delta_kl"] = pers_t["kl_late"] - pers_t["kl_early"]
    geo, pers = geometry_summary(geo_t), persistence_summary(pers_t, "opd-1", "opd-7")
    o = outcome_check(_arms(0.3), "baseline", "sgd", "high_kl", 0.05)
    m = mechanism_check(_probe_frame(0.5), "high_kl", 0.05)
    md = finding_markdown(geo, pers, {"mechanism": m, "outcome": o, "verdict": verdict(m, o)}, 0.05)
    assert "**Verdict: SUPPORTED**" in md and "SUPPORTED if both checks are +1" in md
    assert md.count("| yes |") == 4  # the hand-made numbers replicate every §2.6 claim
    assert "Not run" in finding_markdown(geo, pers, None, 0.05)


def _embedding_only(weight):
    emb = SimpleNamespace(weight=weight)
    return SimpleNamespace(get_output_embeddings=lambda: emb, get_input_embeddings=lambda: emb)


def test_row_sharded_dtensor_path_matches_plain_tensors(monkeypatch):
    """The FSDP2 code path (DTensor shards + all-reduce) on a one-process gloo group gives the plain records."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        base = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
        out = []
        for sharded in (True, False):
            w = torch.nn.Parameter(distribute_tensor(base.clone(), mesh, [Shard(0)]) if sharded else base.clone())
            opt = torch.optim.AdamW([w], lr=0.1)
            probe = OptimizerProbe({"a": [1, 2], "b": [7]})
            tr = SimpleNamespace(unwrapped=lambda w=w: _embedding_only(w), opt=opt, updates=0)
            (w * w * 0.5).sum().backward()
            probe.before_step(tr)
            opt.step()
            probe.after_step(tr)
            out.append(probe.records)
        for a, b in zip(*out):
            assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)
        assert len(out[0]) == 2
    finally:
        dist.destroy_process_group()
