"""One resumable trainer for every stage (toy pretraining, stage-1 KD, stage-2 OPD).

Runs under ``accelerate`` (one CPU process in the embedded world; multi-GPU at paper scale). Its saved state
(weights, optimizer, scheduler, RNG via ``Accelerator.save_state``, plus the progress counters) lets a killed
run continue from its last save and end with the same weights as an uninterrupted run: every random choice
the drivers make is a pure function of ``(seed, step)``, so nothing depends on how often the run was restarted.

Optimizer probe protocol (used by the freeze/optimizer arms, ``rocktokens.geometry.probe``): a ``probe`` object given to
the trainer has ``before_step(trainer)`` — called after gradient clipping and before ``opt.step()`` (gradients
present, parameters not yet updated) — and ``after_step(trainer)`` — called right after ``opt.step()``, before
``zero_grad``. During both calls ``trainer.updates`` is the number of updates completed *before* this one (the
0-based index of the current update). It also exposes ``records`` (list of dicts), ``state_dict()`` (JSON-compatible;
numpy scalars/arrays are converted on save) and ``load_state_dict(d)``; the drivers persist it with the progress.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from rocktokens.core.io import atomic_file, read_json
from rocktokens.core.losses import LossSpec, chunked_head_loss
from rocktokens.models import final_hidden, output_weight, save_checkpoint
from rocktokens.core.sequences import TokenSequence, collate, split_micro_batches

log = logging.getLogger("rocktokens.trainer")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then a cosine/linear/constant schedule, gradient clipping, micro-batching."""

    lr: float
    global_batch: int
    micro_batch: int = 1
    warmup_ratio: float = 0.05
    schedule: str = "cosine"  # cosine | linear | constant (after warmup)
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float = 1.0
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)

    @classmethod
    def from_config(cls, cfg: dict) -> "OptimConfig":
        c = dict(cfg)
        if "betas" in c:
            c["betas"] = tuple(c["betas"])
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in c.items() if k in fields})

    def lr_lambda(self, total_updates: int):
        """The lr multiplier of update ``step`` (0-based; ``LambdaLR`` takes it), from ``transformers.get_scheduler``.

        Warmup over the first W = round(warmup_ratio · T) updates, update s using (s + 1) / W (so the first update
        already moves, and update W − 1 runs at the full lr); then ``constant`` (1), or ``linear`` / ``cosine`` decay
        from 1 at update W to ``min_lr_ratio`` at update T (reached by the lr reported after the last update).
        No single transformers schedule has this shape (its warmups start at 0 / W, or blend ``min_lr_ratio`` into
        the warmup), so the two phases are two of its schedules placed one after the other:
        * warmup: the warmup phase of ``cosine_warmup_with_min_lr``, (s + 1) / W for s < W;
        * after it, counted from update W: ``constant``, or ``warmup_stable_decay`` without warmup, decaying
          (``decay_type`` linear / cosine) to ``min_lr_ratio`` over T − W updates (one stable update when T = W).
        Floats are the ones the hand-written formula gave before (tests/test_training.py pins them with ==).
        """
        if self.schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown lr schedule {self.schedule!r}")
        warm = max(0, int(round(self.warmup_ratio * total_updates)))
        rise = _hf_lr_lambda("cosine_warmup_with_min_lr", num_warmup_steps=warm, num_training_steps=total_updates,
                             scheduler_specific_kwargs={"min_lr_rate": self.min_lr_ratio}) if warm else None
        if self.schedule == "constant":
            after = _hf_lr_lambda("constant")
        else:
            n_decay = max(0, total_updates - warm)
            after = _hf_lr_lambda("warmup_stable_decay", num_warmup_steps=0, scheduler_specific_kwargs={
                "num_decay_steps": n_decay, "num_stable_steps": 0 if n_decay else 1, "decay_type": self.schedule,
                "min_lr_ratio": self.min_lr_ratio})

        def f(step: int) -> float:
            return rise(step) if step < warm else after(step - warm)

        return f


def _hf_lr_lambda(name: str, **kw):
    """The multiplier function of the transformers schedule ``name`` (``transformers.get_scheduler``), built on a
    throwaway one-parameter optimizer: the trainer's own ``LambdaLR`` applies it, so its saved state is the same
    as before."""
    from transformers import get_scheduler

    dummy = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    (fn,) = get_scheduler(name, dummy, **kw).lr_lambdas
    return fn


class Trainer:
    def __init__(
        self,
        model,
        tokenizer,
        spec: LossSpec,
        optim: OptimConfig,
        total_updates: int,
        state_dir,
        *,
        teacher=None,
        max_len: int | None = None,
        accelerator=None,
        mixed_precision: str = "no",
        fingerprint: str = "",
        probe=None,
        track_update_norm: bool = False,
    ):
        from accelerate import Accelerator

        if total_updates < 1:
            raise ValueError(f"training has no optimizer updates (total_updates={total_updates}); is the data empty?")
        if spec.needs_teacher and teacher is None:
            raise ValueError("this loss needs a teacher model")
        # The student keeps fp32 master weights; "bf16" runs its forward/backward under autocast.
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision)
        self.spec, self.optim, self.total_updates = spec, optim, total_updates
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.max_len = max_len
        self.state_dir = Path(state_dir)
        params = [p for p in model.parameters() if p.requires_grad]
        if optim.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)
        elif optim.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=optim.lr, momentum=0.9, weight_decay=optim.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {optim.optimizer!r}")
        sched = torch.optim.lr_scheduler.LambdaLR(opt, optim.lr_lambda(total_updates))
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, sched)
        self.teacher = None
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.teacher = self.acc.prepare_model(teacher, evaluation_mode=True)
        self.updates = 0
        self.fingerprint = fingerprint
        self.probe = probe
        self.track_update_norm = track_update_norm

    # ------------------------------------------------------------------ one optimizer update
    def update(self, seqs: Sequence[TokenSequence]) -> dict:
        """One optimizer update over a global batch; loss normalised by the batch's response-token count Z.

        Returns loss, tokens (= Z), grad_norm (before clipping), lr (the *next* update's rate, as the scheduler
        reports it after stepping), lr_used (the rate this update applied), update_s, instrument_s and, when
        ``track_update_norm``, update_norm = ‖θ_after − θ_before‖₂ over every trained parameter.

        Timing: update_s is the wall time of the update's own work (forward, loss, backward, clipping, optimizer and
        scheduler step) *without* the instrumentation — the probe's hooks and the update-norm copy and reduction
        are timed separately as instrument_s — so arms with and without a probe are timed alike. On a GPU the
        device is synchronised at the borders of the timed pieces (queued kernels are charged to the piece that
        launched them).
        """
        if not seqs:
            raise ValueError("empty global batch")
        _sync(self.acc.device)
        t0 = time.perf_counter()
        instrument = 0.0
        acc = self.acc
        local = list(seqs)[acc.process_index :: acc.num_processes]
        z_local = torch.tensor(float(sum(s.n_response for s in local)), device=acc.device)
        z = float(acc.reduce(z_local, reduction="sum")) if acc.num_processes > 1 else float(z_local)
        self.model.train()
        total = 0.0
        micro = split_micro_batches(local, self.optim.micro_batch)
        for i, mb in enumerate(micro):
            b = collate(mb, self.pad_id, self.max_len)
            dev = acc.device
            ids, mask = b.input_ids.to(dev), b.attention_mask.to(dev)
            rows, cols = b.rows.to(dev), b.cols.to(dev)
            h = final_hidden(self.model, ids, mask)[rows, cols]
            h_t = w_t = None
            if self.teacher is not None and self.spec.needs_teacher:
                with torch.no_grad():
                    h_t = final_hidden(self.teacher, ids, mask)[rows, cols]
                    w_t = output_weight(self.teacher)
            loss = chunked_head_loss(
                self.spec, h, output_weight(self.model), b.labels.to(dev), b.weights.to(dev), z, h_t, w_t
            )
            # DDP averages gradients over processes; scale so the step's loss is sum / Z over all processes.
            ctx = acc.no_sync(self.model) if i < len(micro) - 1 else _null()
            with ctx:
                acc.backward(loss * acc.num_processes)
            total += float(loss.detach())
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.optim.clip) if self.optim.clip > 0 else None
        lr_used = self.sched.get_last_lr()[0]
        t_i = self._pause()
        if self.probe is not None:
            self.probe.before_step(self)
        before = [p.detach().clone() for p in self._trained()] if self.track_update_norm else None
        instrument += self._pause() - t_i
        self.opt.step()
        t_i = self._pause()
        update_norm = self._update_norm(before) if before is not None else None
        if self.probe is not None:
            self.probe.after_step(self)
        del before
        instrument += self._pause() - t_i
        # the wrapped scheduler itself: accelerate's wrapper steps it num_processes times per call (it assumes a
        # schedule counted in per-process batches); ours counts global updates (OptimConfig.lr_lambda)
        self.sched.scheduler.step()
        self.opt.zero_grad(set_to_none=True)
        self.updates += 1
        if acc.num_processes > 1:
            total = float(acc.reduce(torch.tensor(total, device=acc.device), reduction="sum"))
        if not math.isfinite(total):
            raise FloatingPointError(f"loss became {total} at update {self.updates}; stopping (no checkpoint written)")
        out = {"loss": total, "tokens": z, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
               "lr": self.sched.get_last_lr()[0], "lr_used": lr_used}
        if update_norm is not None:
            out["update_norm"] = update_norm
        out["update_s"] = self._pause() - t0 - instrument
        out["instrument_s"] = instrument
        return out

    def _pause(self) -> float:
        """A timing border: the device's queued work done, then the clock."""
        _sync(self.acc.device)
        return time.perf_counter()

    def _trained(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _update_norm(self, before: list[torch.Tensor]) -> float:
        """‖θ_after − θ_before‖₂ over all trained parameters (summed over shards under FSDP)."""
        sq = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        for p, q in zip(self._trained(), before):
            a, b = _local(p.detach()), _local(q)
            sq += (a.double() - b.double()).pow(2).sum()
        from accelerate.utils import DistributedType

        if self.acc.num_processes > 1 and self.acc.distributed_type == DistributedType.FSDP:
            sq = self.acc.reduce(sq, reduction="sum")  # each rank holds one shard of every parameter
        return float(sq.sqrt())

    # ------------------------------------------------------------------ state
    def _latest(self) -> Path | None:
        ptr = self.state_dir / "latest.json"
        if not ptr.exists():
            return None
        name = read_json(ptr)["dir"]
        return self.state_dir / name

    def resume(self) -> dict | None:
        """Load the last saved state; returns its progress dict (None if there is none)."""
        d = self._latest()
        if d is None or not d.exists():
            return None
        progress = read_json(d / "progress.json")
        if progress.get("fingerprint") != self.fingerprint:
            log.warning("discarding saved state in %s: it was written for other inputs or settings", self.state_dir)
            if self.acc.is_main_process:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            self.acc.wait_for_everyone()
            return None
        self.acc.load_state(str(d))
        self.updates = progress["updates"]
        log.info("resumed from %s at step %s (update %s)", d, progress.get("step"), self.updates)
        return progress

    def save_state(self, progress: dict) -> None:
        """Write state to a new directory, then flip ``latest.json`` atomically, then drop older states."""
        progress = dict(progress, updates=self.updates, fingerprint=self.fingerprint)
        name = f"state-{progress['step']:07d}"
        d = self.state_dir / name
        tmp = self.state_dir / f".{name}.tmp"
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(tmp), safe_serialization=True)
        if self.acc.is_main_process:
            (tmp / "progress.json").write_text(json.dumps(progress, default=_jsonable))  # keeps column order
            shutil.rmtree(d, ignore_errors=True)
            os.replace(tmp, d)
            with atomic_file(self.state_dir / "latest.json") as t:
                t.write_text(json.dumps({"dir": name}))
            for old in self.state_dir.glob("state-*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()

    def export(self, out_dir, extra: dict | None = None) -> None:
        """A full HF checkpoint (gathered from shards under FSDP) written atomically by the main process."""
        state = self.acc.get_state_dict(self.model)  # collective under FSDP: every rank calls it
        if self.acc.is_main_process:
            save_checkpoint(self.acc.unwrap_model(self.model), self.tokenizer, out_dir, extra, state_dict=state)
        self.acc.wait_for_everyone()

    def unwrapped(self):
        return self.acc.unwrap_model(self.model)


def _sync(device) -> None:
    """Wait for the device's queued kernels (CUDA only; CPU work is synchronous)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a (possibly DTensor) parameter."""
    return t.to_local() if hasattr(t, "to_local") else t


def _jsonable(x):
    """JSON fallback for progress (probe state): numpy/torch scalars and arrays become numbers and lists."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def publish(src_dir, out_dir) -> None:
    """Place a finished checkpoint at its output path (hard links when possible; atomic)."""
    from rocktokens.core.io import atomic_dir

    src = Path(src_dir)
    with atomic_dir(out_dir) as tmp:
        for f in src.iterdir():
            try:
                os.link(f, Path(tmp) / f.name)
            except OSError:
                shutil.copy2(f, Path(tmp) / f.name)
