"""Worker of tests/test_multiprocess.py: a few stage-2 OPD steps of the real trainer on tiny models.

Run as ``python mp_opd_worker.py ARGS`` (one process) or under ``accelerate launch --cpu --num_processes 2 ...``
(two processes, gloo). Rank 0 writes ``result.json`` (history, world size, backend) and ``weights.safetensors``.
"""
import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from rocktokens.generation.hf import HFBackend
from rocktokens.core.losses import LossSpec
from rocktokens.models import load_model, load_tokenizer
from rocktokens.training.stages import OPDConfig, run_opd
from rocktokens.core.prompts import encode_prompt, stop_ids
from rocktokens.training.trainer import OptimConfig, Trainer

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for name in ("student", "teacher", "tokenizer", "prompts", "out"):
        ap.add_argument(f"--{name}", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    tok = load_tokenizer(a.tokenizer)
    prompts = [encode_prompt(tok, p) for p in json.loads(Path(a.prompts).read_text())]
    # 4 steps x 8 rollouts; global batch 8 split over the processes, micro-batch 2 (gradient accumulation too)
    cfg = OPDConfig(prompts_per_step=4, rollouts_per_prompt=2, temperature=1.0, top_p=1.0, max_new_tokens=12,
                    prompt_max_len=256, epochs=1.0, gen_batch_size=8)
    # warmup then cosine: the lr of every update must follow the schedule of one process (not num_processes x faster)
    optim = OptimConfig(lr=3e-3, global_batch=8, micro_batch=2, warmup_ratio=0.25, schedule="cosine", min_lr_ratio=0.1,
                        clip=1.0)
    out = Path(a.out)
    trainer = Trainer(load_model(a.student), tok, LossSpec(divergence="rkl", kd_ratio=1.0, chunk=16), optim,
                      total_updates=4, state_dir=out / "state", teacher=load_model(a.teacher))
    sids = stop_ids(tok)
    history = run_opd(trainer, prompts[:16], cfg, seed=7, checkpoint_steps={}, save_every=100,
                      backend_factory=lambda m: HFBackend(model=m, stop_ids=sids, pad_id=tok.pad_token_id,
                                                          batch_size=8, n_tokens=len(tok), progress=False))
    acc = trainer.acc
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else None
    weights = {k: v.detach().contiguous().clone() for k, v in trainer.unwrapped().state_dict().items()}
    save_file(weights, str(out / f"weights_rank{acc.process_index}.safetensors"))  # ranks must agree
    if acc.is_main_process:
        save_file(weights, str(out / "weights.safetensors"))
        (out / "result.json").write_text(json.dumps({
            "history": history, "num_processes": acc.num_processes, "backend": backend,
            "distributed_type": str(acc.distributed_type)}, default=float))
    acc.wait_for_everyone()
