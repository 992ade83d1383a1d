"""The training stages as drivers around :class:`~rocktokens.training.trainer.Trainer`.

* :func:`run_offline` — toy-model pretraining (CE) and stage-1 off-policy KD (forward KL + CE, kd_ratio) on
  fixed (prompt, response) sequences.
* :func:`run_opd` — stage-2 on-policy distillation (Eq. 1): each step the current student samples rollouts for
  a slice of prompts, then the student is updated on them with the full-vocabulary reverse KL to the teacher.

Every random choice (data order, rollout seeds) is a pure function of ``(seed, step)`` so a resumed run
repeats exactly what an uninterrupted one does.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from rocktokens.core.seeding import derive_seed, permutation
from rocktokens.core.sequences import TokenSequence
from rocktokens.training.trainer import Trainer, publish

log = logging.getLogger("rocktokens.stages")
# Trainer.update statistics only the detailed (arm) histories keep: timings are not reproducible across reruns.
DETAIL_KEYS = ("lr_used", "update_s", "instrument_s", "update_norm")


# ----------------------------------------------------------------------------- offline stages
@dataclass
class Schedule:
    """When to save resumable state and which update counts produce exported checkpoints."""

    total_updates: int
    save_every: int
    checkpoints: dict[int, Path]  # update -> output dir


def offline_total_updates(n: int, global_batch: int, epochs: float = 1.0, steps: int | None = None) -> int:
    if steps:
        return int(steps)
    if n == 0:
        raise ValueError("no training sequences (empty input table)")
    return max(1, math.ceil(epochs * n / global_batch))


def offline_batch(seqs: Sequence[TokenSequence], update: int, global_batch: int, seed: int) -> list[TokenSequence]:
    """The global batch of ``update``: consecutive slices of one seeded permutation per epoch."""
    n = len(seqs)
    out = []
    pos = update * global_batch
    for k in range(global_batch):
        epoch, i = divmod(pos + k, n)
        out.append(seqs[int(permutation(n, seed, "epoch", epoch)[i])])
    return out


def run_offline(trainer: Trainer, seqs: Sequence[TokenSequence], sched: Schedule, seed: int, desc: str) -> list[dict]:
    """Train on fixed sequences for ``sched.total_updates`` updates; resumable; returns the history."""
    if not seqs:
        raise ValueError(f"{desc}: no training sequences")
    progress = trainer.resume() or {"step": 0, "history": []}
    history = progress["history"]
    bar = tqdm(range(progress["step"], sched.total_updates), desc=desc, initial=progress["step"], total=sched.total_updates,
               disable=not trainer.acc.is_main_process)  # one bar per job, not one per rank
    for u in bar:
        stats = trainer.update(offline_batch(seqs, u, trainer.optim.global_batch, seed))
        history.append({"update": u + 1, **{k: v for k, v in stats.items() if k not in DETAIL_KEYS}})
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
        done = u + 1
        if done in sched.checkpoints:
            trainer.export(trainer.state_dir / "checkpoints" / f"update-{done:07d}", {"stage": desc, "update": done})
        if done % sched.save_every == 0 or done == sched.total_updates:
            trainer.save_state({"step": done, "history": history})
    for u, out in sched.checkpoints.items():
        publish(trainer.state_dir / "checkpoints" / f"update-{u:07d}", out)
    return history


# ----------------------------------------------------------------------------- on-policy distillation
@dataclass(frozen=True)
class OPDConfig:
    prompts_per_step: int
    rollouts_per_prompt: int
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    prompt_max_len: int = 800
    epochs: float = 1.0
    gen_batch_size: int = 64


def opd_total_steps(n_prompts: int, cfg: OPDConfig) -> int:
    steps = int(cfg.epochs * n_prompts) // cfg.prompts_per_step
    if steps < 1:
        raise ValueError(
            f"stage-2 has {n_prompts} prompts, fewer than one step of {cfg.prompts_per_step}: nothing to train on"
        )
    return steps


def opd_updates_per_step(cfg: OPDConfig, global_batch: int) -> int:
    n = cfg.prompts_per_step * cfg.rollouts_per_prompt
    if n % global_batch:
        raise ValueError(
            f"prompts_per_step*rollouts_per_prompt ({n}) must be a multiple of the global batch ({global_batch})"
        )
    return n // global_batch


def filter_prompts(prompts: Sequence[list[int]], prompt_max_len: int) -> list[list[int]]:
    """Drop prompts longer than ``prompt_max_len`` tokens (as KDFlow does); an empty result is an error."""
    kept = [p for p in prompts if len(p) <= prompt_max_len]
    if len(kept) < len(prompts):
        log.warning("dropped %d of %d stage-2 prompts longer than prompt_max_len=%d", len(prompts) - len(kept),
                    len(prompts), prompt_max_len)
    if not kept:
        raise ValueError(f"every stage-2 prompt is longer than prompt_max_len={prompt_max_len}")
    return kept


def rollout_step(trainer: Trainer, backend, prompts: Sequence[list[int]], step: int, seed: int, cfg: OPDConfig,
                 weight_fn: Callable[[TokenSequence], list[float] | None] | None = None) -> tuple[list[TokenSequence], dict]:
    """Sample ``rollouts_per_prompt`` continuations per prompt from the current student.

    ``weight_fn(seq)`` gives the per-response-token weights w(x_t, t) (Eq. 19) of a rollout; it sees
    ``seq.meta["seed"]`` (the rollout's own seed, for any random choice it makes) and ``seq.meta["step"]``, and may
    leave counts in ``seq.meta`` (keys starting ``n_``): their sums over the step's rollouts, divided by the
    step's response tokens, are reported as ``<name>_share`` (e.g. ``n_masked`` → ``masked_share``).
    """
    from rocktokens.generation import GenerationRequest, SamplingParams

    reqs = [
        GenerationRequest(prompt_ids=tuple(p), seed=derive_seed(seed, "opd-rollout", step, i, r))
        for i, p in enumerate(prompts)
        for r in range(cfg.rollouts_per_prompt)
    ]
    trainer.model.eval()
    if hasattr(backend, "sync"):  # an engine of its own (vLLM): give it the trainer's current weights first
        backend.sync(trainer)
    results = backend.generate(reqs, SamplingParams(cfg.temperature, cfg.top_p, cfg.max_new_tokens))
    if hasattr(backend, "release"):  # and its GPU memory back to the trainer for the updates
        backend.release()
    seqs = []
    for q, res in zip(reqs, results):
        if not res.token_ids:
            raise ValueError(f"empty rollout at OPD step {step} (prompt of {len(q.prompt_ids)} tokens)")
        s = TokenSequence(ids=list(q.prompt_ids) + list(res.token_ids), prompt_len=len(q.prompt_ids),
                          meta={"seed": q.seed, "step": step})
        if weight_fn is not None:
            s.weights = weight_fn(s)
        seqs.append(s)
    lengths = [s.n_response for s in seqs]
    stats = {
        "mean_response_len": sum(lengths) / len(lengths),
        "stop_rate": sum(r.finish_reason == "stop" for r in results) / len(results),
    }
    counts = sorted({k for s in seqs for k in s.meta if k.startswith("n_")})
    for k in counts:
        stats[f"{k[2:]}_share"] = sum(float(s.meta.get(k, 0)) for s in seqs) / sum(lengths)
    return seqs, stats


def run_opd(trainer: Trainer, prompts: Sequence[list[int]], cfg: OPDConfig, seed: int,
            checkpoint_steps: dict[int, Path], save_every: int | None, backend_factory: Callable,
            weight_fn=None, desc: str = "stage2-opd", max_steps: int | None = None,
            detailed: bool = False) -> list[dict]:
    """Stage 2: per step, rollouts of the current student, then reverse-KL updates to the teacher (Eq. 1).

    ``max_steps`` stops after that many steps (the first steps of the epoch; the lr schedule is the trainer's).
    ``save_every=None`` never saves resumable state (throw-away runs). ``detailed`` adds per step: lr_used
    (first update's rate), update_norm (mean over the step's updates, if tracked), update_s (sum of the updates'
    wall seconds without the probe / update-norm instrumentation, which is instrument_s; ``Trainer.update``),
    response_tokens (the step's response tokens, the sum of the updates' Z), update_s_per_token
    (update_s / response_tokens: arms whose rollouts differ in length compare per token), rollout_s, and the
    zero-weight share (positions whose head and loss were skipped).
    A trainer probe's state is saved with the progress and restored on resume.
    """
    total = opd_total_steps(len(prompts), cfg)
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        total = min(total, int(max_steps))
    per_step = opd_updates_per_step(cfg, trainer.optim.global_batch)
    progress = trainer.resume() or {"step": 0, "history": []}
    history = progress["history"]
    probe = getattr(trainer, "probe", None)
    if probe is not None and progress.get("probe") is not None:
        probe.load_state_dict(progress["probe"])
    backend = backend_factory(trainer.unwrapped())
    bar = tqdm(range(progress["step"], total), desc=desc, initial=progress["step"], total=total,
               disable=not trainer.acc.is_main_process)  # one bar per job, not one per rank
    for step in bar:
        start = step * cfg.prompts_per_step
        order = [int(permutation(len(prompts), seed, "opd-epoch", (start + k) // len(prompts))[(start + k) % len(prompts)])
                 for k in range(cfg.prompts_per_step)]
        t0 = time.perf_counter()
        seqs, stats = rollout_step(trainer, backend, [prompts[i] for i in order], step, seed, cfg, weight_fn)
        rollout_s = time.perf_counter() - t0
        perm = permutation(len(seqs), seed, "opd-shuffle", step)
        seqs = [seqs[int(i)] for i in perm]
        gb = trainer.optim.global_batch
        losses = []
        for u in range(per_step):
            losses.append(trainer.update(seqs[u * gb : (u + 1) * gb]))
        rec = {
            "step": step + 1,
            "loss": sum(x["loss"] for x in losses) / len(losses),
            "lr": losses[-1]["lr"],
            "grad_norm": sum(x["grad_norm"] for x in losses) / len(losses),
            **stats,
        }
        if detailed:
            rec["lr_used"] = losses[0]["lr_used"]
            if "update_norm" in losses[0]:
                rec["update_norm"] = sum(x["update_norm"] for x in losses) / len(losses)
            rec["update_s"] = sum(x["update_s"] for x in losses)
            rec["instrument_s"] = sum(x["instrument_s"] for x in losses)
            rec["response_tokens"] = sum(x["tokens"] for x in losses)
            rec["update_s_per_token"] = rec["update_s"] / rec["response_tokens"]
            rec["rollout_s"] = rollout_s
        history.append(rec)
        bar.set_postfix(loss=f"{rec['loss']:.4f}", len=f"{rec['mean_response_len']:.0f}")
        done = step + 1
        if done in checkpoint_steps:
            trainer.export(trainer.state_dir / "checkpoints" / f"step-{done:07d}", {"stage": desc, "step": done})
        if save_every is not None and (done % save_every == 0 or done == total or done in checkpoint_steps):
            state = {"step": done, "history": history}
            if probe is not None:
                state["probe"] = probe.state_dict()
            trainer.save_state(state)
    for s, out in checkpoint_steps.items():
        publish(trainer.state_dir / "checkpoints" / f"step-{s:07d}", out)
    return history


def checkpoint_schedule(total: int, n_checkpoints: int) -> list[int]:
    """``n_checkpoints`` evenly spaced steps ending at ``total`` (the paper saves 7 during one OPD epoch)."""
    if n_checkpoints < 1 or n_checkpoints > total:
        raise ValueError(f"cannot place {n_checkpoints} checkpoints in {total} steps")
    return sorted({int(round(total * (k + 1) / n_checkpoints)) for k in range(n_checkpoints)})
