"""W(v): stored high-divergence contexts, the exact Eq. 9 match test, Eq. 18 union and Eq. 19 weights."""
import numpy as np
import pytest

from rocktokens.context import PAD, context_windows, get_similarity
from rocktokens.windows import (
    ContextIndex,
    contexts_by_token,
    freeze_weights,
    high_divergence_contexts,
    window_candidates,
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
        checked += want
    assert checked > 0  # the test exercises both outcomes


def test_window_union_marks_radius_w_around_matching_occurrences_only():
    stored = {5: np.array([[1, 2, 3, 4]])}
    idx = ContextIndex(stored, w=2, gamma=0.5)
    ids = [1, 2, 5, 3, 9, 7, 0, 0, 5, 8, 8]  # 2nd 5 has context (0,0,8,8): no agreement with (1,2,3,4)
    mask = window_union(ids, idx)
    assert mask.tolist() == [True] * 5 + [False] * 6
    # a matching occurrence at the edge is clipped to the response
    assert window_union([5, 3, 4, 9], idx).tolist() == [True, True, True, False]


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

