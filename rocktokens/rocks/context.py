"""Context-consistent Rock Tokens: §2.2 of the paper, Eq. 5–14, computed exactly (R(v) of Eq. 3–4 comes from
the DuckDB aggregation, ``rocktokens/tokens/sql/token_stats.sql``).

The authors' public code has no implementation of Eq. 5–14, so this module is the reference. Every
equation is one function whose docstring names it; :func:`detect_rocks` chains them into the three-stage
procedure of §2.2 (rank by R(v) → candidates; persistent high-loss occurrences; context filter).

Notation (paper → code)
-----------------------
* occurrence o = (i, t): ``seq_id[k]``, ``position[k]`` (0-based within the *response*), ``token_id[k]``.
* ℓ^pre, ℓ^post: ``loss_pre``, ``loss_post`` — the per-token loss of the same occurrence under the pre- and
  post-OPD student (default in the workflow: full-vocabulary reverse KL, the summand of Eq. 1 / Eq. 15).
* c^{(w)}_{i,t} = x_{t−w:t+w} (Eq. 6): :func:`context_windows`, an ``int64 [n, 2w]`` array with columns at
  offsets ``−w, …, −1, +1, …, +w``. **The centre token x_t is excluded**: all occurrences compared in
  Eq. 10 share it (x_o = v, Eq. 9), so including it would add the same constant match to every pair and
  only rescale γ. Positions outside the response (t+d < 0 or ≥ its length) hold the sentinel
  :data:`PAD` = −1 (real token ids are ≥ 0).
* h = f_ctx(c) and s(o, o') = sim(h, h') (Eq. 7–8): a named :class:`ContextSimilarity` in
  :data:`SIMILARITIES`:

  - ``"positional"`` (default): h = the ordered window; s = (# offsets d with h_d = h'_d) / 2w.
  - ``"bag"``: h = the window as a multiset; s = multiset Jaccard |h ∩ h'| / |h ∪ h'| where
    |h ∪ h'| = 4w − |h ∩ h'| (every window has exactly 2w elements; padding counts as an element).

  Both similarities are a monotone function of an integer k (matching positions, resp. multiset
  intersection size), so s ≥ γ ⇔ k ≥ m with m = :func:`min_matches` (γ, w) — the smallest k whose
  similarity, computed with the *same* float expression as ``sim``, is ≥ γ (no ceil(γ·2w) rounding traps).
* Padding policy ``pad_policy``: ``"never"`` (default) — a PAD matches nothing, not even another PAD (what lies
  beyond the response edge is unknown to us: the prompt/chat template before it, nothing after it);
  ``"equal"`` — PAD is an ordinary symbol ("response boundary") that matches PAD at the same offset / in
  the bag. Self-comparisons are excluded by Eq. 10 anyway.

Exact ρ without O(n²) pairs (Eq. 10)
------------------------------------
For occurrences o, o' of the same token let A(o, o') be the set of agreeing elements (offsets for
``positional``; for ``bag`` the multiset intersection, made a *set* by labelling the r-th copy of a value in
a window as (value, r), so the multiset intersection equals the set intersection of the labelled sets).
We need N(o) = #{o' in the group : |A(o, o')| ≥ m}. For a subset S of o's 2w elements let
E_S(o) = #{o' in the group : S ⊆ A(o, o')} — a plain group-by count:

* ``positional``: o' agrees with o on the offsets S ⇔ the projections (v, h[S]) are equal, so E_S is the
  size of o's group when rows are grouped on the key (v, h[S]) — one exact hash factorisation per S.
* ``bag``: o' contains the labelled set S ⇔ S is one of the 2^{2w} subsets of o''s labelled set, so
  E_S(o) = number of occurrences of the key (v, sorted S) among *all* subsets of *all* rows of the group
  (rows sorted, so a subset's key is canonical; all masks of one size are factorised jointly).

Binomial inversion of 1[|A| ≥ m] = Σ_{S ⊆ A} c(|S|) gives
c(s) = Σ_{k=m}^{s} (−1)^{s−k} C(s, k) (zero for s < m), hence

    N(o) = Σ_{S, |S| ≥ m} c(|S|) · E_S(o)        (Möbius inversion over the subset lattice)

with integer arithmetic throughout — exact, O(n · 2^{2w}) hashing work and O(n) (positional) or
O(n · C(2w, w)) (bag) memory. Measured on 2 cores, 1M O_PH occurrences, biggest groups 256k/144k
(benchmarks/bench_ccr.py): positional w=2 1.0 s, w=3 3 s, w=4 16 s; bag w=2 3 s, w=3 17 s, w=4 62 s
(5.6 GB peak). o itself is counted in N(o) iff m ≤ 2w (it agrees with itself everywhere;
PADs under ``"never"`` are replaced by a value unique to their row, which matches only its own row), and is
subtracted. Identical (v, window) rows are deduplicated first and carried as weights. If at some node every
key is unique, all deeper keys are unique too and the rest of the sum is closed-form. Keys are combined
pairwise as ``a * card_b + b`` (exact while the product fits in int64; a lexsort fallback otherwise) and
re-densified with :func:`pandas.factorize` (a hash table with equality checks — no hash collisions can
change a count). :func:`rho_bruteforce` is the O(n²) reference evaluating ``sim`` on every pair.

Defaults and why
----------------
* **Loss thresholds (Eq. 5)**: ``tau_mode="quantile"``, τ_pre = 0.8-quantile of ℓ^pre, τ_post = 0.8-quantile
  of ℓ^post over *all* scored occurrences (all tokens). Quantiles per stage, because OPD shifts the whole
  loss distribution down: an absolute τ fixed on the pre-OPD scale would empty the post-OPD side, while a
  per-stage quantile keeps "high" meaning "in the upper tail at that stage" (the paper only says the
  thresholds "identify tokens that remain in the high-loss region at both stages"). The upper quintile is
  the function's default (per-token KL is heavy-tailed; most positions are near 0); the embedded workflow
  config takes the upper quartile (0.75, config.yaml says why). ``tau_mode="absolute"`` takes τ's as given.
* **w = 2** (window of 2 tokens each side, 4 compared ids): the smallest radius that sees more than an adjacent
  bigram; larger w makes exact matches rarer (every extra offset must also agree) and costs 2^{2w}.
* **γ = 0.5**: with w = 2 that is m = 2 of the 4 neighbouring ids agreeing (e.g. the same two tokens before,
  or one on each side) — "similar", not "identical", context.
* **η = 0.1**: an occurrence is context-consistent if ≥ 10 % of the other persistent-high-loss occurrences of
  the same token share such a context, i.e. it belongs to a recurring pattern rather than an isolated spike.
* **ρ of a singleton group** (|O_PH(v)| = 1, Eq. 10 divides by 0): defined as 0 — an occurrence with no
  other persistent occurrence of its token cannot recur. (With η = 0 it is still retained, as ρ ≥ 0.)
* **Candidates (stage 1)**: the ``n_candidates = 100`` tokens with largest R(v) = ℓ̄^post_v · Freq(v) (Eq. 4;
  ℓ̄ at the *final* checkpoint, i.e. ``loss_post``), ties broken by smaller token id — the paper's K = 100
  (≈ 60 % of corpus KL; Fig. 2c). ``None`` keeps every token.
* **τ_R (Eq. 14)**: ``tau_R_mode="relative"``, τ_R = 0.1 · R(v_K), v_K the weakest candidate: after the
  context filter a rock must keep at least 10 % of the *unfiltered* burden of the weakest candidate, i.e.
  the weakest candidate survives iff CCR ≥ 0.1 and a candidate with 10× its burden iff CCR ≥ 0.01.
  τ_R depends only on ``loss_post`` and K — not on τ_pre, τ_post, w, γ, η — so raising γ or η can only
  shrink the rock set (ρ and hence |R(v)|, CCR, R_ctx are non-increasing in γ and η). Other modes:
  ``"absolute"`` (τ_R given) and ``"top_k"`` (keep the ``tau_R`` largest R_ctx among candidates, ties at
  the cut included; a fixed-size set, hence *not* monotone in γ, η). Caveat: τ_R is only as meaningful as
  R(v_K) — if K reaches into the near-zero-burden tail (tiny corpora, ``n_candidates=None``), τ_R ≈ 0 and
  Eq. 14 filters almost nothing; use ``"absolute"`` there. Eq. 14 is applied literally (R_ctx ≥ τ_R), so
  τ_R ≤ 0 admits candidates with no consistent occurrence.
* **Freq(v) (Eq. 12)** counts *all* occurrences of v in the scored trajectories, not only O_PH — so CCR is
  the share of all of v's occurrences that are persistent, high-loss and context-consistent.
* A token must be a candidate to be in V_rock; ρ/CCR/R_ctx are still reported for every token (ρ of an
  occurrence depends only on its own token's O_PH(v), so this changes no candidate's values).
* Non-finite losses raise: a NaN loss cannot be placed above or below a threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Mapping

import numpy as np
import pandas as pd

PAD = -1  #: sentinel id for window positions outside the response (real token ids are >= 0)
PAD_POLICIES = ("never", "equal")
TAU_MODES = ("quantile", "absolute")
TAU_R_MODES = ("relative", "absolute", "top_k")
_INT64_SAFE = 1 << 62


# ============================================================================ Eq. 5
def persistent_high_loss(loss_pre, loss_post, tau_pre: float, tau_post: float) -> np.ndarray:
    """Eq. 5: O_PH = {(i,t) : ℓ^pre_{i,t} ≥ τ_pre and ℓ^post_{i,t} ≥ τ_post} as a boolean mask.

    Both inequalities are non-strict as in the paper. NaN losses compare False (never persistent).
    """
    lp = np.asarray(loss_pre)
    lq = np.asarray(loss_post)
    if lp.shape != lq.shape:
        raise ValueError(f"loss_pre {lp.shape} and loss_post {lq.shape} differ in shape")
    return (lp >= tau_pre) & (lq >= tau_post)


def loss_thresholds(loss_pre, loss_post, tau_pre: float = 0.8, tau_post: float = 0.8,
                    mode: str = "quantile") -> tuple[float, float]:
    """Resolve (τ_pre, τ_post) of Eq. 5.

    ``mode="quantile"``: ``tau_pre``/``tau_post`` are quantile levels in [0, 1] of the loss distribution of
    each stage over all given occurrences (numpy's default linear interpolation).
    ``mode="absolute"``: the values are returned as given.
    """
    if mode == "absolute":
        return float(tau_pre), float(tau_post)
    if mode != "quantile":
        raise ValueError(f"tau mode {mode!r} not in {TAU_MODES}")
    for q in (tau_pre, tau_post):
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile level {q} outside [0, 1]")
    lp, lq = np.asarray(loss_pre, dtype=np.float64), np.asarray(loss_post, dtype=np.float64)
    if lp.size == 0:
        return math.inf, math.inf
    return float(np.quantile(lp, tau_pre)), float(np.quantile(lq, tau_post))


# ============================================================================ Eq. 6
def _as_sequences(tokens_by_seq) -> tuple[np.ndarray, list[np.ndarray]]:
    """(sorted seq ids, token arrays) from a mapping {seq_id: tokens} or a sequence indexed by seq_id."""
    if isinstance(tokens_by_seq, Mapping):
        keys = np.array(sorted(tokens_by_seq), dtype=np.int64)
        seqs = [np.asarray(tokens_by_seq[int(k)], dtype=np.int64).ravel() for k in keys]
    else:
        seqs = [np.asarray(s, dtype=np.int64).ravel() for s in tokens_by_seq]
        keys = np.arange(len(seqs), dtype=np.int64)
    return keys, seqs


def sequences_from_occurrences(seq_id, position, token_id) -> dict[int, np.ndarray]:
    """Rebuild {seq_id: token array} from per-occurrence arrays covering the responses.

    Length of a sequence = its largest position + 1; positions never given are filled with :data:`PAD`
    (and so, under ``pad_policy="never"``, match nothing). Duplicate (seq_id, position) pairs raise.
    """
    sid = np.asarray(seq_id, dtype=np.int64)
    pos = np.asarray(position, dtype=np.int64)
    tok = np.asarray(token_id, dtype=np.int64)
    if not (sid.shape == pos.shape == tok.shape):
        raise ValueError("seq_id, position and token_id must have the same shape")
    if sid.size == 0:
        return {}
    if pos.min() < 0:
        raise ValueError("positions must be >= 0")
    order = np.lexsort((pos, sid))
    sid, pos, tok = sid[order], pos[order], tok[order]
    if np.any((sid[1:] == sid[:-1]) & (pos[1:] == pos[:-1])):
        raise ValueError("duplicate (seq_id, position) pairs")
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], sid.size]
    out = {}
    for a, b in zip(starts, ends):
        arr = np.full(int(pos[b - 1]) + 1, PAD, dtype=np.int64)
        arr[pos[a:b]] = tok[a:b]
        out[int(sid[a])] = arr
    return out


def window_offsets(w: int) -> np.ndarray:
    """Column offsets of :func:`context_windows`: −w, …, −1, +1, …, +w (the centre 0 excluded)."""
    return np.r_[np.arange(-w, 0), np.arange(1, w + 1)].astype(np.int64)


def context_windows(tokens_by_seq, seq_id, position, w: int, pad: int = PAD) -> np.ndarray:
    """Eq. 6: c^{(w)}_{i,t} = x^{(i)}_{t−w:t+w} without the centre token, as ``int64 [n, 2w]``.

    ``tokens_by_seq``: {seq_id: token ids of the response} or a sequence indexed by seq_id.
    Column j holds the token at offset :func:`window_offsets` (w)[j]. The centre x_t is left out because
    every occurrence compared in Eq. 10 has the same centre token v (Eq. 9): it would add one constant match
    to every pair. Offsets falling outside the response hold ``pad`` (default :data:`PAD` = −1).
    """
    if w < 1:
        raise ValueError("window radius w must be >= 1")
    sid = np.asarray(seq_id, dtype=np.int64).ravel()
    pos = np.asarray(position, dtype=np.int64).ravel()
    if sid.shape != pos.shape:
        raise ValueError("seq_id and position must have the same shape")
    keys, seqs = _as_sequences(tokens_by_seq)
    lengths = np.array([s.size for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError("token ids must be >= 0 (negative ids are reserved for padding)")
    offsets = np.r_[0, np.cumsum(lengths)[:-1]] if seqs else np.zeros(0, dtype=np.int64)
    row = np.searchsorted(keys, sid)
    if np.any(row >= keys.size) or np.any(keys[np.minimum(row, keys.size - 1)] != sid):
        raise KeyError("an occurrence's seq_id is missing from tokens_by_seq")
    seq_len = lengths[row]
    if np.any((pos < 0) | (pos >= seq_len)):
        raise ValueError("an occurrence's position lies outside its sequence")
    p = pos[:, None] + window_offsets(w)[None, :]
    valid = (p >= 0) & (p < seq_len[:, None])
    idx = offsets[row][:, None] + np.clip(p, 0, None)
    idx = np.where(valid, idx, 0)
    out = flat[idx] if flat.size else np.zeros(p.shape, dtype=np.int64)
    return np.where(valid, out, np.int64(pad))


# ============================================================================ Eq. 7–8
def _validate_windows(windows) -> np.ndarray:
    h = np.asarray(windows, dtype=np.int64)
    if h.ndim != 2 or h.shape[1] == 0 or h.shape[1] % 2:
        raise ValueError("windows must be an [n, 2w] array with w >= 1")
    if h.size and h.min() < PAD:
        raise ValueError(f"window ids must be >= {PAD} ({PAD} = padding)")
    return h


def f_ctx_positional(windows) -> np.ndarray:
    """Eq. 7, ``positional``: h = the ordered window ids (identity)."""
    return _validate_windows(windows).copy()


def f_ctx_bag(windows) -> np.ndarray:
    """Eq. 7, ``bag``: h = the window as a multiset, in canonical (sorted) form."""
    return np.sort(_validate_windows(windows), axis=1)


def _valid(a: np.ndarray, pad_policy: str) -> np.ndarray:
    if pad_policy == "never":
        return a != PAD
    if pad_policy == "equal":
        return np.ones(a.shape, dtype=bool)
    raise ValueError(f"pad_policy {pad_policy!r} not in {PAD_POLICIES}")


def sim_positional(h, H, pad_policy: str = "never") -> np.ndarray:
    """Eq. 8, ``positional``: s = (# offsets j with h_j = H_j) / 2w for one h against rows of H."""
    h = np.asarray(h, dtype=np.int64)
    H = np.atleast_2d(np.asarray(H, dtype=np.int64))
    k = ((H == h[None, :]) & _valid(h, pad_policy)[None, :]).sum(axis=1)
    return k / h.size


def multiset_intersection_size(h, H, pad_policy: str = "never") -> np.ndarray:
    """|h ∩ H_r| as multisets (Σ_t min(count_h(t), count_{H_r}(t))), PADs excluded under ``"never"``.

    Computed as Σ_a 1[rank_a < count_{H_r}(h_a)], rank_a = # earlier positions of h with the same value.
    """
    h = np.asarray(h, dtype=np.int64)
    H = np.atleast_2d(np.asarray(H, dtype=np.int64))
    L = h.size
    rank = np.array([(h[:a] == h[a]).sum() for a in range(L)], dtype=np.int64)
    cnt = (H[:, None, :] == h[None, :, None]).sum(axis=2)  # [rows, a]: copies of h_a in H_r
    return ((rank[None, :] < cnt) & _valid(h, pad_policy)[None, :]).sum(axis=1)


def sim_bag(h, H, pad_policy: str = "never") -> np.ndarray:
    """Eq. 8, ``bag``: multiset Jaccard k / (4w − k), k = |h ∩ H_r| (each window has 2w elements)."""
    k = multiset_intersection_size(h, H, pad_policy)
    return k / (2 * np.asarray(h).size - k)


@dataclass(frozen=True)
class ContextSimilarity:
    """One choice of (f_ctx, sim) for Eq. 7–8, plus what the exact fast counter needs.

    ``sim_of_k(k, L)``: similarity as a function of the integer agreement k for windows of L = 2w ids —
    the same float expression as ``sim`` uses, so :func:`min_matches` agrees bit-for-bit with it.
    """

    name: str
    f_ctx: Callable[[np.ndarray], np.ndarray]
    sim: Callable[..., np.ndarray]
    sim_of_k: Callable[[int, int], float]
    description: str = ""


SIMILARITIES: dict[str, ContextSimilarity] = {
    "positional": ContextSimilarity(
        "positional", f_ctx_positional, sim_positional, lambda k, L: k / L,
        "fraction of the 2w offsets at which the two windows hold the same id"),
    "bag": ContextSimilarity(
        "bag", f_ctx_bag, sim_bag, lambda k, L: k / (2 * L - k),
        "multiset Jaccard of the 2w window ids (padding counts as an element)"),
}


def get_similarity(name: str) -> ContextSimilarity:
    try:
        return SIMILARITIES[name]
    except KeyError:
        raise ValueError(f"unknown similarity {name!r}; known: {sorted(SIMILARITIES)}") from None


def min_matches(gamma: float, w: int, similarity: str = "positional") -> int:
    """Smallest agreement k ∈ {0..2w} with sim(k) ≥ γ (so s ≥ γ ⇔ k ≥ m); 2w+1 if none (γ > 1)."""
    spec = get_similarity(similarity)
    L = 2 * w
    for k in range(L + 1):
        if spec.sim_of_k(k, L) >= gamma:
            return k
    return L + 1


# ============================================================================ exact counting engine
def _mobius_coefficients(L: int, m: int) -> list[int]:
    """c(s), s = 0..L, with 1[a ≥ m] = Σ_{s} C(a, s) c(s) for every a ∈ 0..L (binomial inversion)."""
    return [sum((-1) ** (s - k) * math.comb(s, k) for k in range(m, s + 1)) for s in range(L + 1)]


def _dense(x: np.ndarray) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(x, sort=False)
    return codes.astype(np.int64, copy=False), len(uniq)


def _pair(a: np.ndarray, ka: int, b: np.ndarray, kb: int, n_rows: int) -> tuple[np.ndarray, int, bool]:
    """Exact codes of the pairs (a, b), a ∈ [0, ka), b ∈ [0, kb): (codes, card, dense).

    Codes lie in [0, card); ``dense`` says whether every code in [0, card) is used (re-densified by
    :func:`pandas.factorize`) or the raw ``a * kb + b`` was kept because the key space is already small.
    """
    if ka * kb < _INT64_SAFE:
        comb = a * np.int64(kb) + b
        if ka * kb <= 2 * n_rows:  # small key space: use it directly, no re-densification needed
            return comb, ka * kb, False
        codes, card = _dense(comb)
        return codes, card, True
    order = np.lexsort((b, a))  # pragma: no cover - needs > 2^31 distinct keys per side
    sa, sb = a[order], b[order]
    new = np.r_[True, (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])]
    codes = np.empty(a.size, dtype=np.int64)
    codes[order] = np.cumsum(new) - 1
    return codes, int(new.sum()), True


def _all_unique(codes: np.ndarray, card: int, dense: bool) -> bool:
    """True iff no two entries of ``codes`` are equal."""
    if dense:
        return card == codes.size
    return codes.size <= card and np.bincount(codes, minlength=card).max(initial=0) <= 1


def _group_counts(codes: np.ndarray, card: int, weights: np.ndarray | None) -> np.ndarray:
    cnt = np.bincount(codes, weights=weights, minlength=card)
    if weights is not None:
        cnt = np.rint(cnt).astype(np.int64)
    return cnt


def _dedupe(cols: np.ndarray, group: np.ndarray):
    """Unique (group, row) keys: (first index of each unique row, inverse, weights or None, group codes, G)."""
    g, G = _dense(group)
    key, card = g, G
    n = cols.shape[0]
    for j in range(cols.shape[1]):
        c, kc = _dense(cols[:, j])
        key, card, _ = _pair(key, card, c, kc, n)
    codes, U = _dense(key)
    counts = np.bincount(codes, minlength=U)
    order = np.argsort(codes, kind="stable")
    first = order[np.r_[0, np.cumsum(counts)[:-1]]]  # smallest index of each unique key
    return first, codes, (None if U == n else counts.astype(np.float64)), g[first], G


def _unique_pads(windows: np.ndarray, pad_policy: str) -> np.ndarray:
    """Under ``"never"`` replace each PAD by a value unique to its row (−2 − row), so it matches only itself."""
    if pad_policy == "equal":
        return windows
    if pad_policy != "never":
        raise ValueError(f"pad_policy {pad_policy!r} not in {PAD_POLICIES}")
    rowval = -2 - np.arange(windows.shape[0], dtype=np.int64)
    return np.where(windows == PAD, rowval[:, None], windows)


def _count_positional(W: np.ndarray, g: np.ndarray, G: int, m: int, weights) -> np.ndarray:
    """N(u) = Σ_{S ⊆ offsets, |S| ≥ m} c(|S|) E_S(u) over unique rows u (weights = multiplicities)."""
    U, L = W.shape
    coef = _mobius_coefficients(L, m)
    cols = [_dense(W[:, j]) for j in range(L)]
    wts = np.ones(U, dtype=np.int64) if weights is None else np.rint(weights).astype(np.int64)
    N = np.zeros(U, dtype=np.int64)

    def visit(code, card, dense, size, last):
        nonlocal N
        free = L - 1 - last  # offsets that can still be added below this node
        if size + free < m:
            return  # no mask in this subtree reaches m agreements
        if _all_unique(code, card, dense):  # unique here ⇒ unique in the whole subtree: E_S = own weight
            tot = sum(math.comb(free, s - size) * coef[s] for s in range(size, L + 1))
            if tot:
                N += tot * wts
            return
        if coef[size]:
            N += coef[size] * _group_counts(code, card, weights)[code]
        for j in range(last + 1, L):
            child, ccard, cdense = _pair(code, card, cols[j][0], cols[j][1], U)
            visit(child, ccard, cdense, size + 1, j)

    visit(g, G, True, 0, -1)
    return N


def _count_bag(E: np.ndarray, Ke: int, g: np.ndarray, G: int, m: int, weights) -> np.ndarray:
    """As :func:`_count_positional` over the labelled-element sets E (rows sorted, distinct in a row).

    Keys at depth d are (group, d sorted elements); all C(L, d) masks of a depth are factorised jointly
    so equal contents at different masks of different rows meet.
    """
    U, L = E.shape
    coef = _mobius_coefficients(L, m)
    wts = np.ones(U, dtype=np.int64) if weights is None else np.rint(weights).astype(np.int64)
    N = np.zeros(U, dtype=np.int64)
    if coef[0]:
        N += coef[0] * _group_counts(g, G, weights)[g]
    prev, prev_card, prev_index = g[:, None], G, {(): 0}
    for d in range(1, L + 1):
        if all(c == 0 for c in coef[d:]):
            break
        masks = list(combinations(range(L), d))
        M = len(masks)
        P = prev[:, [prev_index[mk[:-1]] for mk in masks]]
        X = E[:, [mk[-1] for mk in masks]]
        keys, card, dense = _pair(P.ravel(), prev_card, X.ravel(), Ke, U * M)
        del P, X
        if _all_unique(keys, card, dense):  # all keys unique ⇒ unique at every deeper depth too
            tot = sum(math.comb(L, s) * coef[s] for s in range(d, L + 1))
            if tot:
                N += tot * wts
            break
        if coef[d]:
            cnt = _group_counts(keys, card, None if weights is None else np.repeat(weights, M))
            N += coef[d] * cnt[keys].reshape(U, M).sum(axis=1)
        prev, prev_card = keys.reshape(U, M), card
        prev_index = {mk: i for i, mk in enumerate(masks)}
    return N


def _labelled_elements(W: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's multiset as a set of labelled elements (value, copy #), densely coded and row-sorted."""
    S = np.sort(W, axis=1)
    U, L = S.shape
    copy = np.zeros_like(S)
    for j in range(1, L):
        copy[:, j] = np.where(S[:, j] == S[:, j - 1], copy[:, j - 1] + 1, 0)
    v, kv = _dense(S.ravel())
    codes, ke, _ = _pair(v, kv, copy.ravel(), L, S.size)
    codes, ke = _dense(codes)
    # rows are ordered by (value, copy #): a canonical order of the labelled set, identical in every row
    return codes.reshape(U, L), ke


def match_counts(windows, token_id, m: int, similarity: str = "positional",
                 pad_policy: str = "never") -> np.ndarray:
    """#{o' with x_{o'} = x_o (o' = o included) : agreement(o, o') ≥ m}, exactly, without pairs.

    Agreement = matching offsets (``positional``) or multiset-intersection size (``bag``). ``windows``
    [n, 2w] and ``token_id`` [n] describe the compared occurrences (for Eq. 10: those in O_PH).
    """
    h = _validate_windows(windows)
    tok = np.asarray(token_id).ravel()
    if tok.shape[0] != h.shape[0]:
        raise ValueError("windows and token_id differ in length")
    get_similarity(similarity)
    n, L = h.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if m <= 0:
        return group_sizes(tok).astype(np.int64)
    if m > L:
        return np.zeros(n, dtype=np.int64)
    W = _unique_pads(h, pad_policy)
    if similarity == "bag":
        W = np.sort(W, axis=1)  # dedupe on the multiset
    first, inverse, weights, g, G = _dedupe(W, tok)
    Wu = W[first]
    if similarity == "positional":
        Nu = _count_positional(Wu, g, G, m, weights)
    else:
        E, ke = _labelled_elements(Wu)
        Nu = _count_bag(E, ke, g, G, m, weights)
    return Nu[inverse]


# ============================================================================ Eq. 9–10
def group_sizes(token_id) -> np.ndarray:
    """|O_PH(v)| for each occurrence's own token v (Eq. 9), given the token ids of the O_PH occurrences."""
    codes, _ = _dense(np.asarray(token_id).ravel())
    return np.bincount(codes)[codes] if codes.size else np.zeros(0, dtype=np.int64)


def rho(windows, token_id, gamma: float, similarity: str = "positional",
        pad_policy: str = "never") -> np.ndarray:
    """Eq. 10: ρ(o) = (1/(|O_PH(v)|−1)) Σ_{o' ∈ O_PH(v), o' ≠ o} 1[s(o, o') ≥ γ], exactly.

    ``windows`` ([n, 2w], :func:`context_windows`) and ``token_id`` ([n]) are those of the O_PH occurrences;
    groups O_PH(v) are formed by token id (Eq. 9). ρ = 0 for singleton groups (documented choice).
    O(n·2^{2w}) hashing via Möbius inversion (see the module docstring); :func:`rho_bruteforce` is the
    O(n²) reference.
    """
    h = _validate_windows(windows)
    L = h.shape[1]
    m = min_matches(gamma, L // 2, similarity)
    N = match_counts(h, token_id, m, similarity, pad_policy)
    size = group_sizes(token_id)
    others = N - (1 if m <= L else 0)
    out = np.zeros(h.shape[0], dtype=np.float64)
    nz = size > 1
    out[nz] = others[nz] / (size[nz] - 1)
    return out


def rho_bruteforce(windows, token_id, gamma: float, similarity: str = "positional",
                   pad_policy: str = "never") -> np.ndarray:
    """Eq. 10 by definition: evaluates f_ctx and sim (Eq. 7–8) on every pair of a group. O(n²); tests only."""
    spec = get_similarity(similarity)
    H = spec.f_ctx(windows)
    tok = np.asarray(token_id).ravel()
    out = np.zeros(H.shape[0], dtype=np.float64)
    for v in np.unique(tok):
        idx = np.flatnonzero(tok == v)
        if idx.size < 2:
            continue
        for o in idx:
            others = idx[idx != o]
            s = spec.sim(H[o], H[others], pad_policy)
            out[o] = np.count_nonzero(s >= gamma) / (idx.size - 1)
    return out


# ============================================================================ Eq. 11–14
def consistent_occurrences(rho_values, eta: float) -> np.ndarray:
    """Eq. 11: mask of R(v) = {o ∈ O_PH(v) : ρ(o) ≥ η}; R(v) is the masked occurrences whose token is v.

    ``rho_values`` holds ρ for O_PH occurrences (NaN, e.g. for occurrences outside O_PH, compares False).
    """
    return np.asarray(rho_values, dtype=np.float64) >= eta


def ccr(counts_R_v, freq_v) -> np.ndarray:
    """Eq. 12: CCR(v) = |R(v)| / Freq(v), Freq(v) = number of *all* occurrences of v (not only O_PH).

    Elementwise over token types; 0 where Freq(v) = 0 (then |R(v)| must be 0 too).
    """
    c = np.asarray(counts_R_v, dtype=np.float64)
    f = np.asarray(freq_v, dtype=np.float64)
    if np.any(c < 0) or np.any(c > f):
        raise ValueError("need 0 <= |R(v)| <= Freq(v): Freq counts all occurrences of v")
    return np.divide(c, f, out=np.zeros(np.broadcast(c, f).shape), where=f > 0)


def burden_table(token_stats: pd.DataFrame, token_id) -> pd.DataFrame:
    """Freq(v), ℓ̄_v and R(v) (Eq. 3–4) as computed by DuckDB (``rocktokens/tokens/sql/token_stats.sql``), checked
    against the occurrences: every occurrence's token must be there with Freq equal to its count.

    Returns token_id, Freq, mean_loss, R sorted by token_id (the equation itself lives in the SQL only).
    """
    need = {"token_id", "freq", "mean_loss", "R"}
    if not need <= set(token_stats.columns):
        raise ValueError(f"token_stats lacks columns {sorted(need - set(token_stats.columns))}")
    t = (token_stats[["token_id", "freq", "mean_loss", "R"]].rename(columns={"freq": "Freq"})
         .astype({"token_id": np.int64, "Freq": np.int64}).sort_values("token_id").reset_index(drop=True))
    ids, counts = np.unique(np.asarray(token_id, dtype=np.int64), return_counts=True)
    if not (np.array_equal(t["token_id"].to_numpy(), ids) and np.array_equal(t["Freq"].to_numpy(), counts)):
        raise ValueError("token_stats do not describe these occurrences (token ids or counts differ)")
    return t


def r_ctx(R, CCR) -> np.ndarray:
    """Eq. 13: R_ctx(v) = R(v) · CCR(v)."""
    return np.asarray(R, dtype=np.float64) * np.asarray(CCR, dtype=np.float64)


def rock_vocabulary(r_ctx_values, tau_R: float) -> np.ndarray:
    """Eq. 14: v ∈ V_rock ⇔ R_ctx(v) ≥ τ_R, as a boolean mask over token types."""
    return np.asarray(r_ctx_values, dtype=np.float64) >= tau_R


def resolve_tau_R(r_ctx_values, R_candidates, mode: str = "relative", value: float = 0.1) -> float:
    """τ_R of Eq. 14 from its mode (see "Defaults and why").

    ``relative``: value · min R over candidates (R of the weakest candidate v_K);
    ``absolute``: value; ``top_k``: the int(value)-th largest R_ctx among candidates (ties kept), ∞ if none.
    """
    if mode == "absolute":
        return float(value)
    Rc = np.asarray(R_candidates, dtype=np.float64)
    if mode == "relative":
        return float(value) * float(Rc.min()) if Rc.size else math.inf
    if mode == "top_k":
        k = int(value)
        x = np.sort(np.asarray(r_ctx_values, dtype=np.float64))[::-1]
        return float(x[min(k, x.size) - 1]) if k >= 1 and x.size else math.inf
    raise ValueError(f"tau_R mode {mode!r} not in {TAU_R_MODES}")


# ============================================================================ the three stages
@dataclass
class RockDetection:
    """Output of :func:`detect_rocks`.

    ``tokens``: one row per token type present — token_id, Freq, mean_loss (ℓ̄^post), R, rank_R (1 = largest),
    candidate, n_PH, n_consistent (|R(v)|), CCR, R_ctx, in_rock_vocab; sorted by R descending.
    ``occurrences``: one row per input occurrence, in input order — seq_id, position, token_id, in_PH,
    rho (NaN outside O_PH), consistent (o ∈ R(v)).
    ``params``: every resolved threshold (tau_pre, tau_post, m, tau_R, …).
    """

    tokens: pd.DataFrame
    occurrences: pd.DataFrame
    params: dict = field(default_factory=dict)

    @property
    def rock_ids(self) -> np.ndarray:
        return self.tokens.loc[self.tokens["in_rock_vocab"], "token_id"].to_numpy()


def detect_rocks(seq_id, position, token_id, loss_pre, loss_post, token_stats: pd.DataFrame, tokens_by_seq=None, *,
                 n_candidates: int | None = 100,
                 tau_mode: str = "quantile", tau_pre: float = 0.8, tau_post: float = 0.8,
                 w: int = 2, gamma: float = 0.5, eta: float = 0.1,
                 similarity: str = "positional", pad_policy: str = "never",
                 tau_R_mode: str = "relative", tau_R: float = 0.1) -> RockDetection:
    """The three-stage detection of §2.2 (Eq. 4–14).

    1. R(v) = ℓ̄^post_v · Freq(v) (Eq. 4, from ``token_stats`` — the SQL aggregation of the same occurrences); the ``n_candidates`` largest (ties by
       smaller token id) are the candidates (``None``: all tokens).
    2. O_PH (Eq. 5) with (τ_pre, τ_post) from :func:`loss_thresholds` (``tau_mode``).
    3. Windows (Eq. 6, radius ``w``), ρ (Eq. 7–10, ``similarity``, γ, ``pad_policy``), R(v) (Eq. 11, η),
       CCR with Freq over all occurrences (Eq. 12), R_ctx (Eq. 13), V_rock = candidates with
       R_ctx ≥ τ_R (Eq. 14; τ_R from :func:`resolve_tau_R`).

    The arrays must cover *all* scored response tokens (Freq counts them). ``tokens_by_seq`` gives the token
    sequences for the windows; ``None`` rebuilds them from the arrays (:func:`sequences_from_occurrences`).
    Defaults are explained in the module docstring ("Defaults and why").
    """
    sid = np.asarray(seq_id, dtype=np.int64).ravel()
    pos = np.asarray(position, dtype=np.int64).ravel()
    tok = np.asarray(token_id, dtype=np.int64).ravel()
    lp = np.asarray(loss_pre, dtype=np.float64).ravel()
    lq = np.asarray(loss_post, dtype=np.float64).ravel()
    n = tok.size
    if not (sid.size == pos.size == lp.size == lq.size == n):
        raise ValueError("all per-occurrence arrays must have the same length")
    if not (np.all(np.isfinite(lp)) and np.all(np.isfinite(lq))):
        raise ValueError("losses must be finite")
    if tok.size and tok.min() < 0:
        raise ValueError("token ids must be >= 0")
    get_similarity(similarity)

    # stage 1: aggregate burden and candidates
    table = burden_table(token_stats, tok)
    order = np.lexsort((table["token_id"].to_numpy(), -table["R"].to_numpy()))
    rank = np.empty(len(table), dtype=np.int64)
    rank[order] = np.arange(1, len(table) + 1)
    table["rank_R"] = rank
    k = len(table) if n_candidates is None else int(n_candidates)
    table["candidate"] = table["rank_R"] <= k
    tok_row = np.searchsorted(table["token_id"].to_numpy(), tok)

    # stage 2: persistent high-loss occurrences
    t_pre, t_post = loss_thresholds(lp, lq, tau_pre, tau_post, tau_mode)
    in_ph = persistent_high_loss(lp, lq, t_pre, t_post)

    # stage 3: context consistency
    if tokens_by_seq is None:
        tokens_by_seq = sequences_from_occurrences(sid, pos, tok)
    ph = np.flatnonzero(in_ph)
    win = context_windows(tokens_by_seq, sid[ph], pos[ph], w)
    rho_ph = rho(win, tok[ph], gamma, similarity, pad_policy)
    rho_all = np.full(n, np.nan)
    rho_all[ph] = rho_ph
    consistent = consistent_occurrences(rho_all, eta)
    n_tok = len(table)
    table["n_PH"] = np.bincount(tok_row[ph], minlength=n_tok).astype(np.int64)
    table["n_consistent"] = np.bincount(tok_row[consistent], minlength=n_tok).astype(np.int64)
    table["CCR"] = ccr(table["n_consistent"], table["Freq"])
    table["R_ctx"] = r_ctx(table["R"], table["CCR"])
    cand = table["candidate"].to_numpy()
    tau_R_value = resolve_tau_R(table["R_ctx"].to_numpy()[cand], table["R"].to_numpy()[cand],
                                tau_R_mode, tau_R)
    table["in_rock_vocab"] = cand & rock_vocabulary(table["R_ctx"], tau_R_value)
    table = table.sort_values("rank_R", kind="stable").reset_index(drop=True)

    occ = pd.DataFrame({"seq_id": sid, "position": pos, "token_id": tok, "in_PH": in_ph,
                        "rho": rho_all, "consistent": consistent})
    params = dict(n_candidates=n_candidates, tau_mode=tau_mode, tau_pre_level=tau_pre,
                  tau_post_level=tau_post, tau_pre=t_pre, tau_post=t_post, w=w, gamma=gamma, eta=eta,
                  similarity=similarity, pad_policy=pad_policy,
                  m=min_matches(gamma, w, similarity), tau_R_mode=tau_R_mode, tau_R_level=tau_R,
                  tau_R=tau_R_value, n_occurrences=n, n_PH=int(in_ph.sum()),
                  n_rock_tokens=int(table["in_rock_vocab"].sum()))
    return RockDetection(table, occ, params)
