"""Token sequences for training: chat formatting, label alignment, micro-batch collation.

Label alignment (tested): for input ids x_0..x_{L-1} the logit at position t predicts x_{t+1}. A response
occupying indices [P, L) is therefore scored by the hidden states at positions P-1 .. L-2, whose labels are
x_P .. x_{L-1}. A per-token weight w(x_t, t) (Eq. 19) belongs to the *label* x_t, i.e. to position t-1's logit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch


@dataclass
class TokenSequence:
    """One training sequence: prompt + response ids, and optional per-response-token weights."""

    ids: list[int]
    prompt_len: int
    weights: list[float] | None = None  # one per response token (label), None = all 1
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0 < self.prompt_len < len(self.ids):
            raise ValueError(
                f"sequence needs a non-empty prompt and response (prompt_len={self.prompt_len}, len={len(self.ids)})"
            )
        if self.weights is not None and len(self.weights) != self.n_response:
            raise ValueError(f"{len(self.weights)} weights for {self.n_response} response tokens")

    @property
    def n_response(self) -> int:
        return len(self.ids) - self.prompt_len


def response_positions(prompt_len: int, total_len: int) -> tuple[range, range]:
    """(positions whose logits are scored, label indices): ``range(P-1, L-1)`` and ``range(P, L)``."""
    if not 0 < prompt_len < total_len:
        raise ValueError(f"bad prompt_len {prompt_len} for length {total_len}")
    return range(prompt_len - 1, total_len - 1), range(prompt_len, total_len)


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    rows: torch.Tensor  # [N] batch row of each scored position
    cols: torch.Tensor  # [N] position whose logit is scored
    labels: torch.Tensor  # [N] the token that logit predicts
    weights: torch.Tensor  # [N] w(x_t, t) of that label
    seq_index: torch.Tensor  # [N] index of the sequence within the micro-batch
    label_index: torch.Tensor  # [N] index of the label within the full sequence


def collate(seqs: Sequence[TokenSequence], pad_id: int, max_len: int | None = None) -> MicroBatch:
    """Right-pad ``seqs`` into one micro-batch and flatten the scored response positions."""
    if not seqs:
        raise ValueError("empty micro-batch")
    too_long = [i for i, s in enumerate(seqs) if max_len is not None and len(s.ids) > max_len]
    if too_long:
        raise ValueError(
            f"sequence of length {len(seqs[too_long[0]].ids)} exceeds the model context / max length {max_len}"
        )
    length = max(len(s.ids) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    rows, cols, labels, weights, lab_idx = [], [], [], [], []
    for b, s in enumerate(seqs):
        ids[b, : len(s.ids)] = torch.tensor(s.ids, dtype=torch.long)
        mask[b, : len(s.ids)] = 1
        pos, lab = response_positions(s.prompt_len, len(s.ids))
        rows.extend([b] * len(pos))
        cols.extend(pos)
        labels.extend(s.ids[j] for j in lab)
        lab_idx.extend(lab)
        weights.extend(s.weights if s.weights is not None else [1.0] * len(pos))
    rows_t = torch.tensor(rows, dtype=torch.long)
    return MicroBatch(
        input_ids=ids,
        attention_mask=mask,
        rows=rows_t,
        cols=torch.tensor(cols, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        weights=torch.tensor(weights, dtype=torch.float32),
        seq_index=rows_t,
        label_index=torch.tensor(lab_idx, dtype=torch.long),
    )


def split_micro_batches(seqs: Sequence[TokenSequence], micro_batch: int) -> list[list[TokenSequence]]:
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    return [list(seqs[i : i + micro_batch]) for i in range(0, len(seqs), micro_batch)]
