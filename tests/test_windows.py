"""W(v): stored high-divergence contexts, the exact Eq. 9 match test, Eq. 18 union and Eq. 19 weights."""
import numpy as np
import pandas as pd
import pytest

from rocktokens.rocks.context import PAD, context_windows, get_similarity
from rocktokens.rocks.windows import (
    ContextIndex,
    contexts_by_token,
    elevated_by_token,
    elevated_columns,
    freeze_weights,
    high_divergence_contexts,
    stored_windows,
    window_candidates,
    window_extent,
    window_union,
)


def _brute_match(v, ctx, stored, gamma, similarity, pad_policy="never"):
    rows = stored.get(v)
    if rows is None:
        return False
    s = get_similarity(similarity).sim(ctx, rows, pad_policy)
    return bool(np.any(s >= gamma - 1e-12))


@pytest.mark.parametrize("similarity", ["positional", "bag"])
@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.75, 1.0])
def test_index_matches_brute_force(similarity, gamma):
    rng = np.random.default_rng(0)
    w = 2
    stored = {v: rng.integers(0, 5, size=(4, 2 * w)) for v in range(3)}
    stored[1][0, 0] = PAD
    idx = ContextIndex(stored, w, gamma, similarity)
    checked = 0
    for _ in range(400):
        v = int(rng.integers(0, 4))
        ctx = rng.integers(0, 5, size=2 * w)
        if v in stored and rng.random() < 0.3:  # a perturbed copy of a stored context: near the threshold
            ctx = stored[v][rng.integers(0, 4)].copy()
            ctx[rng.integers(0, 2 * w)] = rng.integers(0, 5)
        if rng.random() < 0.2:
            ctx[rng.integers(0, 2 * w)] = PAD
        want = _brute_match(v, ctx, stored, gamma, similarity)
        assert idx.matches(v, ctx) == want, (v, ctx, similarity, gamma)
        if v in stored:  # the matching rows themselves (step 1 of W(v))
            sims = get_similarity(similarity).sim(ctx, stored[v], "never")
            assert idx.matching(v, ctx).tolist() == np.flatnonzero(sims >= gamma - 1e-12).tolist()
        checked += want
    assert checked > 0  # the test exercises both outcomes


# ----------------------------------------------------------------------------- W(v) on a trajectory
V = 50  # the rock token of the hand-made corpora


def _analysis_corpus(segment, w, n=6, seed=0):
    """n analysis trajectories ``… a_i | x_{-w} … x_{-1} V x_{+1} … x_{+w} | b_i …`` with a known divergence profile:
    the occurrence of V and the neighbours at the offsets in ``segment`` are persistent high-loss (in_PH), every other
    position is not; the neighbours' tokens repeat across trajectories (a recurring, context-consistent context)
    except at the offsets outside ``segment``, which vary per trajectory. Returns the occurrences table the rock
    analysis writes (benchmark, problem_id, sample, position, token_id, in_PH, consistent)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ctx = {d: 10 + d + w for d in range(-w, w + 1) if d}  # the recurring context: ids 10 .. 10+2w
        for d in ctx:
            if d not in segment:
                ctx[d] = int(rng.integers(100, 200))  # outside the high-divergence segment: no recurring token
        seq = [int(rng.integers(200, 300)) for _ in range(3)] + [ctx[d] for d in range(-w, 0)] + [V] \
            + [ctx[d] for d in range(1, w + 1)] + [int(rng.integers(200, 300)) for _ in range(3)]
        t = 3 + w
        for pos, tok in enumerate(seq):
            hi = pos == t or (pos - t) in segment
            rows.append({"benchmark": "math", "problem_id": f"p{i}", "sample": 0, "position": pos, "token_id": tok,
                         "in_PH": hi, "consistent": tok == V})
    return pd.DataFrame(rows)


def _index(occ, w, gamma=0.5):
    t = stored_windows(occ, w)
    ids = [V]
    return ContextIndex(contexts_by_token(t, ids), w, gamma, elevated=elevated_by_token(t, ids))


def test_window_covers_exactly_the_elevated_segment_not_the_agreeing_neighbours_beyond():
    w = 3
    occ = _analysis_corpus(segment={-2, -1, 1}, w=w)  # divergence elevated over t−2 … t+1 around V
    t = stored_windows(occ, w)
    assert len(t) == 6 and t[elevated_columns(w)].drop_duplicates().values.tolist() == \
        [[False, True, True, True, False, False]]  # offsets −3 −2 −1 | +1 +2 +3
    idx = _index(occ, w)
    # a new trajectory reproducing one analysis context entirely (tokens at −3, +2, +3 included) and more around it:
    # the window is the elevated segment t−2 … t+1, not the agreeing neighbours beyond it
    seq = occ[occ["problem_id"] == "p0"]["token_id"].tolist()
    resp = [1, 2] + seq + [3, 4]
    t0 = 2 + 3 + w
    mask = window_union(resp, idx)
    assert np.flatnonzero(mask).tolist() == [t0 - 2, t0 - 1, t0, t0 + 1]
    # with other tokens outside the segment: the same window
    resp2 = [7, 7, 7, 7, 10 + w - 2, 10 + w - 1, V, 10 + w + 1, 8, 8, 8]
    assert np.flatnonzero(window_union(resp2, idx)).tolist() == [4, 5, 6, 7]


def test_window_is_capped_at_radius_w_and_stops_at_the_response_edge():
    occ = _analysis_corpus(segment={-3, -2, -1, 1, 2, 3}, w=3)  # elevated over ±3 ...
    idx = _index(occ, w=2, gamma=0.5)  # ... but the analysis used w = 2: its contexts hold ±2 only
    resp = [0, 0, 0, 10 + 3 - 3, 10 + 3 - 2, 10 + 3 - 1, V, 10 + 3 + 1, 10 + 3 + 2, 10 + 3 + 3, 0, 0]
    t0 = 6
    # note: with w = 2 the stored ids are those at ±1, ±2 of the w = 3 corpus
    assert np.flatnonzero(window_union(resp, idx)).tolist() == [t0 - 2, t0 - 1, t0, t0 + 1, t0 + 2]
    # an occurrence at the start of the response: the window stops at the edge (PAD agrees with nothing)
    assert np.flatnonzero(window_union(resp[t0:], idx)).tolist() == [0, 1, 2]


def test_occurrence_whose_context_matches_nothing_gets_no_window():
    occ = _analysis_corpus(segment={-1, 1}, w=2)
    idx = _index(occ, w=2)
    resp = [5, 6, V, 7, 8, 9, 11, V, 13, 4]  # 1st V: no agreeing neighbour; 2nd: both ±1 agree (11, 13)
    assert window_union(resp, idx).tolist() == [False] * 6 + [True, True, True, False]
    assert not window_union([5, 6, V, 7, 8], idx).any()  # V stays a rock token (x_t ∈ R), but opens no window
    assert idx.extent(V, np.array([5, 6, 7, 8])) is None


def test_window_runs_are_contiguous_and_taken_from_one_stored_context():
    w = 2
    c = np.array([1, 2, 3, 4])  # the occurrence's context: offsets −2 −1 | +1 +2
    yes = np.ones((1, 4), dtype=bool)
    assert window_extent(c, [[1, 2, 3, 4]], yes, w) == (2, 2)
    assert window_extent(c, [[1, 9, 3, 4]], yes, w) == (0, 2)  # −1 disagrees: −2 is not reached across the gap
    assert window_extent(c, [[1, 2, 3, 4]], [[True, False, True, True]], w) == (0, 2)  # −1 was not elevated
    # A agrees at −1 and +1, B at −2 and +1 (each matches with m = 2): −2 is not spliced onto A's −1
    assert window_extent(c, [[9, 2, 3, 9], [1, 9, 3, 9]], np.ones((2, 4), bool), w) == (1, 1)
    assert window_extent(c, np.zeros((0, 4), np.int64), np.zeros((0, 4), bool), w) == (0, 0)
    assert window_extent([PAD, 2, 3, PAD], [[PAD, 2, 3, PAD]], yes, w) == (1, 1)  # PADs never extend a window
    with pytest.raises(ValueError, match="2w"):
        window_extent(c, [[1, 2, 3]], [[True] * 3], w)


def test_index_without_elevated_flags_refuses_to_build_windows():
    idx = ContextIndex({5: np.array([[1, 2, 3, 4]])}, w=2, gamma=0.5)
    assert idx.matches(5, np.array([1, 2, 0, 0]))
    with pytest.raises(ValueError, match="elevated"):
        window_union([1, 2, 5, 0, 0], idx)
    with pytest.raises(ValueError, match="elevated"):
        elevated_by_token(pd.DataFrame({"token_id": [5], "c0": [1], "c1": [2], "c2": [3], "c3": [4], "count": [1]}))


def test_window_positions_are_frozen_at_their_labels():
    """The window masks labels x_t (the emitted tokens); the trainer maps label t to the logit at t−1."""
    from rocktokens.freeze.arms import ArmSpec, ArmWeights, RockMasker
    from rocktokens.core.sequences import TokenSequence, collate

    occ = _analysis_corpus(segment={-1, 1}, w=2)
    masker = RockMasker([V], stored_windows(occ, 2), w=2, gamma=0.5)
    prompt, resp = [1, 2, 3], [5, 11, V, 13, 6]  # window: response positions 1..3
    s = TokenSequence(ids=prompt + resp, prompt_len=3, meta={"seed": 0})
    s.weights = ArmWeights(ArmSpec("freeze", 0.0), masker)(s)
    assert s.weights == [1.0, 0.0, 0.0, 0.0, 1.0]
    b = collate([s], pad_id=0)
    for t, want in enumerate(s.weights):
        i = int((b.label_index == 3 + t).nonzero())
        assert b.labels[i] == resp[t] and b.weights[i] == want and b.cols[i] == 3 + t - 1
    assert s.meta["n_masked"] == 3 and s.meta["n_rock_tokens"] == 1


def test_freeze_weights_are_label_aligned_and_use_lambda():
    ids = np.array([7, 5, 7, 7])
    in_w = np.array([False, False, False, True])
    w = freeze_weights(ids, [5], in_w, 0.3)
    assert w.tolist() == [1.0, 0.3, 1.0, 0.3]  # index t ↔ emitted token x_t
    with pytest.raises(ValueError, match="λ"):
        freeze_weights(ids, [5], in_w, 1.5)
    with pytest.raises(ValueError, match="entries"):
        freeze_weights(ids, [5], in_w[:2], 0.0)


def test_contexts_table_and_window_candidates():
    seqs = {0: np.array([1, 2, 5, 3, 4]), 1: np.array([1, 2, 5, 3, 4, 5])}
    sid = np.array([0, 1, 1])
    pos = np.array([2, 2, 5])
    tok = np.array([5, 5, 5])
    consistent = np.array([True, True, False])
    t = high_divergence_contexts(seqs, sid, pos, tok, consistent, w=2)
    assert len(t) == 1 and int(t["count"].iloc[0]) == 2
    assert t[["c0", "c1", "c2", "c3"]].iloc[0].tolist() == context_windows(seqs, [0], [2], 2)[0].tolist()
    assert contexts_by_token(t)[5].shape == (1, 4)
    # with every occurrence and its elevated flag (Eq. 5's in_PH): one flag per context offset
    sid_all = np.repeat([0, 1], [5, 6])
    pos_all = np.r_[np.arange(5), np.arange(6)]
    tok_all = np.concatenate([seqs[0], seqs[1]])
    flags = np.array([0, 1, 0, 1, 0] + [0, 0, 0, 1, 0, 0], dtype=bool)
    keep = (tok_all == 5) & (pos_all == 2)  # the two consistent occurrences of 5 (same context 1 2 | 3 4)
    te = high_divergence_contexts(seqs, sid_all, pos_all, tok_all, keep, w=2, elevated=flags)
    assert sorted(te[elevated_columns(2)].values.tolist()) == [[False, False, True, False], [False, True, True, False]]
    assert te["count"].tolist() == [1, 1]  # the two occurrences' neighbours differ in elevation: two rows
    assert window_candidates(t, 5, candidates=[2, 4, 9]) == [2, 4, 5]
    assert window_candidates(t, 9, candidates=[2, 4]) == [9]  # no stored contexts: the token alone


def test_window_candidates_min_share_keeps_recurring_neighbours():
    import pandas as pd

    # v = 5: context (1, 2, 3, 4) seen 9 times, (7, 2, 3, 8) once -> 7 and 8 are in 10 % of v's contexts
    t = pd.DataFrame({"token_id": [5, 5], "c0": [1, 7], "c1": [2, 2], "c2": [3, 3], "c3": [4, 8], "count": [9, 1]})
    pool = [1, 2, 3, 4, 7, 8]
    assert window_candidates(t, 5, pool) == [1, 2, 3, 4, 5, 7, 8]
    assert window_candidates(t, 5, pool, min_share=0.1) == [1, 2, 3, 4, 5, 7, 8]
    assert window_candidates(t, 5, pool, min_share=0.11) == [1, 2, 3, 4, 5]
    assert window_candidates(t, 5, pool, min_share=1.0) == [2, 3, 5]
    with pytest.raises(ValueError, match="min_share"):
        window_candidates(t, 5, pool, min_share=1.5)

