"""What the training rules run: read inputs, build the trainer, run the stage, publish outputs.

Called by the thin ``workflow_scripts/train.py`` (launched with ``python`` on CPU or ``accelerate launch`` on a
GPU node). Each stage is resumable from ``state_dir``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from rocktokens.core.io import fingerprint, read_parquet, write_parquet
from rocktokens.core.losses import LossSpec
from rocktokens.models import build_toy_model, check_same_vocab, load_model, load_tokenizer
from rocktokens.core.sequences import TokenSequence
from rocktokens.training.stages import (
    OPDConfig,
    Schedule,
    checkpoint_schedule,
    filter_prompts,
    offline_total_updates,
    opd_total_steps,
    opd_updates_per_step,
    run_offline,
    run_opd,
)
from rocktokens.core.prompts import encode_pair, encode_prompt, stop_ids
from rocktokens.training.trainer import OptimConfig, Trainer
from rocktokens.core.naming import opd_sorted

log = logging.getLogger("rocktokens.train")


def context_len(model) -> int:
    return int(model.config.max_position_embeddings)


def _setup(spec: dict) -> None:
    torch.set_num_threads(int(spec.get("threads", 1)))
    torch.use_deterministic_algorithms(True, warn_only=True)


def pretrain(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """Train a toy model from scratch on its corpus (next-token CE on response tokens)."""
    _setup(spec)
    tok = load_tokenizer(inputs["tokenizer"])
    corpus = read_parquet(inputs["corpus"], "training corpus")
    if corpus.empty:
        raise ValueError(f"training corpus {inputs['corpus']} is empty")
    mcfg = spec["model"]
    model = build_toy_model(mcfg["arch"], len(tok), tok, seed=spec["seed"])
    seqs = [encode_pair(tok, p, r) for p, r in zip(corpus["prompt"], corpus["response"])]
    pc = mcfg["pretrain"]
    optim = OptimConfig.from_config({**pc, "micro_batch": pc.get("micro_batch", pc["global_batch"])})
    total = pc["updates"]
    trainer = Trainer(model, tok, LossSpec(kd_ratio=0.0, chunk=4096), optim, total, state_dir,
                      max_len=context_len(model), fingerprint=fingerprint(spec, inputs.values()))
    log.info("pretraining %s: %d params, %d sequences, %d updates", spec["role"],
             sum(p.numel() for p in model.parameters()), len(seqs), total)
    run_offline(trainer, seqs, Schedule(total, pc.get("save_every", 100), {total: Path(outputs["model"])}),
                seed=spec["seed"], desc=f"pretrain-{spec['role']}")


def load_pair(inputs: dict, dtype: str):
    """Tokenizer, student (fp32 master weights) and teacher (in ``dtype``), checked to share one vocabulary."""
    tok = load_tokenizer(inputs["tokenizer"])
    student = load_model(inputs["student"], "float32")
    teacher = load_model(inputs["teacher"], dtype)
    check_same_vocab(load_tokenizer(inputs["teacher"]) if Path(inputs["teacher"], "tokenizer_config.json").exists() else tok,
                     tok, teacher, student)
    return tok, student, teacher


def stage_inputs(spec: dict, inputs: dict, stage: str, table: str, what: str):
    """Threads, the stage's config, tokenizer/student/teacher (vocab-checked) and its non-empty input table."""
    _setup(spec)
    tok, student, teacher = load_pair(inputs, spec.get("dtype", "float32"))
    df = read_parquet(inputs[table], what)
    if df.empty:
        raise ValueError(f"{what} {inputs[table]} is empty")
    return spec[stage], tok, student, teacher, df


def mixed_precision(spec: dict) -> str:
    return "bf16" if spec.get("dtype") == "bfloat16" else "no"


def truncate(seqs: list[TokenSequence], max_len: int) -> list[TokenSequence]:
    """Cut sequences to ``max_len`` tokens (KDFlow-style); rows whose prompt alone fills it are dropped."""
    out, cut, dropped = [], 0, 0
    for s in seqs:
        if len(s.ids) <= max_len:
            out.append(s)
        elif s.prompt_len < max_len:
            out.append(TokenSequence(ids=s.ids[:max_len], prompt_len=s.prompt_len))
            cut += 1
        else:
            dropped += 1
    if cut or dropped:
        log.warning("max_len %d: truncated %d sequences, dropped %d whose prompt is longer", max_len, cut, dropped)
    if not out:
        raise ValueError(f"every training sequence has a prompt longer than max_len={max_len}")
    return out


def loss_spec(cfg: dict) -> LossSpec:
    return LossSpec(divergence=cfg["divergence"], kd_ratio=cfg["kd_ratio"], chunk=cfg["loss_chunk"],
                    temperature=cfg.get("temperature", 1.0))


def stage1(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """Stage 1: off-policy KD on teacher samples (forward KL + CE, kd_ratio)."""
    cfg, tok, student, teacher, samples = stage_inputs(spec, inputs, "stage1", "samples", "teacher samples")
    seqs = [TokenSequence(ids=list(p) + list(r), prompt_len=len(p))
            for p, r in zip(samples["prompt_ids"], samples["token_ids"]) if len(r) > 0]
    if not seqs:
        raise ValueError("every teacher sample has an empty response")
    max_len = min(cfg.get("max_len", 10**9), context_len(student))
    seqs = truncate(seqs, max_len)
    optim = OptimConfig.from_config(cfg)
    total = offline_total_updates(len(seqs), optim.global_batch, cfg["epochs"])
    trainer = Trainer(student, tok, loss_spec(cfg), optim, total, state_dir, teacher=teacher, max_len=max_len,
                      mixed_precision=mixed_precision(spec), fingerprint=fingerprint(spec, inputs.values()))
    log.info("stage-1 KD: %d sequences, %d updates", len(seqs), total)
    run_offline(trainer, seqs, Schedule(total, cfg["save_every"], {total: Path(outputs["model"])}),
                seed=spec["seed"], desc="stage1-kd")


def opd_config(spec: dict, cfg: dict) -> OPDConfig:
    return OPDConfig(
        prompts_per_step=cfg["prompts_per_step"], rollouts_per_prompt=cfg["rollouts_per_prompt"],
        temperature=cfg.get("rollout_temperature", 1.0), top_p=cfg.get("rollout_top_p", 1.0),
        max_new_tokens=cfg["max_new_tokens"], prompt_max_len=cfg["prompt_max_len"], epochs=cfg["epochs"],
        gen_batch_size=spec["generation"]["batch_size"],
    )


def backend_factory(tok, ocfg: OPDConfig, spec: dict | None = None, model_dir=None):
    """What generates the OPD rollouts (``stage2.rollout_backend``): ``hf`` -- ``generate`` on the training model;
    ``vllm`` -- one colocated engine (:class:`~rocktokens.generation.rollouts.RolloutEngine`) started from
    ``model_dir`` on first use and reused by every run of this process (each run syncs its weights in first)."""
    sids = stop_ids(tok)
    cfg = (spec or {}).get("stage2", {})
    if cfg.get("rollout_backend", "hf") == "hf":
        from rocktokens.generation.hf import HFBackend

        def factory(model):
            return HFBackend(model=model, stop_ids=sids, pad_id=tok.pad_token_id, batch_size=ocfg.gen_batch_size,
                             n_tokens=len(tok))

        return factory
    from rocktokens.generation.rollouts import RolloutEngine
    from rocktokens.generation.vllm_backend import import_vllm

    engine: list[RolloutEngine] = []

    def factory(model):
        if not engine:
            import_vllm()  # one clear error when vLLM is absent
            engine.append(RolloutEngine(
                str(model_dir), stop_ids=sids, trainer_vocab=int(model.get_output_embeddings().weight.shape[0]),
                n_tokens=len(tok), options=cfg.get("rollout_engine"), dtype=spec["generation"].get("dtype", "auto"),
                max_model_len=ocfg.prompt_max_len + ocfg.max_new_tokens, seed=spec["seed"]))
        return engine[0]

    return factory


def require_rollout_backend(spec: dict) -> None:
    """Before any model is loaded: a ``vllm`` rollout backend needs vLLM in this environment."""
    if spec["stage2"].get("rollout_backend", "hf") == "vllm":
        from rocktokens.generation.vllm_backend import import_vllm

        import_vllm()


def check_context(cfg: dict, student) -> None:
    if cfg["prompt_max_len"] + cfg["max_new_tokens"] > context_len(student):
        raise ValueError(
            f"stage2.prompt_max_len + max_new_tokens = {cfg['prompt_max_len'] + cfg['max_new_tokens']} exceeds the "
            f"student's context of {context_len(student)} tokens"
        )


def checkpoint_names(outputs: dict) -> list[str]:
    return opd_sorted(outputs)


def stage2(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """Stage 2: on-policy distillation with pure reverse KL (Eq. 1); C checkpoints + the training history."""
    require_rollout_backend(spec)
    cfg, tok, student, teacher, prompts_df = stage_inputs(spec, inputs, "stage2", "prompts", "stage-2 prompt set")
    prompts = filter_prompts([encode_prompt(tok, p) for p in prompts_df["prompt"]], cfg["prompt_max_len"])
    ocfg = opd_config(spec, cfg)
    check_context(cfg, student)
    optim = OptimConfig.from_config(cfg)
    steps = opd_total_steps(len(prompts), ocfg)
    total_updates = steps * opd_updates_per_step(ocfg, optim.global_batch)
    ckpt_names = checkpoint_names(outputs)
    at = checkpoint_schedule(steps, len(ckpt_names))
    if len(at) != len(ckpt_names):
        raise ValueError(f"{len(ckpt_names)} checkpoints do not fit in {steps} OPD steps")
    trainer = Trainer(student, tok, loss_spec(cfg), optim, total_updates, state_dir, teacher=teacher,
                      max_len=context_len(student), mixed_precision=mixed_precision(spec),
                      fingerprint=fingerprint(spec, inputs.values()))
    log.info("stage-2 OPD: %d prompts, %d steps x %d updates, checkpoints at steps %s", len(prompts), steps,
             total_updates // steps, at)
    history = run_opd(trainer, prompts, ocfg, spec["seed"], {s: Path(outputs[n]) for s, n in zip(at, ckpt_names)},
                      cfg["save_every"], backend_factory(tok, ocfg, spec, inputs["student"]))
    write_parquet(pd.DataFrame(history), outputs["history"])


STAGES = {"pretrain": pretrain, "stage1": stage1, "stage2": stage2}
