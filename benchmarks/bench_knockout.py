"""Knockout generation: one batch carrying a different banned-id mask per sequence vs one candidate at a time.

    python benchmarks/bench_knockout.py                       # 32 candidates x 8 problems x 2 samples, T=1, 64 tokens
    python benchmarks/bench_knockout.py --candidates 32 --problems 16
    python benchmarks/bench_knockout.py --model results/default/checkpoints/opd-4   # a real checkpoint (HF dir)

Both strategies run the same (candidate × problem × sample) requests — same prompts, same per-request seeds, each
candidate's banned id — through the same HF backend (``rocktokens.generation``) with one torch thread, as a rule
job does:

* **batched**: every candidate's requests in ONE ``generate`` call (``rocktokens.knockout.experiment.build_requests``: the
  backend batches ``--batch-size`` rows, each row with its own −inf mask);
* **one at a time**: one ``generate`` call per candidate (its problems × samples), the way a per-candidate knockout
  loop runs.

Each strategy runs ``--repeats`` times, alternating, and its fastest run counts (the CPU is shared). Printed:
completions per minute of each and their ratio (target ≥ 3x on CPU), and how many sequences the two
strategies produced identically (per-request seeds make a row independent of its batch mates, up to the CPU
forward pass's ~1e-7 batch noise). The default model is a freshly initialised tiny Qwen3 of the embedded student's
shape (hidden 96, 3 layers); untrained, it never stops early, so every completion has ``--max-new-tokens`` tokens.
"""
import argparse
import sys
import time

import torch


def tiny_model(vocab: int, seed: int = 0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=24, intermediate_size=288, max_position_embeddings=512)
    return Qwen3ForCausalLM(cfg).eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--model", default=None, help="HF checkpoint dir (default: a tiny random Qwen3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each strategy; the fastest counts")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import numpy as np

    from rocktokens.generation import SamplingParams
    from rocktokens.generation.hf import HFBackend
    from rocktokens.knockout.experiment import arm_key, build_requests

    model = tiny_model(args.vocab, args.seed) if args.model is None else None
    be = HFBackend(args.model, model=model, stop_ids=[], batch_size=args.batch_size, pad_id=0, progress=False)
    rng = np.random.default_rng(args.seed)
    V = be.vocab_size
    prompts = {"bench": [rng.integers(1, V, int(rng.integers(12, 40))).tolist() for _ in range(args.problems)]}
    pids = {"bench": [f"p{i}" for i in range(args.problems)]}
    cands = rng.choice(np.arange(1, V), args.candidates, replace=False)
    arms = [arm_key([int(v)]) for v in cands]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    n = args.candidates * args.problems * args.samples
    print(f"{args.candidates} candidates x {args.problems} problems x {args.samples} samples = {n} completions of "
          f"{args.max_new_tokens} tokens; batch {args.batch_size}; vocab {V}; {args.threads} thread(s)", flush=True)

    be.generate(build_requests(prompts, pids, arms[:1], 1, args.seed)[0][:4], params)  # warm-up

    reqs, keys = build_requests(prompts, pids, arms, args.samples, args.seed)
    per_arm = {arm: build_requests(prompts, pids, [arm], args.samples, args.seed) for arm in arms}
    t_batched = t_single = float("inf")
    for _ in range(args.repeats):  # alternate the two; keep each one's fastest run (the CPU is shared)
        t0 = time.perf_counter()
        batched = be.generate(reqs, params)
        t_batched = min(t_batched, time.perf_counter() - t0)
        t0 = time.perf_counter()
        single = {}
        for r1, k1 in per_arm.values():
            single.update(zip(k1, be.generate(r1, params)))
        t_single = min(t_single, time.perf_counter() - t0)

    same = sum(single[k].token_ids == r.token_ids for k, r in zip(keys, batched))
    leaked = sum(int(k[0]) in r.token_ids for k, r in zip(keys, batched))
    rate_b, rate_s = 60 * n / t_batched, 60 * n / t_single
    print(f"batched (one mask per sequence): {t_batched:7.1f} s  {rate_b:9.0f} completions/min")
    print(f"one candidate at a time:         {t_single:7.1f} s  {rate_s:9.0f} completions/min")
    print(f"ratio batched / one-at-a-time: {rate_b / rate_s:.2f}x (target >= 3x)")
    print(f"identical sequences across the two strategies: {same}/{n}; banned ids generated: {leaked}")
    return 0 if leaked == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
