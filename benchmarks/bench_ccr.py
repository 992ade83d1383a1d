"""Wall time of the context-consistency filter (Eq. 6–13) at paper-like scale, with an exactness check.

    python benchmarks/bench_ccr.py                      # w=2, γ=0.5, positional, 1,000,000 O_PH occurrences
    python benchmarks/bench_ccr.py --w 3 --similarity bag
    python benchmarks/bench_ccr.py --sweep              # positional w=1..4 and bag w=1..3

Synthetic corpus (seeded): 2,000 trajectories whose tokens follow a Zipf law (p_r ∝ r^-1.1 over 50,000 types)
with three planted very frequent types ("whitespace", "newline", "comma": 15 %, 12 %, 10 % of tokens) and
recurring phrases (half of the text is copied from a Zipf-weighted bank of 5,000 phrases), so that contexts
recur as in real text. Per-token losses are log-normal around a per-type level (pre and post correlated).
τ_pre, τ_post are set as quantiles so that |O_PH| ≈ the requested number of persistent occurrences; the
biggest token groups then hold 100k+ occurrences each (brute force would be ~10^10 pairs).

Timed: windows (Eq. 6), ρ for every O_PH occurrence (Eq. 10), R(v) sets (Eq. 11), CCR with full Freq (Eq. 12),
R_ctx (Eq. 13) — and the whole of detect_rocks. Checked: ρ equals rho_bruteforce exactly on a 2,000-occurrence
subsample, and the full-data ρ of 200 sampled occurrences (half from the largest groups) equals a direct
count against their whole group. Target: ≤ 300 s on 2 cores.
"""
import argparse
import sys
import time

import numpy as np
import pandas as pd

from rocktokens.rocks import context as C
def make_corpus(n_tokens: int, seed: int = 0, vocab: int = 50_000, n_seq: int = 2_000):
    rng = np.random.default_rng(seed)
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -1.1
    p[:3] = 0.0
    p *= 0.63 / p.sum()
    p[:3] = [0.15, 0.12, 0.10]
    cdf = np.cumsum(p)
    draw = lambda k: np.minimum(np.searchsorted(cdf, rng.random(k) * cdf[-1]), vocab - 1)  # noqa: E731
    bank_len = rng.integers(3, 13, size=5_000)
    bank = np.split(draw(int(bank_len.sum())), np.cumsum(bank_len)[:-1])
    cdf_b = np.cumsum(np.arange(1, len(bank) + 1, dtype=np.float64) ** -1.0)
    n_pieces = n_tokens // 3 + 10  # phrases average 7.5 tokens, runs 6: always more than enough
    is_phrase = rng.random(n_pieces) < 0.5
    which = np.minimum(np.searchsorted(cdf_b, rng.random(n_pieces) * cdf_b[-1]), len(bank) - 1)
    run_len = rng.integers(1, 12, size=n_pieces)
    iid = draw(int(run_len.sum()))
    iid_at = np.r_[0, np.cumsum(run_len)]
    pieces, total, i = [], 0, 0
    while total < n_tokens:  # alternate phrase copies and i.i.d. Zipf runs
        piece = bank[which[i]] if is_phrase[i] else iid[iid_at[i]:iid_at[i + 1]]
        pieces.append(piece)
        total += piece.size
        i += 1
    flat = np.concatenate(pieces)[:n_tokens].astype(np.int64)
    cuts = np.sort(rng.choice(np.arange(1, n_tokens), size=n_seq - 1, replace=False))
    seqs = {i: s for i, s in enumerate(np.split(flat, cuts))}
    seq_id = np.concatenate([np.full(s.size, i, dtype=np.int64) for i, s in seqs.items()])
    position = np.concatenate([np.arange(s.size, dtype=np.int32) for s in seqs.values()])
    level = rng.lognormal(-2.0, 1.0, size=vocab)  # per-type loss level
    base = level[flat]
    z = rng.standard_normal(flat.size)
    loss_pre = (base * 3.0 * np.exp(0.6 * z + 0.4 * rng.standard_normal(flat.size))).astype(np.float32)
    loss_post = (base * np.exp(0.6 * z + 0.4 * rng.standard_normal(flat.size))).astype(np.float32)
    return seqs, seq_id, position, flat.astype(np.int32), loss_pre, loss_post


def direct_count(win, tok, o, gamma, similarity, pad_policy):
    """ρ(o) counted directly against every other O_PH occurrence of its token (O(group))."""
    spec = C.get_similarity(similarity)
    H = spec.f_ctx(win)
    idx = np.flatnonzero(tok == tok[o])
    idx = idx[idx != o]
    if idx.size == 0:
        return 0.0
    return np.count_nonzero(spec.sim(H[o], H[idx], pad_policy) >= gamma) / idx.size


def run(args, corpus):
    seqs, seq_id, position, token_id, loss_pre, loss_post = corpus
    n = token_id.size
    q = 1.0 - np.sqrt(args.n_ph / n) if args.n_ph < n else 0.0  # two correlated conditions: start here
    for _ in range(40):  # bisection on a common quantile level so that |O_PH| ≈ n_ph
        t_pre, t_post = C.loss_thresholds(loss_pre, loss_post, q, q)
        k = int(C.persistent_high_loss(loss_pre, loss_post, t_pre, t_post).sum())
        if abs(k - args.n_ph) <= 0.002 * args.n_ph:
            break
        q += (k - args.n_ph) / n * 0.5
    in_ph = C.persistent_high_loss(loss_pre, loss_post, t_pre, t_post)
    ph = np.flatnonzero(in_ph)
    tok_ph = token_id[ph].astype(np.int64)
    sizes = np.sort(np.bincount(tok_ph))[::-1]
    print(f"[{args.similarity} w={args.w} γ={args.gamma} η={args.eta} pad={args.pad_policy}] "
          f"corpus {n:,} tokens, |O_PH| = {ph.size:,} (quantile level {q:.3f}), "
          f"{np.count_nonzero(sizes):,} token groups; largest groups {', '.join(f'{s:,}' for s in sizes[:5])} "
          f"→ brute force ≈ {float((sizes.astype(float) ** 2).sum()):.2e} pairs")

    t0 = time.perf_counter()
    win = C.context_windows(seqs, seq_id[ph], position[ph], args.w)
    t1 = time.perf_counter()
    r = C.rho(win, tok_ph, args.gamma, args.similarity, args.pad_policy)
    t2 = time.perf_counter()
    cons = C.consistent_occurrences(r, args.eta)
    d = pd.DataFrame({"token_id": token_id, "loss": loss_post})
    stats = d.groupby("token_id")["loss"].agg(freq="size", mean_loss="mean").reset_index()
    stats["R"] = stats["freq"] * stats["mean_loss"]  # what rocktokens/tokens/sql/token_stats.sql computes
    table = C.burden_table(stats, token_id)
    ids = table["token_id"].to_numpy()
    n_cons = np.bincount(np.searchsorted(ids, tok_ph[cons]), minlength=ids.size)
    ccr = C.ccr(n_cons, table["Freq"].to_numpy())
    rctx = C.r_ctx(table["R"].to_numpy(), ccr)
    t3 = time.perf_counter()
    total = t3 - t0
    print(f"  windows {t1 - t0:6.2f} s | rho {t2 - t1:7.2f} s | R(v), CCR, R_ctx {t3 - t2:5.2f} s | "
          f"total {total:7.2f} s  (target ≤ 300 s: {'OK' if total <= 300 else 'MISSED'})")
    print(f"  mean ρ {r.mean():.4f}; |∪R(v)| = {int(cons.sum()):,}; tokens with CCR > 0: "
          f"{int((ccr > 0).sum()):,}; max R_ctx {rctx.max():.1f}")

    rng = np.random.default_rng(args.seed + 1)
    sub = np.sort(rng.choice(ph.size, size=min(2_000, ph.size), replace=False))
    tb = time.perf_counter()
    fast = C.rho(win[sub], tok_ph[sub], args.gamma, args.similarity, args.pad_policy)
    slow = C.rho_bruteforce(win[sub], tok_ph[sub], args.gamma, args.similarity, args.pad_policy)
    ok_sub = np.array_equal(fast, slow)
    print(f"  check 1: 2,000-occurrence subsample, fast == brute force: {ok_sub} "
          f"(max |Δ| {np.abs(fast - slow).max():.3g}; mean ρ {slow.mean():.4f}; {time.perf_counter() - tb:.1f} s)")

    big = np.flatnonzero(np.isin(tok_ph, np.argsort(np.bincount(tok_ph))[::-1][:3]))
    picks = np.r_[rng.choice(big, size=100, replace=False), rng.choice(ph.size, size=100, replace=False)]
    tb = time.perf_counter()
    direct = np.array([direct_count(win, tok_ph, o, args.gamma, args.similarity, args.pad_policy) for o in picks])
    ok_full = np.array_equal(direct, r[picks])
    print(f"  check 2: 200 occurrences of the full run vs a direct count over their whole group: {ok_full} "
          f"(mean ρ {direct.mean():.4f}; {time.perf_counter() - tb:.1f} s)")

    if args.detect:
        td = time.perf_counter()
        det = C.detect_rocks(seq_id, position, token_id, loss_pre, loss_post, stats, seqs,
                             tau_mode="absolute", tau_pre=t_pre, tau_post=t_post, w=args.w,
                             gamma=args.gamma, eta=args.eta, similarity=args.similarity,
                             pad_policy=args.pad_policy)
        print(f"  detect_rocks end to end ({n:,} occurrences): {time.perf_counter() - td:.2f} s, "
              f"{det.params['n_rock_tokens']} rock tokens of {int(det.tokens['candidate'].sum())} candidates")
        assert np.array_equal(det.occurrences["rho"].to_numpy()[ph], r)
    return ok_sub and ok_full


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-ph", type=int, default=1_000_000, help="persistent occurrences wanted")
    ap.add_argument("--n-tokens", type=int, default=None, help="corpus size (default 1.6 × n-ph)")
    ap.add_argument("--w", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--eta", type=float, default=0.1)
    ap.add_argument("--similarity", default="positional", choices=sorted(C.SIMILARITIES))
    ap.add_argument("--pad-policy", default="never", choices=C.PAD_POLICIES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-detect", dest="detect", action="store_false", help="skip the end-to-end run")
    ap.add_argument("--sweep", action="store_true", help="positional w=1..4 and bag w=1..3")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    corpus = make_corpus(args.n_tokens or int(1.6 * args.n_ph), args.seed)
    print(f"corpus built in {time.perf_counter() - t:.1f} s")
    configs = ([("positional", w) for w in (1, 2, 3, 4)] + [("bag", w) for w in (1, 2, 3)]
               if args.sweep else [(args.similarity, args.w)])
    ok = True
    for sim, w in configs:
        ok &= run(argparse.Namespace(**{**vars(args), "similarity": sim, "w": w,
                                        "detect": args.detect and not args.sweep}), corpus)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
