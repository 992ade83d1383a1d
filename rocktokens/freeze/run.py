"""What the ``opd_arm`` rule runs (rules/freeze.smk): one rock-freeze / optimizer arm, a full OPD run from the
stage-1 checkpoint with the arm's token weights (Eq. 19), optimizer and lr, and the optimizer probe.

Everything but the arm's weights, optimizer and probe is stage 2 itself (``rocktokens.distill.entry``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from rocktokens.core.io import fingerprint, read_json, read_parquet, write_parquet
from rocktokens.distill.entry import (
    backend_factory,
    check_context,
    checkpoint_names,
    context_len,
    load_pair,
    loss_spec,
    mixed_precision,
    opd_config,
    require_rollout_backend,
    stage_inputs,
)
from rocktokens.core.prompts import encode_prompt
from rocktokens.training.stages import checkpoint_schedule, filter_prompts, opd_total_steps, opd_updates_per_step, run_opd
from rocktokens.training.trainer import OptimConfig, Trainer

log = logging.getLogger("rocktokens.freeze")


def _arm_weights(spec: dict, inputs: dict, arm, tok) -> tuple:
    """The arm's weight function (Eq. 19 / random control), its K, and the rock artifacts the probe may need."""
    from rocktokens.freeze.arms import ArmWeights, RockMasker, frequency_bins, frozen_K, planted_set

    if not arm.needs_rocks:
        return ArmWeights(arm), None, {}
    K = frozen_K(spec["freeze"]["K"], read_json(inputs["record"]) if "record" in inputs else None)
    arts = {"rocks": inputs["rocks"], "controls": inputs["controls"], "token_stats": inputs["token_stats"]}
    if arm.windows == "none":
        return ArmWeights(arm), K, arts
    if arm.planted is not None:  # the planted types of one role in place of R (their W(v) built alike)
        rocks = planted_set(read_parquet(inputs["planted"], "planted types"), arm.planted)
        log.info("arm %s freezes the planted %s types %s", arm.name, arm.planted, rocks["token"].tolist())
    else:
        rocks = read_parquet(arts["rocks"], f"rock set K={K}")
        if len(rocks) != K:
            raise ValueError(f"the frozen rock set {inputs['rocks']} has {len(rocks)} types, not K={K}")
    masker = RockMasker.from_artifacts(rocks, read_parquet(inputs["occurrences"], "rock-analysis occurrences"),
                                       read_json(inputs["scores"]))
    if arm.windows != "random":
        return ArmWeights(arm, masker), K, arts
    stats = read_parquet(arts["token_stats"], "token stats")
    rnd = spec["freeze"]["random"]
    bins = frequency_bins(stats, rnd["freq_bins"], max(len(tok), int(stats["token_id"].max()) + 1))
    return ArmWeights(arm, masker, bins, rnd["candidates"], rnd["sweeps"]), K, arts


def _make_probe(arts: dict, cfg: dict):
    """The optimizer probe (``rocktokens.geometry.probe``) on the rock / control / high-KL rows of the arm's rock set K;
    ``cfg`` = config ``geometry.probe`` (``every``, ``min_freq``)."""
    from rocktokens.geometry.probe import OptimizerProbe, probe_groups

    groups = probe_groups(arts["rocks"], arts["controls"], arts["token_stats"], min_freq=cfg.get("min_freq", 5))
    return OptimizerProbe(groups, every=cfg.get("every", 1))


def opd_arm(spec: dict, inputs: dict, outputs: dict, state_dir) -> None:
    """One rock-freeze / optimizer arm: a full OPD run from the stage-1 checkpoint (``rocktokens.freeze.arms``).

    Identical to stage 2 in everything but the arm's weights (λ, windows), optimizer/lr and probe; runs the first
    ``freeze.steps`` steps of the OPD epoch (same prompts, order and rollout seeds in every arm) with the lr
    schedule laid over those steps. Outputs: checkpoints opd-1..C, history (per step: loss, lr, grad_norm,
    update_norm, masked shares, update/rollout seconds), probe records, and arm.json (resolved settings).
    """
    from rocktokens.freeze.arms import ArmSpec, probe_frame
    from rocktokens.core.io import write_json

    require_rollout_backend(spec)
    cfg, tok, student, teacher, prompts_df = stage_inputs(spec, inputs, "stage2", "prompts", "stage-2 prompt set")
    fz = spec["freeze"]
    arm = ArmSpec(**spec["arm"])
    prompts = filter_prompts([encode_prompt(tok, p) for p in prompts_df["prompt"]], cfg["prompt_max_len"])
    ocfg = opd_config(spec, cfg)
    check_context(cfg, student)
    steps = opd_total_steps(len(prompts), ocfg)
    if fz.get("steps") is not None:
        if fz["steps"] > steps:
            raise ValueError(f"freeze.steps={fz['steps']} exceeds the {steps} steps of one stage-2 epoch")
        steps = int(fz["steps"])
    per_step = opd_updates_per_step(ocfg, cfg["global_batch"])
    ckpt_names = checkpoint_names(outputs)
    at = checkpoint_schedule(steps, len(ckpt_names))
    if len(at) != len(ckpt_names):
        raise ValueError(f"{len(ckpt_names)} checkpoints do not fit in {steps} steps")
    weight_fn, K, arts = _arm_weights(spec, inputs, arm, tok)
    fp = fingerprint(spec, inputs.values())
    factory = backend_factory(tok, ocfg, spec, inputs["student"])
    mp = mixed_precision(spec)
    base = {**cfg, "optimizer": arm.optimizer}
    lr = float(arm.lr if arm.lr is not None else cfg["lr"])

    def make_trainer(lr_: float, state, models, probe=None):
        s, t = models
        return Trainer(s, tok, loss_spec(cfg), OptimConfig.from_config({**base, "lr": lr_}), steps * per_step, state,
                       teacher=t, max_len=context_len(s), mixed_precision=mp, fingerprint=fp, probe=probe,
                       track_update_norm=bool(fz["update_norm"]))

    match = None
    if arm.lr_match is not None:
        match = _lr_match(inputs, fz, lr, fp, Path(str(state_dir) + ".lr_match.json"),
                          # each trial: fresh stage-1 weights, never saved (save_every=None), no checkpoints
                          lambda lr_: run_opd(make_trainer(lr_, Path(str(state_dir) + ".trial"),
                                                           load_pair(inputs, spec.get("dtype", "float32"))[1:]),
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
    """The lr of an ``lr_match`` arm (rule in ``rocktokens.freeze.arms``); cached beside the state for resumed runs."""

    from rocktokens.freeze.arms import lr_match_target, next_lr
    from rocktokens.core.io import write_json

    if path.exists():
        cached = read_json(path)
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
