"""Teacher-forced per-token scoring (rocktokens.tokens.kl): throughput and peak memory against two baselines.

    python benchmarks/bench_scoring.py                      # T = 2048, memory series 512/1024/2048 (~3-4 min)
    python benchmarks/bench_scoring.py --T 1024 --repeats 3 --chunk 64 --mem-T 256 512 1024

Models carry the full Qwen3 output layer (V = 151,936) on tiny random bodies (student: dense, hidden 64,
2 layers; teacher: dense, hidden 96, 2 layers; tied embeddings), one sequence of T tokens (prompt 64 +
response T − 64), torch.set_num_threads(1). Every measurement runs in its own subprocess so that its peak
RSS (getrusage(RUSAGE_SELF).ru_maxrss) is its own:

  load     a process that builds the models and the sequence and does nothing else (the memory baseline)
  ours     rocktokens.tokens.kl.score_sequences(student, teacher, [seq], chunk=C, vocab_block=B) — eager, streamed over
           vocabulary blocks (--chunk-ours, --vocab-block)
  ours+c   the same with compiled=True (torch.compile of the per-chunk reductions; compile time excluded
           by a warm-up call, its memory included); its own chunk (--chunk-compiled)
  (b)      two bare forward passes that materialise full logits: student(ids).logits, teacher(ids).logits
  (c)      "the authors' approach": full [T, V] logits of both models materialised, then the same columns
           computed chunk by chunk (--chunk, as ours) over the response positions (same formulas, eager)

Peak memory is reported *net of the load-only baseline* (peak RSS of the run − peak RSS of a process that
only loaded the models and built the sequence, same T). Time is the minimum over --repeats timed calls after
one warm-up call in the same process. Throughput ratio ours/(b) = time(b) / time(ours) on the same sequence.
``--device cuda`` (make gpu-check) runs every child on the GPU: peak memory is then the GPU's peak allocated memory
(torch.cuda.max_memory_allocated), net of the load-only child's, and timings synchronise the device.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

V = 151_936
PROMPT = 64


def _models():
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    def build(hidden, seed):
        torch.manual_seed(seed)
        cfg = Qwen3Config(vocab_size=V, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=32, intermediate_size=2 * hidden,
                          max_position_embeddings=32_768, tie_word_embeddings=True)
        return Qwen3ForCausalLM(cfg).eval()

    return build(64, 1), build(96, 2)


def _child(mode: str, T: int, chunk: int, repeats: int, vocab_block: int = 4096, device: str = "cpu") -> dict:
    import gc

    import torch

    torch.set_num_threads(1)
    from rocktokens.tokens.kl import columns_from_logits, score_sequences
    from rocktokens.core.sequences import TokenSequence

    cuda = device.startswith("cuda")
    student, teacher = (m.to(device) for m in _models())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 151_643, (T,), generator=g)
    seq = TokenSequence(ids=ids.tolist(), prompt_len=PROMPT)
    ids = ids.to(device)
    gc.collect()

    def peak_mb():  # on a GPU: peak allocated device memory (the load-only child gives the models' own)
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def sync():
        if cuda:
            torch.cuda.synchronize()
    out = {"mode": mode, "T": T, "chunk": chunk}

    def ours(compiled):
        cols = score_sequences(student, teacher, [seq], chunk=chunk, batch_size=1, progress=False, compiled=compiled,
                               vocab_block=vocab_block)
        return float(cols["rkl"].astype("float64").sum())

    def bare():
        with torch.inference_mode():
            zs = student(input_ids=ids[None], use_cache=False).logits
            zt = teacher(input_ids=ids[None], use_cache=False).logits
            del zs, zt
        return None

    def authors():
        with torch.inference_mode():
            zs = student(input_ids=ids[None], use_cache=False).logits[0]
            zt = teacher(input_ids=ids[None], use_cache=False).logits[0]
            labels = ids[PROMPT:]
            total = 0.0
            for s in range(PROMPT - 1, T - 1, chunk):
                e = min(s + chunk, T - 1)
                vals = columns_from_logits(zs[s:e].float(), zt[s:e].float(), labels[s - PROMPT + 1 : e - PROMPT + 1])
                total += float(vals[3].double().sum())
            return total

    fns = {"ours": lambda: ours(False), "ours+c": lambda: ours(True), "b": bare, "c": authors}
    if mode == "race":  # (b) and ours alternately in one process: the same machine state for both
        race = {"b": fns["b"], "ours": fns["ours"]}
        for f in race.values():
            f()
        times = {k: [] for k in race}
        for _ in range(repeats):
            for k, f in race.items():
                sync()
                t0 = time.perf_counter()
                f()
                sync()
                times[k].append(time.perf_counter() - t0)
        out["race"] = {k: min(v) for k, v in times.items()}
        out["race_times"] = times
        out["peak_rss_mb"] = peak_mb()
        return out
    fn = None if mode == "load" else fns[mode]
    if fn is not None:
        t0 = time.perf_counter()
        out["checksum_rkl"] = fn()  # warm-up (compiles for ours+c)
        out["warmup_s"] = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        if times:
            out["time_s"] = min(times)
            out["times_s"] = times
    out["peak_rss_mb"] = peak_mb()
    return out


DEVICE = "cpu"  # set by --device; every child runs there


def _run(mode, T, chunk, repeats, vocab_block=4096):
    cmd = [sys.executable, __file__, "--child", mode, "--T", str(T), "--chunk", str(chunk), "--repeats", str(repeats),
           "--vocab-block", str(vocab_block), "--device", DEVICE]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{mode} T={T} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    if mode == "race":
        print(f"  ran race   T={T:<5} interleaved min times: " + ", ".join(f"{k} {v:.2f} s" for k, v in res["race"].items()),
              flush=True)
        return res
    print(f"  ran {mode:<6} T={T:<5} peak {res['peak_rss_mb']:8.1f} MB"
          + (f"  time {res['time_s']:6.2f} s (warm-up {res['warmup_s']:.1f} s)" if "time_s" in res else ""),
          flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=2048, help="sequence length of the main comparison")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per measurement (min is reported)")
    ap.add_argument("--chunk", type=int, default=16, help="positions per KL chunk of the authors' approach (c)")
    ap.add_argument("--chunk-ours", type=int, default=128, help="positions per chunk of ours (eager, streamed)")
    ap.add_argument("--vocab-block", type=int, default=4096, help="vocabulary columns per streamed block (ours)")
    ap.add_argument("--chunk-compiled", type=int, default=64, help="chunk of the compiled variant")
    ap.add_argument("--mem-T", type=int, nargs="*", default=[512, 1024, 2048], help="T values of the memory series")
    ap.add_argument("--no-compiled", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: times on the GPU, memory = peak allocated on it")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_child(a.child, a.T, a.chunk, a.repeats, a.vocab_block, a.device)))
        return
    global DEVICE
    DEVICE = a.device
    if a.T <= PROMPT + 1:
        ap.error(f"--T must exceed the prompt length {PROMPT}")

    print(f"V={V}, prompt {PROMPT}, chunk ours {a.chunk_ours} x vocab block {a.vocab_block} (compiled: "
          f"{a.chunk_compiled}; authors' KL chunk {a.chunk}), 1 thread, "
          f"repeats {a.repeats}; one subprocess per line")
    Ts = sorted(set(a.mem_T) | {a.T})
    base = {T: _run("load", T, a.chunk, 0)["peak_rss_mb"] for T in Ts}
    main_modes = ["b", "ours"] + ([] if a.no_compiled else ["ours+c"]) + ["c"]
    chunk_of = {"ours+c": a.chunk_compiled, "ours": a.chunk_ours}.get
    res = {m: _run(m, a.T, chunk_of(m, a.chunk), a.repeats, a.vocab_block) for m in main_modes}
    series = [m for m in ("ours", "ours+c", "c") if m in main_modes]
    mem = {}
    for T in Ts:
        for m in series:
            mem[(m, T)] = res[m] if T == a.T else _run(m, T, chunk_of(m, a.chunk), 1, a.vocab_block)
    net = lambda r: r["peak_rss_mb"] - base[r["T"]]  # noqa: E731

    n_tok = a.T - PROMPT
    print()
    print(f"T = {a.T} ({n_tok} scored tokens); memory is peak RSS minus that of a load-only process")
    print(f"{'run':<44} {'time s':>8} {'tok/s':>8} {'net peak MB':>12}")
    names = {"b": "(b) two bare forwards, full logits",
             "ours": f"(a) ours: chunk {a.chunk_ours}, vocab block {a.vocab_block}",
             "ours+c": f"(a') ours, compiled=True, chunk {a.chunk_compiled}",
             "c": f"(c) authors: full logits + KL by chunk {a.chunk}"}
    for m in main_modes:
        r = res[m]
        print(f"{names[m]:<44} {r['time_s']:8.2f} {n_tok / r['time_s']:8.0f} {net(r):12.1f}")
    print(f"{'load-only baseline (subtracted)':<44} {'':>8} {'':>8} {base[a.T]:12.1f}  (absolute)")
    print()
    tb = res["b"]["time_s"]
    race = _run("race", a.T, a.chunk_ours, max(3, a.repeats), a.vocab_block)["race"]
    print(f"throughput ours/(b)            eager    {race['b'] / race['ours']:5.2f}x   (target >= 1.0x; interleaved "
          f"in one process, min of {max(3, a.repeats)}: (b) {race['b']:.2f} s, ours {race['ours']:.2f} s)")
    print(f"throughput ours/(b)  separate  eager    {tb / res['ours']['time_s']:5.2f}x   (the runs above)")
    if "ours+c" in res:
        print(f"throughput ours/(b)            compiled {tb / res['ours+c']['time_s']:5.2f}x")
    print(f"throughput ours/(c)            eager    {res['c']['time_s'] / res['ours']['time_s']:5.2f}x")
    def mem_ratio(r):  # RSS resolution: a net peak under 1 MB is reported as "< 1 MB", the ratio as a lower bound
        n = net(r)
        return (">=" if n < 1.0 else "  ") + f"{net(res['c']) / max(n, 1.0):7.1f}x"

    print(f"peak memory (c)/ours           eager  {mem_ratio(res['ours'])}   (target >= 8x; ours net "
          f"{net(res['ours']):.1f} MB, below 1 MB counts as 1 MB)")
    if "ours+c" in res:
        print(f"peak memory (c)/ours           compiled {mem_ratio(res['ours+c'])}")
    rel = abs(res["ours"]["checksum_rkl"] - res["c"]["checksum_rkl"]) / abs(res["c"]["checksum_rkl"])
    print(f"sum of rkl, ours vs (c): {res['ours']['checksum_rkl']:.6f} vs {res['c']['checksum_rkl']:.6f} (rel diff {rel:.1e})")
    print()
    print("net peak memory (MB) vs T:  " + "  ".join(f"T={T}" for T in Ts))
    for m, label in (("ours", "ours (eager)"), ("ours+c", "ours compiled"), ("c", "(c) authors")):
        if m not in series:
            continue
        print(f"  {label:<14} " + "  ".join(f"{net(mem[(m, T)]):>{len(f'T={T}')}.1f}" for T in Ts))


if __name__ == "__main__":
    main()
