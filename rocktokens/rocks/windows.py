"""The local high-divergence windows W(v) of the paper (§4 Eq. 18–19, App. D Eq. 21): the freeze arms' windows on a
trajectory (training) and the window knockout's banned set (decoding), both drawn from v's stored contexts.

The paper names W(v) "the surrounding decoding context in which the teacher–student divergence remains consistently
elevated" and never defines it further; the authors' code has no windows. Our definition reuses the context machinery
of Eq. 5–11 (``rocktokens.rocks.context``), so "window" means the same thing everywhere in the study:

* **The high-divergence contexts of v** (:func:`high_divergence_contexts`): the context windows c^{(w)}(o) (Eq. 6,
  radius w, centre excluded) of v's *context-consistent persistent high-loss* occurrences o ∈ R(v) (Eq. 11) in the
  analysis corpus — the places where v stayed hard before and after OPD, in a context that recurs — and, per
  offset, whether that neighbour was itself persistent high-loss (Eq. 5: ℓ^pre ≥ τ_pre and ℓ^post ≥ τ_post, the
  study's "divergence stays elevated"). The rock analysis writes the contexts as ``rocks/windows.parquet``; the
  freeze arms rebuild contexts *and* flags from ``rocks/occurrences.parquet`` (:func:`stored_windows`), which holds
  every occurrence's token, ``in_PH`` and ``consistent``.
* **W(v) on a trajectory** (:func:`window_extent`, :func:`window_union`, Eq. 18) — "the surrounding segment in
  which the divergence stays elevated", made operational with what the analysis corpus recorded. For an occurrence
  of v ∈ R at response position t with context c = c^{(w)}_t:

  1. *Match* (as Eq. 9): the matching stored contexts are those s of v with sim(c, s) ≥ γ (at least
     m = min_matches(γ, w) agreeing elements). If none matches, the occurrence opens **no window** (x_t itself is
     still frozen as a rock token, x_t ∈ R).
  2. *Extend* over the elevated segment of one stored context: for each matching s, its run is [t − l_s, t + r_s]
     where l_s is the number of offsets −1, −2, … (in that order) at which the response token equals s's token at
     that offset *and* s's neighbour there was persistent high-loss, up to the first offset where either fails;
     r_s likewise over +1, +2, …. PADs (beyond the response) agree with nothing, so a window stops at the
     response's edge; a stored context has only the offsets −w … +w, so **the window is capped at radius w**.
  3. W(v) at t = [t − max_s l_s, t + max_s r_s] — the union of the runs, which all contain t. Every frozen
     neighbour is backed by one observed high-divergence context that this trajectory reproduces contiguously up
     to v, at an offset where the divergence was elevated there. (Taking, per offset, *any* matching context would
     splice runs of different contexts into a segment seen in none of them; we do not.)

  W_R on a response is the union over v ∈ R and over its occurrences. With ``bag`` similarity step 1 matches
  multisets, step 2 still compares offsets (the window is the segment reproducing a stored context in place).
  Why the flags: around the context-consistent rock occurrences of the embedded run the neighbours' divergence is
  *not* elevated (median ℓ^post 0.0013 at ±1 and ±2 against 0.0024 over all tokens; 21–25 % of the ±1 neighbours
  and 4–6 % of the ±2 neighbours persistent high-loss, against 17 % of all tokens), while the response tokens
  around them reproduce the stored contexts almost everywhere; freezing t−w … t+w at every matching occurrence
  masked 55.8 % of the response tokens (the paper reports 18–30 %), and token agreement alone still 53 %.
* **Eq. 19 weights** (:func:`freeze_weights`): w(x_t, t) = λ if x_t ∈ R or t ∈ W_R, else 1 — indexed by the *label*
  x_t (the emitted token), never by the position of the logit that predicts it.
* **W(v) as a set of candidates** (:func:`window_candidates`, Eq. 21): the screened candidates that *recur* in v's
  high-divergence contexts (in at least a share ``min_share`` of them; the workflow uses η of Eq. 11, the same
  "recurring, not isolated" bar as context consistency), plus v itself — what the window-knockout policy
  π^{\\W(v)} bans at every decoding step. It reads ``rocks/windows.parquet``, which carries no elevated flags:
  every stored neighbour counts.

The similarity test is exact and needs no pairwise loop: two windows agree on ≥ m elements iff they share a size-m
sub-pattern — for ``positional`` similarity the values at one m-subset of offsets, for ``bag`` one sub-multiset of
size m — so the stored contexts of v are indexed once by their size-m sub-patterns and each new occurrence is looked
up with C(2w, m) hash probes (PADs match nothing under ``pad_policy="never"``, as in ``rocktokens.rocks.context``).
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rocktokens.rocks.context import (PAD, PAD_POLICIES, context_windows, get_similarity, min_matches,
                                sequences_from_occurrences)

CONTEXT_PREFIX = "c"  # windows.parquet columns: token_id, c0 .. c{2w-1} (offsets −w..−1, +1..+w), count
ELEVATED_PREFIX = "e"  # stored windows: e0 .. e{2w-1}, the neighbour at that offset was persistent high-loss (Eq. 5)


def context_columns(w: int) -> list[str]:
    return [f"{CONTEXT_PREFIX}{j}" for j in range(2 * w)]


def elevated_columns(w: int) -> list[str]:
    return [f"{ELEVATED_PREFIX}{j}" for j in range(2 * w)]


def high_divergence_contexts(tokens_by_seq, seq_id, position, token_id, consistent, w: int,
                             elevated=None) -> pd.DataFrame:
    """The stored contexts of every token: distinct c^{(w)}(o) over its context-consistent occurrences (Eq. 6, 11).

    Returns a frame with ``token_id``, one column per window offset (:func:`context_columns`) and ``count``
    (how many consistent occurrences had that exact context), sorted by token id then count (descending).
    ``elevated`` (one bool per occurrence, aligned with ``seq_id``/``position``; e.g. Eq. 5's ``in_PH``) adds the
    columns :func:`elevated_columns`: whether the neighbour at each offset was elevated, a PAD never; identical
    contexts whose neighbours differ in that respect are then separate rows.
    """
    keep = np.asarray(consistent, dtype=bool).ravel()
    sid_all = np.asarray(seq_id, dtype=np.int64).ravel()
    pos_all = np.asarray(position, dtype=np.int64).ravel()
    sid, pos = sid_all[keep], pos_all[keep]
    tok = np.asarray(token_id, dtype=np.int64).ravel()[keep]
    cols = context_columns(w)
    ecols = elevated_columns(w) if elevated is not None else []
    if tok.size == 0:
        return pd.DataFrame({"token_id": pd.Series([], dtype="int64"), **{c: pd.Series([], dtype="int64") for c in cols},
                             **{e: pd.Series([], dtype=bool) for e in ecols}, "count": pd.Series([], dtype="int64")})
    df = pd.DataFrame(context_windows(tokens_by_seq, sid, pos, w), columns=cols)
    df.insert(0, "token_id", tok)
    if elevated is not None:
        flag = np.asarray(elevated, dtype=bool).ravel().astype(np.int64)
        if flag.size != sid_all.size:
            raise ValueError(f"{flag.size} elevated flags for {sid_all.size} occurrences")
        flags = sequences_from_occurrences(sid_all, pos_all, flag)
        for e, col in zip(ecols, (context_windows(flags, sid, pos, w) == 1).T):
            df[e] = col
    out = df.groupby(["token_id", *cols, *ecols], sort=True).size().rename("count").reset_index()
    return out.sort_values(["token_id", "count"], ascending=[True, False], kind="stable").reset_index(drop=True)


def stored_windows(occurrences: pd.DataFrame, w: int) -> pd.DataFrame:
    """The stored contexts with their elevated-divergence flags from the rock analysis's ``occurrences.parquet``
    (columns benchmark, problem_id, sample, position, token_id, in_PH, consistent): :func:`high_divergence_contexts`
    with ``elevated = in_PH`` (Eq. 5) over the analysis trajectories."""
    need = {"benchmark", "problem_id", "sample", "position", "token_id", "in_PH", "consistent"}
    missing = sorted(need - set(occurrences.columns))
    if missing:
        raise ValueError(f"the occurrences table lacks columns {missing}")
    sid = occurrences.groupby(["benchmark", "problem_id", "sample"], sort=False).ngroup().to_numpy(np.int64)
    pos, tok = occurrences["position"].to_numpy(np.int64), occurrences["token_id"].to_numpy(np.int64)
    return high_divergence_contexts(sequences_from_occurrences(sid, pos, tok), sid, pos, tok,
                                    occurrences["consistent"].to_numpy(bool), w,
                                    elevated=occurrences["in_PH"].to_numpy(bool))


def contexts_by_token(contexts: pd.DataFrame, token_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """{v: int64 [n_v, 2w] stored contexts} for the requested tokens (all tokens if ``None``)."""
    return _by_token(contexts, CONTEXT_PREFIX, np.int64, token_ids)


def elevated_by_token(contexts: pd.DataFrame, token_ids: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """{v: bool [n_v, 2w] elevated flags}, row for row as :func:`contexts_by_token`; the table must carry them."""
    return _by_token(contexts, ELEVATED_PREFIX, bool, token_ids)


def _by_token(contexts: pd.DataFrame, prefix: str, dtype, token_ids) -> dict[int, np.ndarray]:
    cols = [c for c in contexts.columns if c.startswith(prefix) and c[1:].isdigit()]
    if not cols or len(cols) % 2:
        raise ValueError(f"windows table has no columns {prefix}0..{prefix}{{2w-1}}"
                         + (" (elevated flags: build it with stored_windows)" if prefix == ELEVATED_PREFIX else ""))
    if token_ids is not None:
        contexts = contexts[contexts["token_id"].isin(set(int(v) for v in token_ids))]
    return {int(v): g[cols].to_numpy(dtype) for v, g in contexts.groupby("token_id", sort=True)}


def window_candidates(contexts: pd.DataFrame, v: int, candidates: Iterable[int], min_share: float = 0.0) -> list[int]:
    """W(v) as the ids the window knockout bans (Eq. 21): v and every candidate that recurs in v's stored contexts —
    present in at least ``min_share`` of them (weighted by ``count``; 0 = present in any one). When the table
    carries the neighbours' flags (:func:`elevated_columns`, as the rock analysis writes it), a candidate counts only
    where it was itself elevated -- the same segments the freeze arms' windows cover (:func:`window_extent`)."""
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must lie in [0, 1], got {min_share}")
    cand = {int(c) for c in candidates}
    rows = contexts[contexts["token_id"] == int(v)]
    if rows.empty:
        return [int(v)]
    ctx = contexts_by_token(rows)[int(v)]
    ecols = [c for c in elevated_columns(ctx.shape[1] // 2) if c in rows.columns]
    flags = rows[ecols].to_numpy(bool) if ecols else np.ones(ctx.shape, dtype=bool)
    weight = rows["count"].to_numpy(np.float64) if "count" in rows else np.ones(len(rows))
    share: dict[int, float] = {}
    for u in cand:
        share[u] = float(weight[((ctx == u) & flags).any(axis=1)].sum() / weight.sum())
    return sorted({int(v)} | {u for u, s in share.items() if s > 0 and s >= min_share})


def window_extent(context, stored, elevated, w: int) -> tuple[int, int]:
    """Steps 2–3 of W(v) (module docstring): (l, r) such that the window of an occurrence at t is [t − l, t + r].

    ``context``: the occurrence's c^{(w)}_t (``int64 [2w]``, offsets −w … −1, +1 … +w); ``stored``: the stored
    contexts of v that match it (``[n, 2w]``); ``elevated``: their flags (``bool [n, 2w]``). l (r) is the longest
    run of offsets −1, −2, … (+1, +2, …) over which one stored context agrees with the response at neighbours that
    were elevated, maximised over the stored contexts. A PAD (beyond the response) agrees with nothing, whatever
    the matching's ``pad_policy``: the window stops at the response's edge. ``stored`` empty: (0, 0)."""
    c = np.asarray(context, dtype=np.int64).ravel()
    s = np.asarray(stored, dtype=np.int64)
    e = np.asarray(elevated, dtype=bool)
    if s.size == 0:
        return 0, 0
    s, e = np.atleast_2d(s), np.atleast_2d(e)
    if c.size != 2 * w or s.shape[1] != 2 * w or e.shape != s.shape:
        raise ValueError(f"a context has 2w = {2 * w} ids and one elevated flag per stored id")
    run = (s == c) & (c != PAD) & e
    left = np.cumprod(run[:, w - 1::-1], axis=1).sum(axis=1)  # offsets −1, −2, …, −w
    right = np.cumprod(run[:, w:], axis=1).sum(axis=1)  # offsets +1, …, +w
    return int(left.max()), int(right.max())


class ContextIndex:
    """The stored high-divergence contexts of a set of tokens, indexed by their size-m sub-patterns (exact Eq. 9 test).

    ``elevated``: {v: bool [n_v, 2w]} flags row for row with ``contexts`` (:func:`elevated_by_token`); needed by
    :meth:`extent` (the window), not by the match test.
    """

    def __init__(self, contexts: Mapping[int, np.ndarray], w: int, gamma: float, similarity: str = "positional",
                 pad_policy: str = "never", elevated: Mapping[int, np.ndarray] | None = None):
        if pad_policy not in PAD_POLICIES:
            raise ValueError(f"pad_policy {pad_policy!r} not in {PAD_POLICIES}")
        get_similarity(similarity)
        self.w, self.similarity, self.pad_policy = int(w), similarity, pad_policy
        self.m = min_matches(gamma, w, similarity)
        self.L = 2 * self.w
        self.subsets = list(combinations(range(self.L), self.m)) if self.m <= self.L else []
        self.keys: dict[tuple, list[int]] = {}  # sub-pattern -> rows of its token's stored contexts that hold it
        self.stored: dict[int, np.ndarray] = {}
        for v, arr in contexts.items():
            arr = np.atleast_2d(np.asarray(arr, dtype=np.int64))
            if arr.size and arr.shape[1] != self.L:
                raise ValueError(f"stored contexts of token {v} have {arr.shape[1]} ids, expected 2w = {self.L}")
            self.stored[int(v)] = arr.reshape(-1, self.L)
            for i, row in enumerate(self.stored[int(v)]):
                for key in self._patterns(int(v), row):
                    self.keys.setdefault(key, []).append(i)
        self.tokens = frozenset(self.stored)
        self.elevated = None
        if elevated is not None:
            self.elevated = {v: np.asarray(elevated.get(v, ()), dtype=bool).reshape(-1, self.L) for v in self.stored}
            bad = [v for v in self.stored if self.elevated[v].shape != self.stored[v].shape]
            if bad:
                raise ValueError(f"elevated flags do not match the stored contexts of tokens {bad[:5]}")

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

    def matching(self, v: int, context: np.ndarray) -> np.ndarray:
        """Rows of v's stored contexts similar (sim ≥ γ) to this occurrence's context (step 1 of W(v))."""
        if int(v) not in self.tokens or self.m > self.L:
            return np.zeros(0, dtype=np.int64)
        rows: set[int] = set()
        for p in self._patterns(int(v), np.asarray(context, dtype=np.int64)):
            rows.update(self.keys.get(p, ()))
        return np.array(sorted(rows), dtype=np.int64)

    def matches(self, v: int, context: np.ndarray) -> bool:
        """Does this occurrence of v have a context similar (sim ≥ γ) to one of v's stored contexts?"""
        if int(v) not in self.tokens or self.m > self.L:
            return False
        return any(p in self.keys for p in self._patterns(int(v), np.asarray(context, dtype=np.int64)))

    def extent(self, v: int, context: np.ndarray) -> tuple[int, int] | None:
        """W(v) of this occurrence as (l, r) around it (:func:`window_extent`); ``None`` when no stored context
        matches (no window)."""
        if self.elevated is None:
            raise ValueError("the window needs the stored contexts' elevated flags (ContextIndex(..., elevated=...))")
        rows = self.matching(v, context)
        if rows.size == 0:
            return None
        return window_extent(context, self.stored[int(v)][rows], self.elevated[int(v)][rows], self.w)


def window_union(response_ids: Sequence[int], index: ContextIndex) -> np.ndarray:
    """Eq. 18: W_R = ∪_{v∈R} W(v) on one response — a boolean mask over its positions.

    Every occurrence of an indexed token whose context matches a stored high-divergence context of that token
    (:class:`ContextIndex`) contributes its window [t − l, t + r] (:meth:`ContextIndex.extent`, the rule of the
    module docstring; t itself included); occurrences that match nothing contribute nothing.
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
        ext = index.extent(int(ids[t]), c)
        if ext is not None:
            mask[t - ext[0]: t + ext[1] + 1] = True  # l ≤ t, r < n − t: a window stops at the response's edge
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
