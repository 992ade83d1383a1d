"""rocktokens.workflow.gpu_plan: its formulas against the real memory of tiny Qwen3 / Qwen3-MoE models on CPU, the paper plan
fits 80 GB H100s, oversized settings are refused at parse time naming the rule, and the embedded default never is."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from rocktokens.workflow.gpu_plan import GPU_RULES, GpuPlanError, Shape, check_gpu_plan, gpu_plan, load_config, main

REPO = Path(__file__).resolve().parents[1]

SHAPES = [  # (type, hidden, layers, heads, kv_heads, head_dim, vocab, tied, intermediate, experts, k, moe_intermediate)
    ("qwen3", 64, 2, 4, 2, 16, 320, True, 192, 0, 0, 0),
    ("qwen3", 96, 3, 4, 2, 24, 704, False, 288, 0, 0, 0),
    ("qwen3", 64, 1, 8, 8, 8, 100, True, 80, 0, 0, 0),  # head_dim * heads != hidden
    ("qwen3_moe", 128, 2, 4, 2, 32, 704, False, 384, 4, 2, 192),
    ("qwen3_moe", 64, 3, 4, 1, 16, 256, True, 128, 8, 3, 48),
]


def build(s: Shape):
    common = dict(vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                  num_key_value_heads=s.kv_heads, head_dim=s.head_dim, intermediate_size=s.intermediate,
                  tie_word_embeddings=s.tied, max_position_embeddings=512)
    torch.manual_seed(0)
    if s.moe:
        return Qwen3MoeForCausalLM(Qwen3MoeConfig(**common, num_experts=s.experts,
                                                  num_experts_per_tok=s.experts_per_tok,
                                                  moe_intermediate_size=s.moe_intermediate, decoder_sparse_step=1))
    return Qwen3ForCausalLM(Qwen3Config(**common))


@pytest.fixture(params=SHAPES, ids=lambda t: f"{t[0]}-h{t[1]}-{'tied' if t[7] else 'untied'}")
def shape(request):
    t = request.param
    return Shape(*t[:8], intermediate=t[8], experts=t[9], experts_per_tok=t[10], moe_intermediate=t[11])


def test_parameter_count_matches_transformers(shape):
    m = build(shape)
    assert shape.params == sum(p.numel() for p in m.parameters())
    if shape.moe:  # active: every expert but the k a token passes taken out
        per_expert = 3 * shape.hidden * shape.moe_intermediate * shape.layers
        assert shape.active_params == shape.params - (shape.experts - shape.experts_per_tok) * per_expert


def test_adamw_state_bytes_after_one_step(shape):
    """fp32 master weights + AdamW: two fp32 states per parameter = 8 bytes (the plan's optimizer term)."""
    m = build(shape).float()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.arange(16)[None] % shape.vocab, labels=torch.arange(16)[None] % shape.vocab).loss.backward()
    opt.step()
    states = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t) and t.dim() > 0]
    assert sum(t.numel() * t.element_size() for t in states) == 8 * shape.params
    grads = sum(p.grad.numel() * p.grad.element_size() for p in m.parameters() if p.grad is not None)
    assert grads <= 4 * shape.params  # the MoE experts no token reached have no gradient


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_kv_cache_bytes_per_token(shape, dtype):
    n = 24
    m = build(shape).to(dtype).eval()
    with torch.no_grad():
        cache = m(torch.arange(n)[None] % shape.vocab, use_cache=True).past_key_values
    measured = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)) / n
    assert measured == shape.kv_bytes_per_token(dtype_bytes=torch.finfo(dtype).bits // 8)


def _saved_bytes(model, n: int) -> int:
    """Bytes of the tensors one decoder layer saves for backward on ``n`` tokens (storages counted once)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x = torch.randn(1, n, model.config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(n)[None]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.model.layers[0](x, attention_mask=None, position_ids=pos,
                              position_embeddings=model.model.rotary_emb(x, pos))
    return sum(seen.values())


def test_activation_bytes_per_token_of_one_layer(shape):
    """The recomputed layer's saved tensors (bf16, CPU flash attention: no T² term): measured at two lengths."""
    m = build(shape).to(torch.bfloat16).train()
    a, b = _saved_bytes(m, 128), _saved_bytes(m, 256)
    assert abs(2 * a - b) <= 64  # linear in T
    assert (b - a) / 128 == pytest.approx(shape.act_bytes_per_token(), rel=0.02)


# ----------------------------------------------------------------------------------------------- the paper plan
@pytest.fixture(scope="module")
def paper():
    return load_config([REPO / "configs" / "paper.yaml"])


def test_paper_model_shapes(paper):
    plan = gpu_plan(paper, ["stage1_kd"])
    from rocktokens.workflow.gpu_plan import model_shape

    t, s = model_shape(paper, "teacher"), model_shape(paper, "student_base")
    assert round(t.params / 1e9, 1) == 30.5 and round(t.active_params / 1e9, 1) == 3.4
    assert round(s.params / 1e9, 2) == 4.02 and s.tied
    assert t.kv_bytes_per_token() == 48 * 4 * 128 * 2 * 2 and s.kv_bytes_per_token() == 36 * 8 * 128 * 2 * 2
    assert plan.gpu_memory_gib == 79.1  # cluster.gpu_model h100


def test_paper_plan_fits_every_gpu_rule(paper):
    plan = check_gpu_plan(paper)
    asked = {r for r in GPU_RULES if paper["resources"].get(GPU_RULES[r], {}).get("gpus")}
    assert {r.rule for r in plan.rules} == asked >= {"teacher_samples", "stage1_kd", "stage2_opd", "opd_arm",
                                                     "evaluate", "knockout_shard"}
    for r in plan.rules:
        assert not r.problems and 0 < r.peak_gib <= 79.1, (r.rule, r.peak_gib)
        assert r.gpu_hours > 0
    opd = {r.rule: r for r in plan.rules}["stage2_opd"]
    assert opd.train_gib and opd.generate_gib  # two phases, two peaks
    assert {r.rule: r.jobs for r in plan.rules}["knockout_shard"] == 1202  # 3 policies x 200 x 2 benchmarks + 2


def _refused(cfg, match):
    with pytest.raises(GpuPlanError, match=match):
        check_gpu_plan(cfg)


def test_oversized_rollout_engine_is_refused(paper):
    cfg = copy.deepcopy(paper)
    cfg["stage2"]["rollout_engine"].update(batch_size=160, gpu_memory_utilization=0.3)
    _refused(cfg, r"rule stage2_opd: the rollout engine needs \d+\.\d GiB per GPU .* gives it 23\.7")
    _refused(cfg, "rule opd_arm: the rollout engine")
    # the engine fits its share, the share does not fit beside the trainer
    cfg["stage2"]["rollout_engine"].update(batch_size=16, gpu_memory_utilization=0.7)
    _refused(cfg, r"rule stage2_opd: its generation peak needs \d+\.\d GiB per GPU .* a GPU has 79\.1 GiB")


def test_teacher_on_one_gpu_is_refused(paper):
    cfg = copy.deepcopy(paper)
    cfg["resources"]["stage1_kd"]["gpus"] = 1
    _refused(cfg, r"rule stage1_kd: its training peak needs \d+\.\d GiB per GPU \(teacher \(sharded\) 56\.9")
    cfg = copy.deepcopy(paper)
    cfg["generation"]["tensor_parallel_size"] = 1
    cfg["resources"]["teacher_samples"]["gpus"] = 1
    _refused(cfg, r"rule teacher_samples: the vLLM engine needs \d+\.\d GiB per GPU \(KV 40x17184 62\.9, weights 56\.9")


def test_rollout_engine_tp_must_divide_the_training_gpus(paper):
    cfg = copy.deepcopy(paper)
    cfg["stage2"]["rollout_engine"]["tensor_parallel_size"] = 3
    _refused(cfg, "stage2.rollout_engine.tensor_parallel_size 3 does not divide resources.stage2_opd.gpus 4")


def test_missing_values_are_named(paper):
    cfg = copy.deepcopy(paper)
    del cfg["models"]["teacher"]["shape"]
    _refused(cfg, "config key 'models.teacher.shape' is missing")
    cfg = copy.deepcopy(paper)
    cfg["cluster"]["gpu_model"] = ""  # any GPU: its memory is unknown, nothing to compare with
    assert check_gpu_plan(cfg).gpu_memory_gib is None
    cfg["plan"]["gpu_memory_gib"] = 40.0  # a 40 GB card: the teacher's engine no longer fits
    _refused(cfg, "rule teacher_samples: the vLLM engine needs")


def test_embedded_default_is_never_refused():
    cfg = load_config([])
    assert check_gpu_plan(cfg) is None  # no rule asks for GPUs
    plan = gpu_plan(cfg, list(GPU_RULES))  # the toy shapes still plan (from models.<role>.arch)
    assert all(r.peak_gib < 10 for r in plan.rules)


def test_cli_prints_the_plan(capsys):
    assert main(["--configfile", str(REPO / "configs" / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    for rule in ("teacher_samples", "stage1_kd", "stage2_opd", "opd_arm", "knockout_shard", "total"):
        assert f"\n{rule} " in out
    assert "DOES NOT FIT" not in out


def test_dry_run_refuses_an_oversized_rule_at_parse_time(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"stage2": {"rollout_engine": {"batch_size": 160}}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "configs/paper.yaml", str(over)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "rule stage2_opd: the rollout engine needs" in r.stdout + r.stderr
