"""Per-request token knockout inside vLLM's v1 sampler (imported only where ``vllm`` is installed).

:class:`BannedIdsLogitsProcessor` is a batch-level vLLM ``LogitsProcessor``: each request carries its own banned
ids in ``SamplingParams.extra_args[BANNED_KEY]``; at every decoding step the processor sets
``logits[row, banned] = -inf`` for exactly the rows whose request banned them, so one engine batch can hold a
different knockout mask per sequence (paper Eq. 17 / 21).

A request may also carry a *local* ban (``extra_args[LOCAL_KEY]``, :class:`~rocktokens.generation.base.LocalBan`):
its ids are ``-inf`` only at the steps where the ban is active for the tokens the request has generated so far.
vLLM hands every added request's running output-token list to the processors by reference (``BatchUpdate.added``);
the processor keeps that reference and tests the ban in :meth:`apply`, i.e. at sampling time -- after vLLM's async
scheduling has replaced the placeholder of the previous step's token (``update_async_output_token_ids`` runs right
before the sampler), not in :meth:`update_state`, which runs before the forward pass while that token may still be a
placeholder. A placeholder still present at sampling time is an error (the context would be unknown).

Why not ``allowed_token_ids``: vLLM takes the *allowed* list, i.e. the complement of the ban — a Python list of
~151,900 ids per request at Qwen3 scale. A knockout shard submits tens of thousands of requests at once (every
candidate × problem × sample), which would hold billions of ints in ``SamplingParams`` objects. The processor keeps
only the banned ids (a few per request) and builds one ``(row, id)`` index pair list per batch change.

Where it runs: vLLM applies non-argmax-invariant processors after the built-in masks and before penalties,
temperature and top-p; the engine's ``raw_logprobs`` are computed before any processor, so the logprobs we report
stay the model's raw distribution (the backend contract in :mod:`rocktokens.generation.base`).
"""
from __future__ import annotations

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from .base import LocalBan
from .vllm_backend import BANNED_KEY, LOCAL_KEY

__all__ = ["BannedIdsLogitsProcessor"]


class BannedIdsLogitsProcessor(LogitsProcessor):
    """``logits[row, v] = -inf`` for every id ``v`` in the row's ``extra_args[BANNED_KEY]``, and for the ids of
    its ``extra_args[LOCAL_KEY]`` at the steps where that local ban is active."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.banned: dict[int, tuple[int, ...]] = {}  # batch row -> banned ids
        self.local: dict[int, tuple[LocalBan, list[int]]] = {}  # batch row -> (local ban, running output ids)
        self.rows = torch.empty(0, dtype=torch.long, device=device)
        self.cols = torch.empty(0, dtype=torch.long, device=device)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        extra = sampling_params.extra_args or {}
        ids = extra.get(BANNED_KEY)
        if ids is not None and (not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids)):
            raise ValueError(f"extra_args[{BANNED_KEY!r}] must be a list of token ids, got {ids!r}")
        if extra.get(LOCAL_KEY) is not None:
            try:
                LocalBan.from_dict(extra[LOCAL_KEY])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"extra_args[{LOCAL_KEY!r}]: {exc}") from exc

    def is_argmax_invariant(self) -> bool:
        return False  # a ban can remove the argmax

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(params: SamplingParams, _prompt, _output):
            ids = (params.extra_args or {}).get(BANNED_KEY)
            return tuple(int(i) for i in ids) if ids else None

        def new_local(params: SamplingParams, _prompt, output: list[int]):
            spec = (params.extra_args or {}).get(LOCAL_KEY)
            return (LocalBan.from_dict(spec), output) if spec is not None else None

        process_dict_updates(self.local, batch_update, new_local)
        if process_dict_updates(self.banned, batch_update, new_state):
            rows = [r for r, ids in self.banned.items() for _ in ids]
            cols = [i for ids in self.banned.values() for i in ids]
            self.rows = torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)
            self.cols = torch.tensor(cols, dtype=torch.long).to(self.device, non_blocking=True)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.banned:
            logits[self.rows, self.cols] = float("-inf")
        if self.local:
            rows, cols = [], []
            for row, (ban, output) in self.local.items():
                if output and output[-1] < 0:
                    raise RuntimeError(f"batch row {row}: the previous token is still a placeholder at sampling "
                                       "time; the local ban's context is unknown")
                if ban.active(output):
                    rows += [row] * len(ban.ids)
                    cols += ban.ids
            if rows:
                logits[torch.tensor(rows, dtype=torch.long).to(logits.device),
                       torch.tensor(cols, dtype=torch.long).to(logits.device)] = float("-inf")
        return logits
