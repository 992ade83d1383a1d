"""Per-request token knockout inside vLLM's v1 sampler (imported only where ``vllm`` is installed).

:class:`BannedIdsLogitsProcessor` is a batch-level vLLM ``LogitsProcessor``: each request carries its own banned
ids in ``SamplingParams.extra_args[BANNED_KEY]``; at every decoding step the processor sets
``logits[row, banned] = -inf`` for exactly the rows whose request banned them, so one engine batch can hold a
different knockout mask per sequence (paper Eq. 17 / 21).

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

from .vllm_backend import BANNED_KEY

__all__ = ["BannedIdsLogitsProcessor"]


class BannedIdsLogitsProcessor(LogitsProcessor):
    """``logits[row, v] = -inf`` for every id ``v`` in the row's ``extra_args[BANNED_KEY]``."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.banned: dict[int, tuple[int, ...]] = {}  # batch row -> banned ids
        self.rows = torch.empty(0, dtype=torch.long, device=device)
        self.cols = torch.empty(0, dtype=torch.long, device=device)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams):
        ids = (sampling_params.extra_args or {}).get(BANNED_KEY)
        if ids is not None and (not isinstance(ids, (list, tuple)) or not all(isinstance(i, int) for i in ids)):
            raise ValueError(f"extra_args[{BANNED_KEY!r}] must be a list of token ids, got {ids!r}")

    def is_argmax_invariant(self) -> bool:
        return False  # a ban can remove the argmax

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new_state(params: SamplingParams, _prompt, _output):
            ids = (params.extra_args or {}).get(BANNED_KEY)
            return tuple(int(i) for i in ids) if ids else None

        if process_dict_updates(self.banned, batch_update, new_state):
            rows = [r for r, ids in self.banned.items() for _ in ids]
            cols = [i for ids in self.banned.values() for i in ids]
            self.rows = torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)
            self.cols = torch.tensor(cols, dtype=torch.long).to(self.device, non_blocking=True)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self.banned:
            logits[self.rows, self.cols] = float("-inf")
        return logits
