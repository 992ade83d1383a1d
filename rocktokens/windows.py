"""The local high-divergence windows W(v) of the paper (§4 Eq. 18–19, App. D Eq. 21) — one definition for both
the freeze arms (training) and the window knockout (decoding).

The paper names W(v) "the surrounding decoding context in which the teacher–student divergence remains consistently
elevated" and never defines it further; the authors' code has no windows. Our definition reuses the context machinery
of Eq. 5–11 (``rocktokens.context``), so "window" means the same thing everywhere in the study:

* **The high-divergence contexts of v** (:func:`high_divergence_contexts`): the context windows c^{(w)}(o) (Eq. 6,
  radius w, centre excluded) of v's *context-consistent persistent high-loss* occurrences o ∈ R(v) (Eq. 11) in the
  analysis corpus — the places where v stayed hard before and after OPD, in a context that recurs. Written by the
  rock analysis as ``rocks/windows.parquet`` (token_id, the 2w context ids, count of identical contexts).
* **W(v) on a trajectory** (:func:`window_union`, Eq. 18): an occurrence of v at response position t lies in a
  high-divergence window iff its own context c^{(w)}_t is *similar* to one of v's stored contexts — the same
  similarity and threshold as Eq. 9 (sim ≥ γ ⇔ at least m = min_matches(γ, w) agreeing elements). Its window is the
  positions t−w … t+w (clipped to the response). W_R is the union over v ∈ R and over the occurrences.
* **Eq. 19 weights** (:func:`freeze_weights`): w(x_t, t) = λ if x_t ∈ R or t ∈ W_R, else 1 — indexed by the *label*
  x_t (the emitted token), never by the position of the logit that predicts it.
* **W(v) as a set of candidates** (:func:`window_candidates`, Eq. 21): the screened candidates that *recur* in v's
  high-divergence contexts (in at least a share ``min_share`` of them; the workflow uses η of Eq. 11, the same
  "recurring, not isolated" bar as context consistency), plus v itself — what the window-knockout policy
  π^{\\W(v)} bans at every decoding step.

The similarity test is exact and needs no pairwise loop: two windows agree on ≥ m elements iff they share a size-m
sub-pattern — for ``positional`` similarity the values at one m-subset of offsets, for ``bag`` one sub-multiset of
size m — so the stored contexts of v are indexed once by their size-m sub-patterns and each new occurrence is looked
up with C(2w, m) hash probes (PADs match nothing under ``pad_policy="never"``, as in ``rocktokens.context``).
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.context import PAD, PAD_POLICIES, context_windows, get_similarity, min_matches

CONTEXT_PREFIX = "c"  # windows.parquet columns: token_id, c0 .. c{2w-1} (offsets −w..−1, +1..+w), count


def context_columns(w: int) -> list[str]:
    return [f"{CONTEXT_PREFIX}{j}" for j in range(2 * w)]


def high_divergence_contexts(tokens_by_seq, seq_id, position, token_id, consistent, w: int) -> pd.DataFrame:
    """The stored contexts of every token: distinct c^{(w)}(o) over its context-consistent occurrences (Eq. 6, 11).

    Returns a frame with ``token_id``, one column per window offset (:func:`context_columns`) and ``count``
    (how many consistent occurrences had that exact context), sorted by token id then count (descending).
    """
    keep = np.asarray(consistent, dtype=bool).ravel()
    sid = np.asarray(seq_id, dtype=np.int64).ravel()[keep]
    pos = np.asarray(position, dtype=np.int64).ravel()[keep]
    tok = np.asarray(token_id, dtype=np.int64).ravel()[keep]
    cols = context_columns(w)
    if tok.size == 0:
        return pd.DataFrame({"token_id": pd.Series([], dtype="int64"),
                             **{c: pd.Series([], dtype="int64") for c in cols}, "count": pd.Series([], dtype="int64")})
    win = context_windows(tokens_by_seq, sid, pos, w)
    df = pd.DataFrame(win, columns=cols)
    df.insert(0, "token_id", tok)
    out = df.groupby(["token_id", *cols], sort=True).size().rename("count").reset_index()
    return out.sort_values(["token_id", "count"], ascending=[True, False], kind="stable").reset_index(drop=True)


def contexts_by_token(contexts: pd.DataFrame, token_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """{v: int64 [n_v, 2w] stored contexts} for the requested tokens (all tokens if ``None``)."""
    cols = [c for c in contexts.columns if c.startswith(CONTEXT_PREFIX) and c[1:].isdigit()]
    if not cols or len(cols) % 2:
        raise ValueError("windows table has no context columns c0..c{2w-1}")
    if token_ids is not None:
        contexts = contexts[contexts["token_id"].isin(set(int(v) for v in token_ids))]
    return {int(v): g[cols].to_numpy(np.int64) for v, g in contexts.groupby("token_id", sort=True)}


def window_candidates(contexts: pd.DataFrame, v: int, candidates: Iterable[int], min_share: float = 0.0) -> list[int]:
    """W(v) as the ids the window knockout bans (Eq. 21): v and every candidate that recurs in v's stored contexts —
    present in at least ``min_share`` of them (weighted by ``count``; 0 = present in any one)."""
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must lie in [0, 1], got {min_share}")
    cand = {int(c) for c in candidates}
    rows = contexts[contexts["token_id"] == int(v)]
    if rows.empty:
        return [int(v)]
    ctx = contexts_by_token(rows)[int(v)]
    weight = rows["count"].to_numpy(np.float64) if "count" in rows else np.ones(len(rows))
    share: dict[int, float] = {}
    for u in cand:
        share[u] = float(weight[(ctx == u).any(axis=1)].sum() / weight.sum())
    return sorted({int(v)} | {u for u, s in share.items() if s > 0 and s >= min_share})


class ContextIndex:
    """The stored high-divergence contexts of a set of tokens, indexed by their size-m sub-patterns (exact Eq. 9 test)."""

    def __init__(self, contexts: Mapping[int, np.ndarray], w: int, gamma: float, similarity: str = "positional",
                 pad_policy: str = "never"):
        if pad_policy not in PAD_POLICIES:
            raise ValueError(f"pad_policy {pad_policy!r} not in {PAD_POLICIES}")
        get_similarity(similarity)
        self.w, self.similarity, self.pad_policy = int(w), similarity, pad_policy
        self.m = min_matches(gamma, w, similarity)
        self.L = 2 * self.w
        self.subsets = list(combinations(range(self.L), self.m)) if self.m <= self.L else []
        self.keys: set[tuple] = set()
        for v, arr in contexts.items():
            arr = np.atleast_2d(np.asarray(arr, dtype=np.int64))
            if arr.size and arr.shape[1] != self.L:
                raise ValueError(f"stored contexts of token {v} have {arr.shape[1]} ids, expected 2w = {self.L}")
            for row in arr:
                self.keys.update(self._patterns(int(v), row))
        self.tokens = frozenset(int(v) for v in contexts)

    def _patterns(self, v: int, row: np.ndarray) -> Iterable[tuple]:
        if self.m == 0:
            return [(v,)]
        if self.similarity == "bag":
            vals = sorted(int(x) for x in row if self.pad_policy == "equal" or x != PAD)
            return {(v, *s) for s in combinations(vals, self.m)}
        out = []
        for S in self.subsets:
            vals = tuple(int(row[j]) for j in S)
            if self.pad_policy == "never" and PAD in vals:
                continue
            out.append((v, S, vals))
        return out

    def matches(self, v: int, context: np.ndarray) -> bool:
        """Does this occurrence of v have a context similar (sim ≥ γ) to one of v's stored contexts?"""
        if int(v) not in self.tokens or self.m > self.L:
            return False
        return any(p in self.keys for p in self._patterns(int(v), np.asarray(context, dtype=np.int64)))


def window_union(response_ids: Sequence[int], index: ContextIndex) -> np.ndarray:
    """Eq. 18: W_R = ∪_{v∈R} W(v) on one response — a boolean mask over its positions.

    Every occurrence of an indexed token whose context matches a stored high-divergence context of that token
    (:class:`ContextIndex`) contributes the positions t−w … t+w that lie inside the response.
    """
    ids = np.asarray(response_ids, dtype=np.int64).ravel()
    n = ids.size
    mask = np.zeros(n, dtype=bool)
    if n == 0 or not index.tokens:
        return mask
    hits = np.flatnonzero(np.isin(ids, np.fromiter(index.tokens, dtype=np.int64)))
    if hits.size == 0:
        return mask
    win = context_windows([ids], np.zeros(hits.size, dtype=np.int64), hits, index.w)
    for t, c in zip(hits, win):
        if index.matches(int(ids[t]), c):
            mask[max(0, t - index.w): t + index.w + 1] = True
    return mask


def freeze_weights(response_ids: Sequence[int], rock_ids: Iterable[int], in_window: np.ndarray, lam: float) -> np.ndarray:
    """Eq. 19: w(x_t, t) = λ if x_t ∈ R or t ∈ W_R, else 1 — one weight per response token x_t (the label)."""
    ids = np.asarray(response_ids, dtype=np.int64).ravel()
    in_window = np.asarray(in_window, dtype=bool).ravel()
    if in_window.size != ids.size:
        raise ValueError(f"window mask has {in_window.size} entries for {ids.size} response tokens")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"λ must lie in [0, 1], got {lam}")
    frozen = np.isin(ids, np.fromiter((int(v) for v in rock_ids), dtype=np.int64)) | in_window
    return np.where(frozen, float(lam), 1.0)
