"""GPU generation backend on vLLM (v1 engine).

``vllm`` is imported lazily (it lives only in the GPU environment,
``envs/gpu.yaml``); :func:`sampling_kwargs` -- the per-request mapping of our
:class:`~rocktokens.generation.base.GenerationRequest` onto vLLM
``SamplingParams`` keyword arguments -- is pure Python and testable without it.

Choices (checked against vLLM's ``SamplingParams`` / v1 ``Sampler`` source):

* **Banned ids -> a per-request logits processor**: each request's banned ids
  travel in ``SamplingParams.extra_args[BANNED_KEY]`` and the engine is built
  with :class:`~rocktokens.generation.vllm_logits.BannedIdsLogitsProcessor`
  (``logits_processors=[LOGITS_PROCESSOR]``, loaded by name in the engine
  process), which sets ``logits[row, banned] = -inf`` at every step for that
  row only -- exact knockout semantics, a different mask per sequence in one
  batch.  Not ``allowed_token_ids`` (the complement: ~151,900 ids per request
  at Qwen3 scale, billions of ints for a knockout shard's tens of thousands of
  requests), not ``logit_bias`` (clamped to [-100, 100] on the OpenAI path: a
  finite bias, not a knockout), not ``bad_words`` (strings).  Requests without
  banned ids carry no entry (no cost).
* **Local ban -> the same processor**: a request's
  :class:`~rocktokens.generation.base.LocalBan` travels as
  ``extra_args[LOCAL_KEY] = LocalBan.to_dict()``; the processor keeps a
  reference to the request's running output token ids (vLLM's batch update
  hands it over) and, at each sampling step, bans the ids for exactly the
  rows whose ban is active (:meth:`LocalBan.active`).
* **Raw logprobs**: ``logprobs=0`` returns exactly the chosen token's logprob,
  and the engine is built with ``logprobs_mode="raw_logprobs"`` (also vLLM's
  default), which computes log-softmax of the model logits *before* the
  allowed-token mask, penalties, temperature and top-p -- the raw
  distribution our interface promises.
* **Stops**: ``stop_token_ids=stop_ids`` with ``ignore_eos=True`` and the
  engine built with ``generation_config="vllm"``, so generation stops on our
  stop ids only (not additionally on the checkpoint's EOS / generation-config
  EOS ids), matching the HF backend.  The stop token is kept in
  ``token_ids``.
* **Seeds**: ``seed=req.seed`` gives each request its own generator.  vLLM's
  forward pass is not batch invariant by default; pass
  ``batch_invariant=True`` to set ``VLLM_BATCH_INVARIANT=1`` (beta; needs a
  recent GPU) when bitwise reproducibility across batch compositions matters.
* ``batch_size`` becomes vLLM's ``max_num_seqs`` (sequences decoded
  concurrently); all requests are submitted in one ``LLM.generate`` call.
* vLLM raises ``temperature`` in (0, 0.01) to 0.01 and (recent versions)
  rejects temperature > 2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .base import (
    GenerationBackend,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
)

__all__ = ["VLLMBackend", "sampling_kwargs", "import_vllm", "VLLM_MISSING_MESSAGE", "BANNED_KEY", "LOCAL_KEY",
           "LOGITS_PROCESSOR"]

#: ``SamplingParams.extra_args`` key holding a request's banned ids.
BANNED_KEY = "rocktokens_banned_ids"
#: ``SamplingParams.extra_args`` key holding a request's local ban (``LocalBan.to_dict()``).
LOCAL_KEY = "rocktokens_local_ban"
#: The knockout logits processor, by fully qualified name (the engine process imports it itself).
LOGITS_PROCESSOR = "rocktokens.generation.vllm_logits:BannedIdsLogitsProcessor"

VLLM_MISSING_MESSAGE = (
    "the 'vllm' generation backend needs the vllm package, which is installed only in the GPU "
    "environment: create it with `conda env create -f envs/gpu.yaml` (or `mamba env create -f "
    "envs/gpu.yaml`) and run there, or use the CPU backend 'hf'"
)


def import_vllm():
    """Import and return the ``vllm`` module, or raise a clear ``ImportError``."""
    try:
        import vllm  # noqa: PLC0415 - lazy by design
    except ImportError as exc:
        raise ImportError(VLLM_MISSING_MESSAGE) from exc
    return vllm


def sampling_kwargs(
    request: GenerationRequest,
    params: SamplingParams,
    *,
    stop_ids: Sequence[int],
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request (pure).

    See the module docstring for why each field is set the way it is.
    """
    greedy = params.temperature == 0
    kw: dict[str, Any] = {
        "n": 1,
        "seed": int(request.seed),
        "temperature": float(params.temperature),
        # vLLM forces top_p=1 for greedy anyway; make it explicit.
        "top_p": 1.0 if greedy else float(params.top_p),
        "max_tokens": int(params.max_new_tokens),
        "logprobs": 0,  # only the chosen token's logprob
        "stop_token_ids": [int(s) for s in stop_ids],
        "ignore_eos": True,  # stop on stop_ids only (see module docstring)
        "detokenize": False,
        "skip_special_tokens": False,
    }
    extra: dict[str, Any] = {}
    if request.banned_ids:
        # ids were checked against the vocabulary by GenerationBackend.generate (validate_requests)
        extra[BANNED_KEY] = sorted(set(int(b) for b in request.banned_ids))
    if request.local_ban is not None:
        extra[LOCAL_KEY] = request.local_ban.to_dict()
    if extra:
        kw["extra_args"] = extra
    return kw


def _vocab_size(llm) -> int:
    engine = getattr(llm, "llm_engine", None)
    for holder in (engine, getattr(engine, "vllm_config", None), llm):
        model_config = getattr(holder, "model_config", None)
        if model_config is not None:
            return int(model_config.get_vocab_size())
    raise RuntimeError("cannot find the model vocabulary size on this vllm.LLM")


def _result_from_output(completion, stop_ids: Sequence[int], index: int) -> GenerationResult:
    """Map a vLLM ``CompletionOutput`` onto a :class:`GenerationResult`."""
    token_ids = [int(t) for t in completion.token_ids]
    reason = completion.finish_reason
    if reason not in ("stop", "length"):
        raise RuntimeError(f"request {index}: vLLM finished with reason {reason!r} (expected 'stop' or 'length')")
    if completion.logprobs is None or len(completion.logprobs) != len(token_ids):
        raise RuntimeError(f"request {index}: vLLM returned no per-token logprobs for all generated tokens")
    logprobs = [float(step[tok].logprob) for step, tok in zip(completion.logprobs, token_ids)]
    if reason == "stop" and (not token_ids or token_ids[-1] not in set(stop_ids)):
        raise RuntimeError(f"request {index}: vLLM reports a stop but the last token is not a stop id")
    return GenerationResult(token_ids=token_ids, logprobs=logprobs, finish_reason=reason)


class VLLMBackend(GenerationBackend):
    """vLLM generation.  Options (all optional):

    ``tensor_parallel_size`` (1), ``seed`` (0; engine seed, per-request seeds
    override it), ``dtype`` ("auto"), ``enforce_eager`` (False),
    ``gpu_memory_utilization`` (0.9), ``max_model_len`` (model default),
    ``batch_invariant`` (False), ``progress`` (True), ``llm_kwargs`` (dict of
    further ``vllm.LLM`` arguments), ``n_tokens`` (the tokenizer's size: output
    rows at or beyond it are embedding padding and are never sampled).
    """

    def __init__(
        self,
        model_dir: str,
        *,
        stop_ids: Sequence[int],
        batch_size: int = 64,
        **options,
    ):
        known = {
            "tensor_parallel_size",
            "seed",
            "dtype",
            "enforce_eager",
            "gpu_memory_utilization",
            "max_model_len",
            "batch_invariant",
            "progress",
            "llm_kwargs",
            "n_tokens",
        }
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown vllm backend option(s) {unknown}; known: {sorted(known)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if options.get("batch_invariant"):
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        vllm = import_vllm()
        self._vllm = vllm
        llm_kwargs: dict[str, Any] = dict(
            model=str(model_dir),
            tensor_parallel_size=int(options.get("tensor_parallel_size", 1)),
            seed=int(options.get("seed", 0)),
            dtype=options.get("dtype", "auto"),
            enforce_eager=bool(options.get("enforce_eager", False)),
            gpu_memory_utilization=float(options.get("gpu_memory_utilization", 0.9)),
            max_num_seqs=batch_size,
            logprobs_mode="raw_logprobs",
            generation_config="vllm",
            logits_processors=[LOGITS_PROCESSOR],
        )
        if options.get("max_model_len") is not None:
            llm_kwargs["max_model_len"] = int(options["max_model_len"])
        llm_kwargs.update(options.get("llm_kwargs") or {})
        self.llm = vllm.LLM(**llm_kwargs)
        self.vocab_size = _vocab_size(self.llm)
        self.stop_ids = tuple(int(s) for s in stop_ids)
        bad = [s for s in self.stop_ids if not 0 <= s < self.vocab_size]
        if bad:
            raise ValueError(f"stop id(s) {bad} outside the vocabulary [0, {self.vocab_size})")
        self.progress = bool(options.get("progress", True))
        n_tokens = options.get("n_tokens")
        if n_tokens is not None and not 0 < int(n_tokens) <= self.vocab_size:
            raise ValueError(f"n_tokens {n_tokens} outside (0, {self.vocab_size}]")
        # output rows at or beyond the tokenizer's size are embedding padding: never sampled (as in HFBackend)
        self.padding_ids = tuple(range(int(n_tokens), self.vocab_size)) if n_tokens is not None else ()

    def _is_closed(self) -> bool:
        return self.llm is None

    def _generate(self, requests: list[GenerationRequest], params: SamplingParams) -> list[GenerationResult]:
        if self.padding_ids:
            requests = [replace(r, banned_ids=tuple(r.banned_ids) + self.padding_ids) for r in requests]
        sp = [
            self._vllm.SamplingParams(**sampling_kwargs(r, params, stop_ids=self.stop_ids))
            for r in requests
        ]
        prompts = [{"prompt_token_ids": list(r.prompt_ids)} for r in requests]
        outputs = self.llm.generate(prompts, sp, use_tqdm=self.progress)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return [_result_from_output(o.outputs[0], self.stop_ids, i) for i, o in enumerate(outputs)]

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        del llm
        try:  # free GPU memory so a second engine (e.g. the teacher) can start
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass
