"""Rock-freeze speed-up that is real: optimizer-update time of frozen arms against the baseline, side by side.

    python benchmarks/bench_freeze.py                  # embedded size + large CPU size (~3-4 min on one core)
    python benchmarks/bench_freeze.py --sizes embedded --repeats 7

What is timed: ``Trainer.update`` (the whole optimizer update: student and teacher forwards, the chunked head +
reverse KL, backward, clipping, AdamW step) on one fixed global batch of rollout-shaped sequences, for arms that
differ only in their per-token weights: baseline (λ=1: nothing skipped) and λ=0 at masked shares s. Positions of
weight 0 skip the output-layer projection and the full-vocabulary KL of *both* models
(``rocktokens.core.losses.chunked_loss_and_grads``); the transformer bodies still run on every position (later tokens
attend to frozen ones). One trainer serves every arm (lr 0: the parameters stay fixed, so every update does the
same work); arms are interleaved, each repeat runs them in a new random order, and the minimum over
repeats is reported (the least-disturbed run on a shared machine; one warm-up update per arm first), torch on one
thread.

Printed per size: the median update seconds per arm, the measured speed-up (baseline / arm), the prediction
1 / (1 − s·f) from f = the share of the baseline update taken by the skippable parts (head + KL of both models,
measured as 1 − t(s=1)/t(baseline): everything skipped), the limit 1 / (1 − f) (every position frozen), and
the paper's claim (1.4–1.7× wall-clock) beside them; then f estimated from FLOPs at paper scale (Qwen3-4B student,
Qwen3-30B-A3B teacher, V = 151,936). Sizes:

  embedded  the embedded default's models (config.yaml: student hidden 96 × 3 layers, MoE teacher hidden 128 × 4
            layers) over the compact vocabulary (704 rows), global batch 32 of ~40-token prompts + 96-token responses
  large     the same bodies, 4 layers, hidden 128, over the full Qwen3 vocabulary (151,936 rows), global batch 8 of
            40-token prompts + 120-token responses — the head and KL dominate, as they grow with V
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAPER_CLAIM = (1.4, 1.7)

SIZES = {
    "embedded": {
        "vocab": 704, "batch": 32, "prompt": 40, "response": 96, "chunk": 2048,  # config stage2.loss_chunk
        "student": {"type": "qwen3", "hidden_size": 96, "num_layers": 3, "num_heads": 4, "num_kv_heads": 2,
                    "head_dim": 24, "intermediate_size": 288, "max_position_embeddings": 512},
        "teacher": {"type": "qwen3_moe", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
                    "head_dim": 32, "intermediate_size": 384, "num_experts": 4, "num_experts_per_tok": 2,
                    "moe_intermediate_size": 192, "max_position_embeddings": 512},
    },
    "large": {
        "vocab": 151_936, "batch": 8, "prompt": 40, "response": 120, "chunk": 512,  # [512, V] fp32 logits: 311 MB
        "student": {"type": "qwen3", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
                    "head_dim": 32, "intermediate_size": 384, "max_position_embeddings": 512},
        "teacher": {"type": "qwen3_moe", "hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2,
                    "head_dim": 32, "intermediate_size": 384, "num_experts": 4, "num_experts_per_tok": 2,
                    "moe_intermediate_size": 192, "max_position_embeddings": 512},
    },
}


class _Tok:
    """The two attributes the trainer reads from a tokenizer."""

    pad_token_id = 0

    def convert_tokens_to_ids(self, _):
        return 1


def _models(size: dict):
    from rocktokens.models import build_toy_model

    tok = _Tok()
    return build_toy_model(size["student"], size["vocab"], tok, seed=1), build_toy_model(size["teacher"], size["vocab"],
                                                                                         tok, seed=2), tok


def _batch(size: dict, share: float, seed: int):
    """Rollout-shaped sequences; a share ``share`` of the response tokens frozen in runs of 5 (a W(v) window)."""
    from rocktokens.freeze.arms import place_runs
    from rocktokens.core.sequences import TokenSequence

    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(size["batch"]):
        n = size["response"]
        ids = rng.integers(2, size["vocab"], size["prompt"] + n).tolist()
        s = TokenSequence(ids=ids, prompt_len=size["prompt"])
        target = int(round(share * n))
        if target:
            k = max(1, math.ceil(target / 5))
            lengths = [5] * (k - 1) + [target - 5 * (k - 1)]
            while sum(lengths) + len(lengths) - 1 > n:  # too dense for separated runs: merge into fewer
                lengths = [sum(lengths[:2])] + lengths[2:]
            m = np.zeros(n, dtype=bool)
            for st, ln in zip(place_runs(lengths, n, rng), lengths):
                m[st: st + ln] = True
            s.weights = np.where(m, 0.0, 1.0).tolist()
        seqs.append(s)
    return seqs


def run_size(name: str, shares: list[float], repeats: int) -> dict:
    import torch

    from rocktokens.core.losses import LossSpec
    from rocktokens.training.trainer import OptimConfig, Trainer

    torch.set_num_threads(1)
    size = SIZES[name]
    student, teacher, tok = _models(size)
    arms = {"baseline": 0.0, **{f"s={s:.2f}": s for s in shares}, "s=1.00": 1.0}
    batches = {a: _batch(size, s, 0) for a, s in arms.items()}
    n_pos = size["batch"] * size["response"]
    # one trainer for every arm (same parameters, allocator and caches; lr 0 keeps the weights fixed, so each
    # update does the same work as the first): the arms differ only in their batches' weights
    trainer = Trainer(student, tok, LossSpec("rkl", 1.0, chunk=size["chunk"]),
                      OptimConfig(lr=0.0, global_batch=size["batch"], micro_batch=size["batch"], warmup_ratio=0.0,
                                  schedule="constant"), 10**6, "/nonexistent", teacher=teacher,
                      max_len=size["prompt"] + size["response"])
    for a in arms:  # warm-up
        trainer.update(batches[a])
    times = {a: [] for a in arms}
    rng = np.random.default_rng(1)
    for _ in range(repeats):
        for i in rng.permutation(len(arms)):
            a = list(arms)[i]
            t0 = time.perf_counter()
            trainer.update(batches[a])
            times[a].append(time.perf_counter() - t0)
    med = {a: min(t) for a, t in times.items()}
    f = 1.0 - med["s=1.00"] / med["baseline"]
    real_share = {a: sum(sum(w == 0 for w in (s.weights or [])) for s in batches[a]) / n_pos for a in arms}
    print(f"\n== {name}: V={size['vocab']:,}, {size['batch']} sequences x {size['response']} response tokens "
          f"({n_pos:,} scored positions), best of {repeats} interleaved updates")
    print(f"   skippable share of the baseline update f = 1 - t(all frozen)/t(baseline) = {f:.3f}"
          f"  ->  limit 1/(1-f) = {1 / max(1e-9, 1 - f):.2f}x   (paper: {PAPER_CLAIM[0]}-{PAPER_CLAIM[1]}x)")
    print(f"   {'arm':<10} {'masked':>7} {'update s':>9} {'speed-up':>9} {'1/(1-s f)':>10}")
    rows = []
    for a in arms:
        s = real_share[a]
        pred = 1.0 / (1.0 - s * f)
        sp = med["baseline"] / med[a]
        print(f"   {a:<10} {s:>7.3f} {med[a]:>9.3f} {sp:>8.2f}x {pred:>9.2f}x")
        rows.append({"size": name, "arm": a, "masked_share": s, "update_s": med[a], "speedup": sp, "predicted": pred})
    return {"f": f, "rows": rows}


def paper_scale_f(response_len: int = 4000, prompt_len: int = 300) -> float:
    """FLOP share of the skippable parts in one OPD update at paper scale (estimate from the public configs).

    Student Qwen3-4B (36 layers, hidden 2560, 32 q / 8 kv heads of 128, MLP 9728, tied 151,936 × 2560 head):
    forward + backward ≈ 3 × forward. Teacher Qwen3-30B-A3B (48 layers, hidden 2048, 32 q / 4 kv heads of 128,
    8 of 128 experts of 768 active, untied head 151,936 × 2048): forward only. Per token: 2 FLOPs per active
    weight, plus attention 4 · layers · context · (q heads · head dim) with the mean context of the sequence;
    the KL's elementwise work (~10 FLOPs per vocabulary entry per model) counts as skippable.
    """
    V = 151_936
    ctx = prompt_len + response_len / 2
    s_layer = 2560 * 4096 + 2 * 2560 * 1024 + 4096 * 2560 + 3 * 2560 * 9728
    t_layer = 2048 * 4096 + 2 * 2048 * 512 + 4096 * 2048 + 8 * 3 * 2048 * 768 + 2048 * 128
    s_body = 3 * (2 * 36 * s_layer + 4 * 36 * ctx * 4096)
    t_body = 2 * 48 * t_layer + 4 * 48 * ctx * 4096
    head = 3 * 2 * V * 2560 + 2 * V * 2048 + 2 * 10 * V
    return head / (head + s_body + t_body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["embedded", "large"], choices=sorted(SIZES))
    ap.add_argument("--shares", nargs="+", type=float, default=[0.18, 0.30, 0.95],
                    help="masked shares of the λ=0 arms (paper ≈0.18 and 0.30; the embedded run freezes ≈0.95)")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    out = {n: run_size(n, a.shares, a.repeats) for n in a.sizes}
    f_p = paper_scale_f()
    print(f"\n== paper scale (FLOP estimate, 4,000-token responses): f = {f_p:.3f}; predicted update speed-up "
          + ", ".join(f"s={s:.2f}: {1 / (1 - s * f_p):.3f}x" for s in (0.18, 0.30))
          + f"; limit {1 / (1 - f_p):.2f}x — against the paper's {PAPER_CLAIM[0]}-{PAPER_CLAIM[1]}x of wall-clock "
          "(which also includes rollout generation, not shortened by freezing)")
    return out


if __name__ == "__main__":
    main()
