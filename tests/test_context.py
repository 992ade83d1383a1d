"""Context-consistent Rock Tokens (§2.2, Eq. 4–14): exact ρ vs brute force, hand cases per equation."""
import math
import zlib
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from rocktokens.rocks import context as C
GAMMAS = [0.0, 0.1, 0.25, 1 / 3, 0.3, 0.5, 0.6, 2 / 3, 0.75, 0.9, 1.0, 1.1]


# ----------------------------------------------------------------------------- exact ρ == brute force
def _random_case(rng):
    """Random sequences → windows with real edge padding; small alphabets for heavy ties."""
    w = int(rng.integers(1, 4))
    alphabet = int(rng.choice([1, 2, 3, 5, 50]))
    n_groups = int(rng.integers(1, 5))
    n_seq = int(rng.integers(1, 6))
    seqs = {int(s) * 7 + 3: rng.integers(0, alphabet, size=int(rng.integers(1, 25)))
            for s in range(n_seq)}
    # plant repeats so whole windows recur (duplicate rows, dedupe weights)
    for s in list(seqs)[1:]:
        if rng.random() < 0.5 and seqs[s].size >= 4:
            k = min(seqs[s].size, seqs[list(seqs)[0]].size)
            seqs[s][:k] = seqs[list(seqs)[0]][:k]
    sid = np.concatenate([np.full(v.size, k) for k, v in seqs.items()])
    pos = np.concatenate([np.arange(v.size) for v in seqs.values()])
    keep = rng.random(sid.size) < 0.8
    sid, pos = sid[keep], pos[keep]
    win = C.context_windows(seqs, sid, pos, w)
    tok = rng.integers(0, n_groups, size=sid.size)
    return win, tok


@pytest.mark.parametrize("similarity", ["positional", "bag"])
@pytest.mark.parametrize("pad_policy", ["never", "equal"])
def test_rho_equals_bruteforce_random(similarity, pad_policy):
    # a stable seed per case (str hash() changes with PYTHONHASHSEED, so a failure could not be replayed)
    rng = np.random.default_rng(zlib.crc32(f"{similarity}/{pad_policy}".encode()))
    checked = nontrivial = 0
    for _ in range(60):
        win, tok = _random_case(rng)
        if win.shape[0] == 0:
            continue
        for gamma in rng.choice(GAMMAS, size=3, replace=False):
            fast = C.rho(win, tok, gamma, similarity, pad_policy)
            slow = C.rho_bruteforce(win, tok, gamma, similarity, pad_policy)
            np.testing.assert_array_equal(fast, slow, err_msg=f"w={win.shape[1] // 2} γ={gamma}")
            checked += 1
            nontrivial += bool(np.any((slow > 0) & (slow < 1)))
    assert checked > 100 and nontrivial > 20  # the comparison exercised partial matches


def test_rho_bruteforce_bag_matches_counter_definition():
    """The vectorised multiset intersection used by sim_bag equals Σ_t min(count, count') via Counter."""
    rng = np.random.default_rng(1)
    for _ in range(300):
        L = 2 * int(rng.integers(1, 4))
        h, g = rng.integers(-1, 3, size=L), rng.integers(-1, 3, size=L)
        for pad_policy in ("never", "equal"):
            ch, cg = Counter(h.tolist()), Counter(g.tolist())
            if pad_policy == "never":
                ch.pop(-1, None), cg.pop(-1, None)
            k = sum((ch & cg).values())
            assert C.multiset_intersection_size(h, g[None], pad_policy)[0] == k
            assert C.sim_bag(h, g[None], pad_policy)[0] == k / (2 * L - k)


def test_match_counts_large_groups_against_direct_count():
    """Heavy ties at scale: 3,000 occurrences of one token over a 2-letter alphabet, w = 3."""
    rng = np.random.default_rng(2)
    win = rng.integers(0, 2, size=(3000, 6))
    win[rng.random(win.shape) < 0.05] = C.PAD
    tok = np.zeros(3000, dtype=np.int64)
    for sim in ("positional", "bag"):
        r = C.rho(win, tok, 0.5, sim)
        for o in rng.choice(3000, size=25, replace=False):
            others = np.delete(np.arange(3000), o)
            H = C.get_similarity(sim).f_ctx(win)
            direct = np.count_nonzero(C.get_similarity(sim).sim(H[o], H[others]) >= 0.5) / 2999
            assert r[o] == direct


@pytest.mark.parametrize("L", range(1, 9))
def test_mobius_coefficients_invert_threshold(L):
    for m in range(0, L + 2):
        c = C._mobius_coefficients(L, m)
        for a in range(L + 1):
            assert sum(math.comb(a, s) * c[s] for s in range(a + 1)) == int(a >= m)


# ----------------------------------------------------------------------------- Eq. 5
def test_persistent_high_loss_non_strict_and_nan():
    pre = np.array([1.0, 2.0, 2.0, 0.5, np.nan, 3.0])
    post = np.array([1.0, 0.9, 1.0, 5.0, 9.0, np.nan])
    np.testing.assert_array_equal(C.persistent_high_loss(pre, post, 1.0, 1.0),
                                  [True, False, True, False, False, False])
    with pytest.raises(ValueError):
        C.persistent_high_loss(pre, post[:2], 0, 0)


def test_loss_thresholds_modes():
    pre, post = np.arange(101.0), np.arange(101.0) / 10
    assert C.loss_thresholds(pre, post, 0.8, 0.5) == (80.0, 5.0)
    assert C.loss_thresholds(pre, post, 3.0, 4.0, mode="absolute") == (3.0, 4.0)
    with pytest.raises(ValueError):
        C.loss_thresholds(pre, post, 1.5, 0.5)
    with pytest.raises(ValueError):
        C.loss_thresholds(pre, post, 0.5, 0.5, mode="nope")


# ----------------------------------------------------------------------------- Eq. 6
def test_context_windows_edges_and_centre_excluded():
    seqs = {4: [10, 11, 12, 13], 9: [20]}
    win = C.context_windows(seqs, [4, 4, 4, 9], [0, 1, 3, 0], w=2)
    P = C.PAD
    np.testing.assert_array_equal(win, [[P, P, 11, 12], [P, 10, 12, 13], [11, 12, P, P], [P, P, P, P]])
    np.testing.assert_array_equal(C.window_offsets(2), [-2, -1, 1, 2])
    # a list is indexed by seq_id
    np.testing.assert_array_equal(C.context_windows([[1, 2, 3]], [0], [1], w=1), [[1, 3]])
    with pytest.raises(KeyError):
        C.context_windows(seqs, [5], [0], w=1)
    with pytest.raises(ValueError):
        C.context_windows(seqs, [4], [4], w=1)
    with pytest.raises(ValueError):
        C.context_windows({0: [1, -1]}, [0], [0], w=1)
    with pytest.raises(ValueError):
        C.context_windows(seqs, [4], [0], w=0)


def test_sequences_from_occurrences_fills_gaps_with_pad():
    seqs = C.sequences_from_occurrences([7, 7, 3, 7], [0, 3, 0, 1], [5, 8, 1, 6])
    assert set(seqs) == {3, 7}
    np.testing.assert_array_equal(seqs[7], [5, 6, C.PAD, 8])
    np.testing.assert_array_equal(seqs[3], [1])
    with pytest.raises(ValueError):
        C.sequences_from_occurrences([1, 1], [0, 0], [2, 3])


# ----------------------------------------------------------------------------- Eq. 7–8
def test_similarities_hand_cases():
    h = np.array([1, 2, 3, 4])
    H = np.array([[1, 2, 3, 4], [1, 9, 3, 9], [9, 9, 9, 9], [4, 3, 2, 1]])
    np.testing.assert_array_equal(C.sim_positional(h, H), [1.0, 0.5, 0.0, 0.0])
    np.testing.assert_array_equal(C.sim_bag(h, H), [1.0, 2 / 6, 0.0, 1.0])  # order-free
    p = np.array([C.PAD, 2, 3, 4])
    assert C.sim_positional(p, p[None], "never")[0] == 0.75  # PAD never matches, not even PAD
    assert C.sim_positional(p, p[None], "equal")[0] == 1.0
    assert C.sim_bag(p, p[None], "never")[0] == 3 / 5
    assert C.sim_bag(np.array([1, 1, 2, 3]), np.array([[1, 2, 2, 4]]))[0] == 2 / 6
    np.testing.assert_array_equal(C.f_ctx_bag([[3, 1, 2, 1]]), [[1, 1, 2, 3]])
    with pytest.raises(ValueError):
        C.get_similarity("cosine")


def test_min_matches_consistent_with_sim():
    assert C.min_matches(0.5, 2) == 2
    assert C.min_matches(0.3, 5) == 3  # 0.3 * 10 = 3.0000000000000004: no ceil() trap
    assert C.min_matches(0.0, 3) == 0
    assert C.min_matches(1.0, 2) == 4
    assert C.min_matches(1.01, 2) == 5
    assert C.min_matches(0.5, 2, "bag") == 3  # k / (8 − k) ≥ 0.5 ⇔ k ≥ 8/3
    for sim in ("positional", "bag"):
        spec = C.get_similarity(sim)
        for w in (1, 2, 3, 4):
            for g in GAMMAS:
                m = C.min_matches(g, w, sim)
                assert all((spec.sim_of_k(k, 2 * w) >= g) == (k >= m) for k in range(2 * w + 1))


# ----------------------------------------------------------------------------- Eq. 9–10
def test_rho_hand_case_groups_and_singletons():
    win = np.array([
        [1, 2, 3, 4],  # token 0: a
        [1, 2, 9, 9],  # token 0: shares 2 offsets with a
        [8, 8, 8, 8],  # token 0: isolated
        [1, 2, 3, 4],  # token 5: same window as a, other token (Eq. 9: not compared with a)
        [1, 2, 3, 4],  # token 6: singleton
    ])
    tok = np.array([0, 0, 0, 5, 6])
    r = C.rho(win, tok, 0.5)
    np.testing.assert_array_equal(r, [0.5, 0.5, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(C.rho(win, tok, 0.75), [0.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(C.rho(win, tok, 0.0), [1.0, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(C.group_sizes(tok), [3, 3, 3, 1, 1])
    assert C.rho(np.zeros((0, 4), dtype=np.int64), np.zeros(0), 0.5).shape == (0,)


def test_rho_identical_windows_and_padding():
    P = C.PAD
    win = np.array([[P, P, 1, 2], [P, P, 1, 2], [P, P, 1, 3]])
    tok = np.zeros(3, dtype=np.int64)
    # never: the two PADs don't count → rows 0/1 agree on 2 of 4 (=0.5), row 2 on 1
    np.testing.assert_array_equal(C.rho(win, tok, 0.5, pad_policy="never"), [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(C.rho(win, tok, 0.75, pad_policy="never"), [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(C.rho(win, tok, 0.75, pad_policy="equal"), [1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- Eq. 11–14
def test_consistent_occurrences_non_strict_nan_false():
    np.testing.assert_array_equal(C.consistent_occurrences([0.1, 0.09, np.nan, 1.0], 0.1),
                                  [True, False, False, True])


def test_ccr_uses_full_freq():
    np.testing.assert_array_equal(C.ccr([2, 0, 3], [10, 0, 3]), [0.2, 0.0, 1.0])
    with pytest.raises(ValueError):
        C.ccr([4], [3])  # |R(v)| ≤ |O_PH(v)| ≤ Freq(v)


def _stats(token_id, loss_post):
    """Reference Freq / mean loss / R per token (what rocktokens/tokens/sql/token_stats.sql computes)."""
    d = pd.DataFrame({"token_id": np.asarray(token_id), "loss": np.asarray(loss_post, dtype=float)})
    g = d.groupby("token_id")["loss"].agg(freq="size", mean_loss="mean").reset_index()
    g["R"] = g["freq"] * g["mean_loss"]
    return g


def test_burden_table_r_ctx_vocabulary():
    t = C.burden_table(_stats([3, 1, 3, 3], [1.0, 4.0, 2.0, 3.0]), [3, 1, 3, 3])
    pd.testing.assert_frame_equal(t, pd.DataFrame({"token_id": [1, 3], "Freq": [1, 3],
                                                   "mean_loss": [4.0, 2.0], "R": [4.0, 6.0]}))
    with pytest.raises(ValueError, match="do not describe these occurrences"):
        C.burden_table(_stats([3, 1, 3], [1.0, 4.0, 2.0]), [3, 1, 3, 3])
    rc = C.r_ctx([4.0, 6.0], [0.5, 1 / 3])
    np.testing.assert_allclose(rc, [2.0, 2.0])
    np.testing.assert_array_equal(C.rock_vocabulary([2.0, 1.9, 3.0], 2.0), [True, False, True])
    assert C.resolve_tau_R([5, 1, 3], [10, 20, 30], "relative", 0.1) == 1.0
    assert C.resolve_tau_R([5, 1, 3, 3], [1, 1, 1, 1], "top_k", 2) == 3.0
    assert C.resolve_tau_R([5], [1], "absolute", 7) == 7.0


# ----------------------------------------------------------------------------- the three stages
def _planted_corpus(seed=0, n_seq=60, length=80):
    """Token 5 is high-loss in one recurring context ('1 2 5 3 4'); token 7 is frequent, high-loss only
    at isolated random positions; the rest is low-loss filler (ids 20..69)."""
    rng = np.random.default_rng(seed)
    seqs, lp, lq = {}, [], []
    for s in range(n_seq):
        x = rng.integers(20, 70, size=length)
        x[rng.random(length) < 0.25] = 7
        for start in rng.choice(np.arange(0, length - 5, 6), size=3, replace=False):
            x[start:start + 5] = [1, 2, 5, 3, 4]
        seqs[s] = x
        pre = rng.uniform(0.0, 0.2, size=length)
        post = rng.uniform(0.0, 0.1, size=length)
        pre[x == 5], post[x == 5] = 3.0, 2.0
        spikes = (x == 7) & (rng.random(length) < 0.2)
        pre[x == 7], post[x == 7] = 0.15, 0.08  # ordinary loss at most positions …
        pre[spikes], post[spikes] = 4.0, 3.0  # … high-loss only at isolated positions
        lp.append(pre), lq.append(post)
    sid = np.concatenate([np.full(length, s) for s in seqs])
    pos = np.tile(np.arange(length), n_seq)
    tok = np.concatenate(list(seqs.values()))
    return seqs, sid, pos, tok, np.concatenate(lp), np.concatenate(lq)


def test_detect_rocks_planted():
    seqs, sid, pos, tok, lp, lq = _planted_corpus()
    # candidates = {7, 5}; τ_R = 0.1 · R(5) (weakest candidate)
    det = C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), seqs, n_candidates=2, tau_mode="absolute",
                         tau_pre=1.0, tau_post=1.0)
    T = det.tokens.set_index("token_id")
    assert T.loc[7, "R"] > T.loc[5, "R"]  # 7 carries the larger raw burden (Eq. 4) …
    assert T.loc[5, "CCR"] == 1.0 and T.loc[7, "CCR"] < 0.05  # … but is context-dependent
    assert list(det.rock_ids) == [5]
    # Freq counts all occurrences, not only O_PH (Eq. 12)
    assert T.loc[7, "Freq"] == int((tok == 7).sum()) > T.loc[7, "n_PH"]
    np.testing.assert_allclose(T["CCR"], T["n_consistent"] / T["Freq"])
    np.testing.assert_allclose(T["R_ctx"], T["R"] * T["CCR"])
    assert det.tokens["rank_R"].tolist() == list(range(1, len(T) + 1))
    assert T["candidate"].sum() == 2 and det.params["tau_R"] == pytest.approx(0.1 * T.loc[5, "R"])
    # per-occurrence flags agree with the brute-force definition
    occ = det.occurrences
    ph = occ["in_PH"].to_numpy()
    assert np.all(np.isnan(occ["rho"].to_numpy()[~ph]))
    win = C.context_windows(seqs, sid[ph], pos[ph], 2)
    np.testing.assert_array_equal(occ["rho"].to_numpy()[ph], C.rho_bruteforce(win, tok[ph], 0.5))
    np.testing.assert_array_equal(occ["consistent"], occ["rho"].to_numpy() >= 0.1)
    # tokens_by_seq rebuilt from the arrays gives the same result
    det2 = C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), None, n_candidates=2, tau_mode="absolute",
                          tau_pre=1.0, tau_post=1.0)
    pd.testing.assert_frame_equal(det.tokens, det2.tokens)
    assert det.params["m"] == 2 and det.params["n_rock_tokens"] == 1


def test_detect_rocks_defaults_and_validation():
    seqs, sid, pos, tok, lp, lq = _planted_corpus(seed=1)
    det = C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), n_candidates=2)
    assert det.params["tau_pre"] == np.quantile(lp, 0.8) and det.params["tau_post"] == np.quantile(lq, 0.8)
    assert det.params["tau_R"] == pytest.approx(0.1 * det.tokens.loc[det.tokens["candidate"], "R"].min())
    assert 5 in det.rock_ids and 7 not in det.rock_ids
    assert len(det.occurrences) == tok.size
    bad = lq.copy()
    bad[0] = np.nan
    with pytest.raises(ValueError):
        C.detect_rocks(sid, pos, tok, lp, bad, _stats(tok, lq))


def _noisy_corpus(seed):
    rng = np.random.default_rng(seed)
    seqs = {s: rng.integers(0, 6, size=int(rng.integers(5, 60))) for s in range(40)}
    sid = np.concatenate([np.full(v.size, k) for k, v in seqs.items()])
    pos = np.concatenate([np.arange(v.size) for v in seqs.values()])
    tok = np.concatenate(list(seqs.values()))
    lp, lq = rng.exponential(size=tok.size), rng.exponential(size=tok.size)
    return seqs, sid, pos, tok, lp, lq


@pytest.mark.parametrize("similarity", ["positional", "bag"])
def test_raising_gamma_or_eta_never_grows_the_rock_set(similarity):
    for seed in range(3):
        seqs, sid, pos, tok, lp, lq = _noisy_corpus(seed)
        for mode, level in (("relative", 0.1), ("absolute", 1.0)):
            kw = dict(n_candidates=4, tau_pre=0.5, tau_post=0.5, similarity=similarity,
                      tau_R_mode=mode, tau_R=level)
            prev_set, prev_rctx = None, None
            for gamma in (0.0, 0.25, 0.5, 0.75, 1.0):
                det = C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), seqs, gamma=gamma, eta=0.1, **kw)
                cur, rctx = set(det.rock_ids), det.tokens.set_index("token_id")["R_ctx"]
                if prev_set is not None:
                    assert cur <= prev_set and np.all(rctx <= prev_rctx + 1e-12)
                prev_set, prev_rctx = cur, rctx
            prev_set = None
            for eta in (0.0, 0.1, 0.3, 0.6, 1.0):
                cur = set(C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), seqs, gamma=0.5, eta=eta, **kw).rock_ids)
                if prev_set is not None:
                    assert cur <= prev_set
                prev_set = cur
            assert prev_set is not None


def test_top_k_mode_keeps_ties():
    seqs, sid, pos, tok, lp, lq = _noisy_corpus(0)
    det = C.detect_rocks(sid, pos, tok, lp, lq, _stats(tok, lq), seqs, n_candidates=None, tau_pre=0.3, tau_post=0.3,
                         gamma=0.25, eta=0.0, tau_R_mode="top_k", tau_R=2)
    rc = det.tokens["R_ctx"].to_numpy()
    kth = np.sort(rc)[::-1][1]
    assert set(det.rock_ids) == set(det.tokens["token_id"][rc >= kth])
    assert len(det.rock_ids) >= 2
