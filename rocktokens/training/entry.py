"""What the training rules run: read inputs, build the trainer, run the stage, publish outputs.

Called by the thin ``workflow_scripts/train.py`` (launched with ``python`` on CPU or ``accelerate launch`` on a
GPU node). Each stage is resumable from ``state_dir``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from rocktokens.io import fingerprint, read_parquet, write_parquet
from rocktokens.losses import LossSpec
from rocktokens.models import build_toy_model, check_same_vocab, load_model, load_tokenizer
from rocktokens.training.batches import TokenSequence
from rocktokens.training.stages import (
    OPDConfig,
    Schedule,
    checkpoint_schedule,
    encode_pair,
    encode_prompt,
    filter_prompts,
    offline_total_updates,
    opd_total_steps,
    opd_updates_per_step,
    run_offline,
    run_opd,
    stop_ids,
)
from rocktokens.training.trainer import OptimConfig, Trainer

log = logging.getLogger("rocktokens.train")


def _context_len(model) -> int:
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
                      max_len=_context_len(model), fingerprint=fingerprint(spec, inputs.values()))
    log.info("pretraining %s: %d params, %d sequences, %d updates", spec["role"],
             sum(p.numel() for p in model.parameters()), len(seqs), total)
    run_offline(trainer, seqs, Schedule(total, pc.get("save_every", 100), {total: Path(outputs["model"])}),
                seed=spec["seed"], desc=f"pretrain-{spec['role']}")


def _load_pair(inputs: dict, dtype: str):
    """Tokenizer, student (fp32 master weights) and teacher (in ``dtype``), checked to share one vocabulary."""
    tok = load_tokenizer(inputs["tokenizer"])
    student = load_model(inputs["student"], "float32")
    teacher = load_model(inputs["teacher"], dtype)
    check_same_vocab(load_tokenizer(inputs["teacher"]) if Path(inputs["teacher"], "tokenizer_config.json").exists() else tok,
                     tok, teacher, student)
    return tok, student, teacher


def _stage_inputs(spec: dict, inputs: dict, stage: str, table: str, what: str):
    """Threads, the stage's config, tokenizer/student/teacher (vocab-checked) and its non-empty input table."""
    _setup(spec)
    tok, student, teacher = _load_pair(inputs, spec.get("dtype", "float32"))
    df = read_parquet(inputs[table], what)
    if df.empty:
        raise ValueError(f"{what} {inputs[table]} is empty")
    return spec[stage], tok, student, teacher, df


def _mixed_precision(spec: dict) -> str:
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


def _loss_spec(cfg: dict) -> LossSpec:
    return LossSpec(divergence=cfg["divergence"], kd_ratio=cfg["kd_ratio"], chunk=cfg["loss_chunk"],
                    temperature=cfg.get("temperature", 1.0))


def stage1(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """Stage 1: off-policy KD on teacher samples (forward KL + CE, kd_ratio)."""
    cfg, tok, student, teacher, samples = _stage_inputs(spec, inputs, "stage1", "samples", "teacher samples")
    seqs = [TokenSequence(ids=list(p) + list(r), prompt_len=len(p))
            for p, r in zip(samples["prompt_ids"], samples["token_ids"]) if len(r) > 0]
    if not seqs:
        raise ValueError("every teacher sample has an empty response")
    max_len = min(cfg.get("max_len", 10**9), _context_len(student))
    seqs = truncate(seqs, max_len)
    optim = OptimConfig.from_config(cfg)
    total = offline_total_updates(len(seqs), optim.global_batch, cfg["epochs"])
    trainer = Trainer(student, tok, _loss_spec(cfg), optim, total, state_dir, teacher=teacher, max_len=max_len,
                      mixed_precision=_mixed_precision(spec), fingerprint=fingerprint(spec, inputs.values()))
    log.info("stage-1 KD: %d sequences, %d updates", len(seqs), total)
    run_offline(trainer, seqs, Schedule(total, cfg["save_every"], {total: Path(outputs["model"])}),
                seed=spec["seed"], desc="stage1-kd")


def _opd_config(spec: dict, cfg: dict) -> OPDConfig:
    return OPDConfig(
        prompts_per_step=cfg["prompts_per_step"], rollouts_per_prompt=cfg["rollouts_per_prompt"],
        temperature=cfg.get("rollout_temperature", 1.0), top_p=cfg.get("rollout_top_p", 1.0),
        max_new_tokens=cfg["max_new_tokens"], prompt_max_len=cfg["prompt_max_len"], epochs=cfg["epochs"],
        gen_batch_size=spec["generation"]["batch_size"],
    )


def _backend_factory(tok, ocfg: OPDConfig, spec: dict | None = None, model_dir=None):
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


def _require_rollout_backend(spec: dict) -> None:
    """Before any model is loaded: a ``vllm`` rollout backend needs vLLM in this environment."""
    if spec["stage2"].get("rollout_backend", "hf") == "vllm":
        from rocktokens.generation.vllm_backend import import_vllm

        import_vllm()


def _check_context(cfg: dict, student) -> None:
    if cfg["prompt_max_len"] + cfg["max_new_tokens"] > _context_len(student):
        raise ValueError(
            f"stage2.prompt_max_len + max_new_tokens = {cfg['prompt_max_len'] + cfg['max_new_tokens']} exceeds the "
            f"student's context of {_context_len(student)} tokens"
        )


def _ckpt_names(outputs: dict) -> list[str]:
    return sorted((k for k in outputs if k.startswith("opd-")), key=lambda k: int(k[4:]))


def stage2(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """Stage 2: on-policy distillation with pure reverse KL (Eq. 1); C checkpoints + the training history."""
    _require_rollout_backend(spec)
    cfg, tok, student, teacher, prompts_df = _stage_inputs(spec, inputs, "stage2", "prompts", "stage-2 prompt set")
    prompts = filter_prompts([encode_prompt(tok, p) for p in prompts_df["prompt"]], cfg["prompt_max_len"])
    ocfg = _opd_config(spec, cfg)
    _check_context(cfg, student)
    optim = OptimConfig.from_config(cfg)
    steps = opd_total_steps(len(prompts), ocfg)
    total_updates = steps * opd_updates_per_step(ocfg, optim.global_batch)
    ckpt_names = _ckpt_names(outputs)
    at = checkpoint_schedule(steps, len(ckpt_names))
    if len(at) != len(ckpt_names):
        raise ValueError(f"{len(ckpt_names)} checkpoints do not fit in {steps} OPD steps")
    trainer = Trainer(student, tok, _loss_spec(cfg), optim, total_updates, state_dir, teacher=teacher,
                      max_len=_context_len(student), mixed_precision=_mixed_precision(spec),
                      fingerprint=fingerprint(spec, inputs.values()))
    log.info("stage-2 OPD: %d prompts, %d steps x %d updates, checkpoints at steps %s", len(prompts), steps,
             total_updates // steps, at)
    history = run_opd(trainer, prompts, ocfg, spec["seed"], {s: Path(outputs[n]) for s, n in zip(at, ckpt_names)},
                      cfg["save_every"], _backend_factory(tok, ocfg, spec, inputs["student"]))
    write_parquet(pd.DataFrame(history), outputs["history"])


# ----------------------------------------------------------------------------- rock-freeze / optimizer arms
def _arm_weights(spec: dict, inputs: dict, arm, tok) -> tuple:
    """The arm's weight function (Eq. 19 / random control), its K, and the rock artifacts the probe may need."""
    from rocktokens.freeze import ArmWeights, RockMasker, frequency_bins, resolve_K
    from rocktokens.io import read_json

    if not arm.needs_rocks:
        return ArmWeights(arm), None, {}
    chosen = read_json(inputs["chosen"])
    K = resolve_K(spec["freeze"]["K"], chosen)
    if f"rocks_K{K}" not in inputs:
        raise ValueError(f"freeze.K resolves to K={K}, which the rock analysis did not write (rocks.Ks)")
    arts = {"rocks": inputs[f"rocks_K{K}"], "controls": inputs[f"controls_K{K}"], "token_stats": inputs["token_stats"]}
    if arm.windows == "none":
        return ArmWeights(arm), K, arts
    rocks = read_parquet(arts["rocks"], f"rock set K={K}")
    masker = RockMasker.from_artifacts(rocks, read_parquet(inputs["occurrences"], "rock-analysis occurrences"), chosen)
    if arm.windows != "random":
        return ArmWeights(arm, masker), K, arts
    stats = read_parquet(arts["token_stats"], "token stats")
    rnd = spec["freeze"]["random"]
    bins = frequency_bins(stats, rnd["freq_bins"], max(len(tok), int(stats["token_id"].max()) + 1))
    return ArmWeights(arm, masker, bins, rnd["candidates"], rnd["sweeps"]), K, arts


def _make_probe(arts: dict, cfg: dict):
    """The optimizer probe (``rocktokens.probe``) on the rock / control / high-KL rows of the arm's rock set K;
    ``cfg`` = config ``geometry.probe`` (``every``, ``min_freq``)."""
    from rocktokens.probe import OptimizerProbe, probe_groups

    groups = probe_groups(arts["rocks"], arts["controls"], arts["token_stats"], min_freq=cfg.get("min_freq", 5))
    return OptimizerProbe(groups, every=cfg.get("every", 1))


def opd_arm(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """One rock-freeze / optimizer arm: a full OPD run from the stage-1 checkpoint (``rocktokens.freeze``).

    Identical to stage 2 in everything but the arm's weights (λ, windows), optimizer/lr and probe; runs the first
    ``freeze.steps`` steps of the OPD epoch (same prompts, order and rollout seeds in every arm) with the lr
    schedule laid over those steps. Outputs: checkpoints opd-1..C, history (per step: loss, lr, grad_norm,
    update_norm, masked shares, update/rollout seconds), probe records, and arm.json (resolved settings).
    """
    from rocktokens.freeze import ArmSpec, probe_frame
    from rocktokens.io import write_json

    _require_rollout_backend(spec)
    cfg, tok, student, teacher, prompts_df = _stage_inputs(spec, inputs, "stage2", "prompts", "stage-2 prompt set")
    fz = spec["freeze"]
    arm = ArmSpec(**spec["arm"])
    prompts = filter_prompts([encode_prompt(tok, p) for p in prompts_df["prompt"]], cfg["prompt_max_len"])
    ocfg = _opd_config(spec, cfg)
    _check_context(cfg, student)
    steps = opd_total_steps(len(prompts), ocfg)
    if fz.get("steps") is not None:
        if fz["steps"] > steps:
            raise ValueError(f"freeze.steps={fz['steps']} exceeds the {steps} steps of one stage-2 epoch")
        steps = int(fz["steps"])
    per_step = opd_updates_per_step(ocfg, cfg["global_batch"])
    ckpt_names = _ckpt_names(outputs)
    at = checkpoint_schedule(steps, len(ckpt_names))
    if len(at) != len(ckpt_names):
        raise ValueError(f"{len(ckpt_names)} checkpoints do not fit in {steps} steps")
    weight_fn, K, arts = _arm_weights(spec, inputs, arm, tok)
    fp = fingerprint(spec, inputs.values())
    factory = _backend_factory(tok, ocfg, spec, inputs["student"])
    mp = _mixed_precision(spec)
    base = {**cfg, "optimizer": arm.optimizer}
    lr = float(arm.lr if arm.lr is not None else cfg["lr"])

    def make_trainer(lr_: float, state, models, probe=None):
        s, t = models
        return Trainer(s, tok, _loss_spec(cfg), OptimConfig.from_config({**base, "lr": lr_}), steps * per_step, state,
                       teacher=t, max_len=_context_len(s), mixed_precision=mp, fingerprint=fp, probe=probe,
                       track_update_norm=bool(fz["update_norm"]))

    match = None
    if arm.lr_match is not None:
        match = _lr_match(inputs, fz, lr, fp, Path(str(state_dir) + ".lr_match.json"),
                          # each trial: fresh stage-1 weights, never saved (save_every=None), no checkpoints
                          lambda lr_: run_opd(make_trainer(lr_, Path(str(state_dir) + ".trial"),
                                                           _load_pair(inputs, spec.get("dtype", "float32"))[1:]),
                                              prompts, ocfg, spec["seed"], {}, None, factory, weight_fn,
                                              desc=f"{arm.name}-lr-match", max_steps=fz["lr_match"]["steps"],
                                              detailed=True))
        lr = match["lr"]
    probe = _make_probe(arts, spec.get("probe", {})) if arm.probe else None
    trainer = make_trainer(lr, state_dir, (student, teacher), probe)
    log.info("arm %s: λ=%s windows=%s K=%s optimizer=%s lr=%.3g, %d steps x %d updates, checkpoints at %s",
             arm.name, arm.lam, arm.windows, K, arm.optimizer, lr, steps, per_step, at)
    history = run_opd(trainer, prompts, ocfg, spec["seed"], {s: Path(outputs[n]) for s, n in zip(at, ckpt_names)},
                      cfg["save_every"], factory, weight_fn, desc=f"arm-{arm.name}", max_steps=steps, detailed=True)
    hist = pd.DataFrame(history)
    write_parquet(hist, outputs["history"])
    write_parquet(probe_frame(probe), outputs["probe"])
    write_json({"arm": arm.to_dict(), "K": K, "lr": lr, "lr_match": match, "steps": steps, "updates_per_step": per_step,
                "checkpoints": dict(zip(ckpt_names, at))}, outputs["arm"])


def _lr_match(inputs: dict, fz: dict, lr0: float, fp: str, path: Path, trial) -> dict:
    """The lr of an ``lr_match`` arm (rule in ``rocktokens.freeze``); cached beside the state for resumed runs."""
    import json

    from rocktokens.freeze import lr_match_target, next_lr
    from rocktokens.io import write_json

    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("fingerprint") == fp:
            return cached
    n = fz["lr_match"]["steps"]
    target = lr_match_target(read_parquet(inputs["lr_reference"], "reference arm history"), n)
    lr, trace = lr0, []
    for i in range(fz["lr_match"]["iterations"]):
        measured = lr_match_target(pd.DataFrame(trial(lr)), n)
        trace.append({"lr": lr, "update_norm": measured})
        log.info("lr match %d: lr %.4g gives mean update norm %.4g (target %.4g)", i, lr, measured, target)
        lr = next_lr(lr, measured, target)
    out = {"lr": lr, "target_update_norm": target, "steps": n, "trace": trace, "fingerprint": fp}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, path)
    return out


STAGES = {"pretrain": pretrain, "stage1": stage1, "stage2": stage2, "opd_arm": opd_arm}
