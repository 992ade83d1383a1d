"""Teacher-forced per-token scoring: the per-occurrence quantities of §2 on fixed trajectories.

For every response token x_t of every sequence, under student πθ and teacher π_T (same context x_<t):

    logp_student, logp_teacher   log π(x_t | x_<t) of the sampled token
    log_ratio                    ℓ_t of Eq. 2 (the per-occurrence loss paired pre/post OPD in Eq. 5)
    rkl                          D_KL(πθ(·|x_<t) ‖ π_T(·|x_<t)) over the full vocabulary (summand of Eq. 1,
                                 averaged per token type in Eq. 15)
    fkl                          D_KL(π_T ‖ πθ)
    entropy_student/_teacher     Shannon entropy of each next-token distribution

The formulas live once, in :mod:`rocktokens.core.losses`; this module only feeds them.

Memory and speed: ``[T, V]`` logits are never formed. For each micro-batch the final hidden states of both
models are computed (``[N, H]`` kept at the scored positions only); then ``chunk`` positions at a time are scored by
walking the vocabulary in blocks of ``vocab_block`` columns: each block of both models' logits is projected once into
a reused, cache-sized buffer and the full-vocabulary sums (log-sum-exp, E_p[z_s], E_p[z_t] per model) are accumulated
online (:func:`_streamed_columns`). Peak memory is the hidden states plus three ``chunk × vocab_block`` float32
buffers — flat in the sequence length T *and* in V — and every full-vocabulary pass reads cache instead of DRAM, so
scoring costs about the two output-layer GEMMs plus a few cached passes (``benchmarks/bench_scoring.py``).
``compiled=True`` instead projects ``chunk × V`` logits and reduces them with one ``torch.compile`` kernel.

Alignment (see :mod:`rocktokens.core.sequences`): the logit at position t−1 scores the token x_t; the
response of a sequence with prompt length P occupies ids[P:], and its token ``position`` p is ids[P + p].
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rocktokens.core.losses import entropy, forward_kl, log_ratio, reverse_kl
from rocktokens.models.core import VocabMismatchError, final_hidden, output_weight
from rocktokens.core.sequences import TokenSequence, collate

INT_COLUMNS = ("seq", "position", "token_id")
FLOAT_COLUMNS = ("logp_student", "logp_teacher", "log_ratio", "rkl", "fkl", "entropy_student", "entropy_teacher")
COLUMNS = INT_COLUMNS + FLOAT_COLUMNS


def _device(model) -> torch.device:
    return next(model.parameters()).device


def output_head(model):
    """``(weight, bias)`` of the output layer in float32 (no copy when the model already is float32; a bf16
    model gets one float32 copy of its output layer per call, so logits and log-probs are float32)."""
    m = model.module if hasattr(model, "module") else model
    w = output_weight(model).detach().float()
    b = getattr(m.get_output_embeddings(), "bias", None)
    return w, (None if b is None else b.detach().float())


@contextmanager
def eval_mode(models):
    """Put every model in eval mode (no dropout) for the duration; restore each training flag after."""
    flags = [(m, m.training) for m in models]
    try:
        for m, _ in flags:
            m.eval()
        yield
    finally:
        for m, was in flags:
            m.train(was)


def check_inputs(students: Mapping[str, object], teacher, seqs: Sequence[TokenSequence], chunk, batch_size, max_len):
    if len(seqs) == 0:
        raise ValueError("score_sequences: no sequences to score (empty input)")
    if not students:
        raise ValueError("score_many: no student models given")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    v_t = output_weight(teacher).shape[0]
    for name, student in students.items():
        v_s = output_weight(student).shape[0]
        if v_s != v_t:
            raise VocabMismatchError(
                f"student {name!r} and teacher output layers differ: {v_s} vs {v_t} rows; "
                "token-level KL needs one shared vocabulary"
            )
    if max_len is not None:
        for i, s in enumerate(seqs):
            if len(s.ids) > max_len:
                raise ValueError(
                    f"sequence {i} has length {len(s.ids)} > max_len {max_len} (the model context); "
                    "truncate or drop it before scoring"
                )
    for i, s in enumerate(seqs):
        lo, hi = min(s.ids), max(s.ids)
        if lo < 0 or hi >= v_t:
            raise ValueError(f"sequence {i} has token id {lo if lo < 0 else hi} outside the vocabulary [0, {v_t})")


def _raise_non_finite(cols: dict, sel_seq: np.ndarray, who: Mapping[str, str]) -> None:
    """Finite logits give finite columns (log_softmax subtracts the max); a NaN or ±inf logit makes the
    entropy of that model non-finite (NaN·… or 0·(−inf)). So checking the reduced columns is exact and cheap."""
    for key, model_name in who.items():
        bad = ~np.isfinite(cols[key])
        if bad.any():
            raise FloatingPointError(
                f"non-finite logits (NaN/inf) from the {model_name} for sequence {int(sel_seq[bad.argmax()])}"
            )
    for key in FLOAT_COLUMNS:
        bad = ~np.isfinite(cols[key])
        if bad.any():
            raise FloatingPointError(f"non-finite {key} for sequence {int(sel_seq[bad.argmax()])}")


def _reduce(lp_s: torch.Tensor, lp_t: torch.Tensor, labels: torch.Tensor):
    """The float columns (order of :data:`FLOAT_COLUMNS`) from one chunk of log-probabilities ``[n, V]``
    of each model; the formulas are those of :mod:`rocktokens.core.losses`."""
    tok_s = lp_s.gather(-1, labels[:, None]).squeeze(-1)
    tok_t = lp_t.gather(-1, labels[:, None]).squeeze(-1)
    return (tok_s, tok_t, log_ratio(tok_s, tok_t), reverse_kl(lp_s, lp_t), forward_kl(lp_s, lp_t),
            entropy(lp_s), entropy(lp_t))


def columns_from_logits(z_s: torch.Tensor, z_t: torch.Tensor, labels: torch.Tensor):
    """:func:`_reduce` from float32 logits ``[n, V]``: log-softmax, then the columns."""
    return _reduce(F.log_softmax(z_s, -1), F.log_softmax(z_t, -1), labels)


_COMPILED = None


def _compiled_columns():
    """:func:`columns_from_logits` through ``torch.compile``: log-softmax and the four full-vocabulary
    reductions fused into a few passes per row instead of ~20 eager passes over ``chunk × V`` arrays. Built once
    per process, dynamic in the chunk length so the last (shorter) chunk does not recompile."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(columns_from_logits, dynamic=True)
    return _COMPILED


def project(h: torch.Tensor, head, out: torch.Tensor) -> torch.Tensor:
    """Logits ``h @ Wᵀ (+ b)`` in float32 written into ``out`` ``[n, V]`` (no fresh allocation)."""
    w, b = head
    if b is None:
        return torch.mm(h.float(), w.t(), out=out)
    return torch.addmm(b, h.float(), w.t(), out=out)


class Workspace:
    """The ``chunk × V`` float32 arrays of one call, allocated once per device and reused for every chunk:
    a steady allocation pattern (no fresh ``chunk × V`` pages per chunk) and a peak known in advance."""

    def __init__(self, rows: int, vocab: int):
        self.rows, self.vocab, self._bufs = rows, vocab, {}

    def get(self, name: str, device: torch.device, n: int, cols: int | None = None) -> torch.Tensor:
        """A contiguous ``[n, cols]`` float32 view (``cols`` ≤ ``vocab``, default ``vocab``) of buffer ``name``."""
        key = (name, str(device))
        if key not in self._bufs:
            self._bufs[key] = torch.empty(self.rows * self.vocab, dtype=torch.float32, device=device)
        cols = self.vocab if cols is None else cols
        return self._bufs[key][: n * cols].view(n, cols)


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
_MAX_EXPONENT = 64.0  # a block whose base-2 exponent exceeds this re-shifts its rows (float32 overflows at 128)


class _Stream:
    """Online full-vocabulary sums of one model over vocabulary blocks, in base 2 (``exp2`` is ~3× cheaper than
    ``exp`` on CPU): each block arrives as y = log2(e)·z − m (m = the row's running shift, the largest base-2 logit
    seen when it was last raised), and the stream keeps S = Σ 2^y, A_own = Σ 2^y·log2(e)·z and
    A_other = Σ 2^y·log2(e)·z' (z' = the other model's logits), rescaled whenever m rises."""

    def __init__(self, n: int, device):
        self.m = None
        self.S = torch.zeros(n, device=device)
        self.A_own = torch.zeros(n, device=device)
        self.A_other = torch.zeros(n, device=device)

    def shift(self, y: torch.Tensor) -> None:
        """Bring block ``y`` (already shifted by the current m) to a safe exponent; raise m where needed."""
        top = y.amax(-1)
        if self.m is None:  # first block: its row max becomes the shift
            self.m = top.clone()
            y.sub_(top[:, None])
            return
        if float(top.max()) <= _MAX_EXPONENT:  # common case: no row needs a new shift
            return
        up = torch.where(top > 0, top, torch.zeros_like(top))  # NaN rows stay NaN (reported by the caller)
        y.sub_(up[:, None])
        scale = torch.exp2(-up)
        for x in (self.S, self.A_own, self.A_other):
            x.mul_(scale)
        self.m = self.m + up

    def add(self, y: torch.Tensor, y_other: torch.Tensor, m_other: torch.Tensor, buf: torch.Tensor) -> None:
        e = torch.exp2(y, out=buf)
        s = e.sum(-1)
        self.S.add_(s)
        self.A_own.add_(torch.linalg.vecdot(e, y) + self.m * s)
        self.A_other.add_(torch.linalg.vecdot(e, y_other) + m_other * s)

    def moments(self):
        """(log Σ e^z, E_p[z], E_p[z']) with p = softmax(z), in natural units."""
        return self.m * _LN2 + self.S.log(), self.A_own / self.S * _LN2, self.A_other / self.S * _LN2


def _project_base2(h: torch.Tensor, head, m, out: torch.Tensor) -> torch.Tensor:
    """y = log2(e)·(h Wᵀ + b) − m into ``out`` in one GEMM (``m`` per row, or ``None`` for no shift)."""
    w, b = head
    if m is None and b is None:
        return torch.mm(h, w.t(), out=out).mul_(_LOG2E)
    shift = torch.zeros(h.shape[0], 1, device=h.device) if m is None else -m[:, None]
    if b is not None:
        shift = shift + _LOG2E * b[None, :]
    return torch.addmm(shift, h, w.t(), alpha=_LOG2E, out=out)


def _streamed_columns(h_s, head_s, h_t, head_t, labels, ws: Workspace):
    """The float columns of one chunk of positions without any ``[n, V]`` array: the vocabulary is walked in
    blocks of ``ws.vocab`` columns (cache-resident), each model's block of logits projected once (already scaled
    to base 2 and shifted, inside the GEMM), and the full-vocabulary reductions accumulated online
    (:class:`_Stream`). With lse = log Σ_v e^{z_v} and E_p the expectation under
    p = softmax(z) (subscript s: student, t: teacher) the identities

        H(p_s) = lse_s − E_{p_s}[z_s]                                   (entropy)
        D_KL(p_s‖p_t) = (E_{p_s}[z_s] − lse_s) − (E_{p_s}[z_t] − lse_t)   (reverse KL, Eq. 1/15 summand)
        D_KL(p_t‖p_s) = (E_{p_t}[z_t] − lse_t) − (E_{p_t}[z_s] − lse_s)   (forward KL)

    give exactly the values of :func:`rocktokens.core.losses.entropy`/``reverse_kl``/``forward_kl`` (tested against
    them); log π(x_t) = z[x_t] − lse and ℓ_t comes from :func:`rocktokens.core.losses.log_ratio` (Eq. 2)."""
    n, dev, V = h_s.shape[0], h_s.device, head_s[0].shape[0]
    ss, st = _Stream(n, dev), _Stream(n, dev)
    hs, ht = h_s.float(), h_t.float()
    for a in range(0, V, ws.vocab):
        b = min(a + ws.vocab, V)
        y_s = _project_base2(hs, _rows(head_s, a, b), ss.m, ws.get("y_s", dev, n, b - a))
        y_t = _project_base2(ht, _rows(head_t, a, b), st.m, ws.get("y_t", dev, n, b - a))
        ss.shift(y_s)
        st.shift(y_t)
        e = ws.get("e", dev, n, b - a)
        ss.add(y_s, y_t, st.m, e)
        st.add(y_t, y_s, ss.m, e)
    lse_s, e_s_zs, e_s_zt = ss.moments()
    lse_t, e_t_zt, e_t_zs = st.moments()
    tok_s = _label_logits(hs, head_s, labels) - lse_s
    tok_t = _label_logits(ht, head_t, labels) - lse_t
    return (tok_s, tok_t, log_ratio(tok_s, tok_t), (e_s_zs - lse_s) - (e_s_zt - lse_t),
            (e_t_zt - lse_t) - (e_t_zs - lse_s), lse_s - e_s_zs, lse_t - e_t_zt)


def _rows(head, a: int, b: int):
    w, bias = head
    return w[a:b], (None if bias is None else bias[a:b])


def _label_logits(h: torch.Tensor, head, labels: torch.Tensor) -> torch.Tensor:
    """z[x_t] = h·W[x_t] (+ b[x_t]) for each position's own label only."""
    w, bias = head
    z = (h * w[labels]).sum(-1)
    return z if bias is None else z + bias[labels]


def _columns(h_s, head_s, h_t, head_t, labels, ws: Workspace, compiled: bool = False):
    """All float columns for one chunk of positions; ``h_*`` ``[n, H]``, ``labels`` ``[n]``.

    Eager: streamed over vocabulary blocks (:func:`_streamed_columns`; three ``n × vocab_block`` buffers).
    Compiled: two ``n × V`` logits arrays and one fused kernel (:func:`_compiled_columns`)."""
    n, dev = h_s.shape[0], h_s.device
    if compiled:
        z_s = project(h_s, head_s, ws.get("z_s", dev, n))
        z_t = project(h_t, head_t, ws.get("z_t", dev, n))
        vals = _compiled_columns()(z_s, z_t, labels)
    else:
        vals = _streamed_columns(h_s, head_s, h_t, head_t, labels, ws)
    return {k: v.float().cpu().numpy() for k, v in zip(FLOAT_COLUMNS, vals)}


def scoring_options(tokens_cfg: Mapping) -> dict:
    """:func:`score_many`'s options from the config's ``tokens`` section (every scoring rule uses the same)."""
    return {"chunk": tokens_cfg["chunk"], "batch_size": tokens_cfg["batch_size"],
            "vocab_block": tokens_cfg.get("vocab_block", 4096), "compiled": tokens_cfg.get("compiled", False)}


def score_many(
    students: Mapping[str, object],
    teacher,
    seqs: Sequence[TokenSequence],
    *,
    chunk: int = 1024,
    batch_size: int = 8,
    max_len: int | None = None,
    progress: bool = True,
    compiled: bool = False,
    vocab_block: int = 4096,
) -> dict[str, dict[str, np.ndarray]]:
    """Score the same ``seqs`` under several student checkpoints against one teacher.

    The teacher's hidden states are computed once per micro-batch and shared by every student, so pairing
    e.g. pre- and post-OPD ℓ per occurrence (Eq. 5) costs one teacher pass. Returns ``{name: columns}``
    with the columns of :func:`score_sequences`, rows in the same order for every student.
    """
    check_inputs(students, teacher, seqs, chunk, batch_size, max_len)
    if vocab_block < 1:
        raise ValueError(f"vocab_block must be >= 1, got {vocab_block}")
    from tqdm.auto import tqdm

    n_resp = np.array([s.n_response for s in seqs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_resp)])
    total = int(offsets[-1])

    # shared index columns, in input order
    seq_col = np.repeat(np.arange(len(seqs), dtype=np.int32), n_resp)
    pos_col = (np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], n_resp)).astype(np.int32)
    tok_col = np.concatenate([np.asarray(s.ids[s.prompt_len :], dtype=np.int32) for s in seqs])
    out = {}
    for name in students:
        cols = {"seq": seq_col.copy(), "position": pos_col.copy(), "token_id": tok_col.copy()}
        cols.update({k: np.full(total, np.nan, dtype=np.float32) for k in FLOAT_COLUMNS})
        out[name] = cols

    # longest first: little padding per micro-batch, and the largest one (peak memory) fails fast
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    dev_t = _device(teacher)
    models = [teacher, *students.values()]
    most = max(int(n_resp[b].sum()) for b in batches)  # scored positions of the largest micro-batch
    V = output_weight(teacher).shape[0]
    ws = Workspace(min(chunk, most), V if compiled else min(vocab_block, V))
    with torch.inference_mode(), eval_mode(models):
        heads = {name: output_head(m) for name, m in students.items()}
        head_t = output_head(teacher)
        heads_t = {str(_device(m)): tuple(None if x is None else x.to(_device(m)) for x in head_t)
                   for m in students.values()}  # the teacher's output layer where each student lives
        for batch in tqdm(batches, desc="scoring", unit="mb", disable=not progress):
            mb = collate([seqs[i] for i in batch], pad_id=0)
            orig = np.asarray(batch, dtype=np.int64)[mb.seq_index.numpy()]  # input index of each position
            dest = offsets[orig] + (mb.label_index.numpy() - np.array([seqs[i].prompt_len for i in orig]))
            h_t = final_hidden(teacher, mb.input_ids.to(dev_t), mb.attention_mask.to(dev_t))
            h_t = h_t[mb.rows.to(dev_t), mb.cols.to(dev_t)]  # [N, H_t]: scored positions only
            for name, student in students.items():
                dev_s = _device(student)
                h_s = final_hidden(student, mb.input_ids.to(dev_s), mb.attention_mask.to(dev_s))
                h_s = h_s[mb.rows.to(dev_s), mb.cols.to(dev_s)]
                h_ts = h_t.to(dev_s)
                w_t = heads_t[str(dev_s)]
                labels = mb.labels.to(dev_s)
                for start in range(0, h_s.shape[0], chunk):
                    sl = slice(start, start + chunk)
                    cols = _columns(h_s[sl], heads[name], h_ts[sl], w_t, labels[sl], ws, compiled)
                    _raise_non_finite(
                        cols, orig[sl], {"entropy_student": f"student {name!r}", "entropy_teacher": "teacher"}
                    )
                    for k, v in cols.items():
                        out[name][k][dest[sl]] = v
                del h_s, h_ts
            del h_t
    return out


def score_sequences(student, teacher, seqs: Sequence[TokenSequence], **options) -> dict[str, np.ndarray]:
    """Teacher-forced per-token scores of every response token of ``seqs`` (in input order).

    Returns columns (numpy arrays of equal length, one row per response token):
    ``seq`` (int32, index into ``seqs``), ``position`` (int32, index within the response), ``token_id``
    (int32), and float32 ``logp_student``, ``logp_teacher``, ``log_ratio`` (Eq. 2), ``rkl`` (reverse KL,
    Eq. 1/15 summand), ``fkl`` (forward KL), ``entropy_student``, ``entropy_teacher``.

    ``chunk``: positions scored at once; ``vocab_block``: vocabulary columns per streamed block (peak memory ≈
    hidden states + 3 ``chunk × vocab_block`` floats; ``compiled=True``: 2 ``chunk × V``); ``batch_size``:
    sequences per forward pass; ``max_len``: the model context — a longer sequence is an error (``None``: no check). Raises :class:`VocabMismatchError` if the output
    layers differ in size and :class:`FloatingPointError` (naming the sequence) on NaN/inf logits.
    ``compiled``: fuse the per-chunk reductions with ``torch.compile`` (same formulas; faster on CPU and GPU
    once compiled, but the first call compiles for tens of seconds and needs a C++ compiler / Triton).
    ``progress``: a tqdm bar over micro-batches. ``options`` are the keyword options of :func:`score_many`.
    """
    return score_many({"student": student}, teacher, seqs, **options)["student"]


def to_frame(columns: Mapping[str, np.ndarray]):
    """The columns as a pandas DataFrame (column order of :data:`COLUMNS`)."""
    import pandas as pd

    return pd.DataFrame({k: columns[k] for k in COLUMNS})
