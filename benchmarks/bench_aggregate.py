"""DuckDB vs pandas on the token-table aggregation (Freq, ℓ̄, R, coverage), side by side in one run.

    python benchmarks/bench_aggregate.py                 # 50M rows (the default)
    python benchmarks/bench_aggregate.py --rows 2000000  # a quick run

Synthetic token table: ``--rows`` rows of one scorer (hive dir ``scorer=final/``), 5,000 token types with a
Zipf-Mandelbrot frequency law, float32 losses whose per-type mean is log-normal, all 16 columns of the real
table, ~1,000-token sequences, written in row groups of 1M rows with a fixed seed and cached under
``benchmarks/out/`` (git-ignored). On this 2-core machine the default run takes ~1 min the first time
(30-50 s of it generating 1.7 GB of parquet) and ~30 s afterwards.

Every measurement is a fresh subprocess with the same thread count (``--threads``, default 2); the three run
interleaved ``--repeat`` times (median time, highest peak RSS), so load from other jobs hits them alike:
  (a) DuckDB through ``rocktokens.tokens.aggregate.Aggregator`` (token_stats(extras=False) + coverage: one scan);
  (b) pandas: pyarrow reads the two needed columns (token_id, rkl), pandas groupby / sort / cumsum;
  (c) (a) under a DuckDB memory_limit smaller than the data (both the parquet on disk and the in-memory size
      of the columns read are printed), checked to give the same result as (a).
Time: inside the worker (compute, from opening the input to the result) and around it (the whole process,
imports included). Memory: the worker's peak RSS (VmHWM), and that peak minus the peak right after imports
("working" memory; both workers import pandas + pyarrow, ~110 MiB). Targets: pandas/DuckDB time >= 3x,
peak RSS >= 10x.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
SCORER = "final"
LOSS = "rkl"
N_TYPES = 5000
ROW_GROUP = 1_000_000
FILE_ROWS = 5_000_000


# ----------------------------------------------------------------------------- data
def generate(root: Path, rows: int, seed: int) -> None:
    """Write the synthetic token table to ``root/scorer=final/part-*.parquet`` (atomically, as a directory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rocktokens.core.io import atomic_dir

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, N_TYPES + 1)
    p = 1.0 / (ranks + 2.7) ** 1.07                      # Zipf-Mandelbrot over frequency ranks
    p /= p.sum()
    perm = rng.permutation(N_TYPES).astype(np.int32)    # token_id of the r-th most frequent type
    mu = rng.lognormal(-2.0, 1.0, N_TYPES).astype(np.float64)  # per-type mean rkl (heavy tail)
    qwen3 = rng.choice(151_643, N_TYPES, replace=False).astype(np.int32)
    vocab = pa.array([f"tok{i}" for i in range(N_TYPES)])
    lengths = np.clip(rng.lognormal(6.7, 0.6, rows // 200 + 100), 16, 8000).astype(np.int64)  # ~1,000 tokens
    ends = np.cumsum(lengths)
    lengths = lengths[: np.searchsorted(ends, rows) + 1]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    n_seq = len(lengths)
    problems = pa.array([f"p{i:06d}" for i in range((n_seq + 3) // 4)])

    with atomic_dir(root) as tmp:
        part = tmp / f"scorer={SCORER}"
        part.mkdir()
        for k, a in enumerate(range(0, rows, FILE_ROWS)):
            b = min(rows, a + FILE_ROWS)
            n = b - a
            row = np.arange(a, b, dtype=np.int64)
            seq = np.searchsorted(starts, row, side="right") - 1
            rank = rng.choice(N_TYPES, n, p=p)
            tid = perm[rank]
            rkl = (mu[tid] * rng.exponential(1.0, n)).astype(np.float32)
            fkl = (rkl * rng.lognormal(0.0, 0.3, n)).astype(np.float32)
            log_ratio = (0.5 * mu[tid] + rng.normal(0.0, 0.5, n)).astype(np.float32)
            logp_s = (-rng.exponential(0.3, n)).astype(np.float32)
            table = pa.table({
                "traj_ckpt": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array(["opd-final"])),
                "benchmark": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array(["math500"])),
                "problem_id": pa.DictionaryArray.from_arrays((seq // 4).astype(np.int32), problems),
                "sample": (seq % 4).astype(np.int32),
                "position": (row - starts[seq]).astype(np.int32),
                "token_id": tid,
                "qwen3_id": qwen3[tid],
                "token": pa.DictionaryArray.from_arrays(tid, vocab),
                "logp_student": logp_s,
                "logp_teacher": (logp_s - log_ratio).astype(np.float32),
                "log_ratio": log_ratio,
                "rkl": rkl,
                "fkl": fkl,
                "entropy_student": rng.gamma(1.5, 0.4, n).astype(np.float32),
                "entropy_teacher": rng.gamma(1.5, 0.35, n).astype(np.float32),
            })
            pq.write_table(table, part / f"part-{k:03d}.parquet", row_group_size=ROW_GROUP, compression="zstd")
            print(f"  wrote part {k}: rows {a:,}-{b:,}", file=sys.stderr, flush=True)


def dataset(rows: int, seed: int) -> Path:
    root = OUT / f"tokens_{rows}_s{seed}"
    if not (root / f"scorer={SCORER}").is_dir():
        print(f"generating {rows:,} rows -> {root}", flush=True)
        t = time.perf_counter()
        generate(root, rows, seed)
        print(f"generated in {time.perf_counter() - t:.1f} s", flush=True)
    return root


def dir_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.parquet"))


# ----------------------------------------------------------------------------- workers (one per subprocess)
def worker_duckdb(data: Path, threads: int, memory_limit: str | None, temp_dir: str | None) -> dict:
    from rocktokens.tokens.aggregate import Aggregator

    base = peak_rss_bytes()                         # interpreter + duckdb + pandas (+ pyarrow) imported
    t = time.perf_counter()
    with Aggregator(data, threads=threads, memory_limit=memory_limit, temp_directory=temp_dir) as agg:
        stats = agg.token_stats(SCORER, LOSS, extras=False)   # rank, Freq, mean loss, R
        cov = agg.coverage(SCORER, LOSS)                        # from the cached stats: one scan in all
    dt = time.perf_counter() - t
    return {"seconds": dt, "base_rss_bytes": base, "token_id": stats.token_id.tolist(),
            "freq": stats.freq.tolist(), "R": stats.R.tolist(), "coverage": cov.coverage.tolist()}


def worker_pandas(data: Path, threads: int) -> dict:
    import importlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    importlib.import_module("pandas")               # imported before the baseline, as in the DuckDB worker
    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)
    base = peak_rss_bytes()
    t = time.perf_counter()
    table = pq.read_table(data, columns=["token_id", LOSS], filters=[("scorer", "=", SCORER)])
    df = table.to_pandas()
    del table
    g = df.groupby("token_id", sort=False)[LOSS].agg(["count", "sum"])
    g.columns = ["freq", "R"]                       # R(v) = Σ ℓ_t = ℓ̄_v·Freq(v)
    g["mean_loss"] = g["R"] / g["freq"]
    g = g.reset_index().sort_values(["R", "token_id"], ascending=[False, True], kind="mergesort")
    coverage = g["R"].cumsum() / g["R"].sum()
    dt = time.perf_counter() - t
    return {"seconds": dt, "base_rss_bytes": base, "token_id": g.token_id.tolist(), "freq": g.freq.tolist(),
            "R": g.R.astype(float).tolist(), "coverage": coverage.astype(float).tolist()}


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that across fork + exec, so a worker
    would report its parent's peak when that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_worker(args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    with tempfile.NamedTemporaryFile(suffix=".json", dir=OUT, delete=False) as f:
        result_path = f.name
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", *args, "--result", result_path],
                              env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"worker {args} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(Path(result_path).read_text())
    finally:
        os.unlink(result_path)
    res["process_seconds"] = wall
    return res


def compare(a: dict, b: dict, rtol: float) -> str:
    """'same' or what differs: freq exactly, R and coverage to ``rtol``, the top-100 ranking exactly."""
    import numpy as np

    fa = dict(zip(a["token_id"], a["freq"]))
    fb = dict(zip(b["token_id"], b["freq"]))
    if fa != fb:
        return "Freq differs"
    ra = dict(zip(a["token_id"], a["R"]))
    rb = np.array([ra[t] for t in b["token_id"]])
    if not np.allclose(rb, b["R"], rtol=rtol, atol=0):
        return f"R differs (max rel {np.max(np.abs(rb - b['R']) / np.abs(rb)):.2e})"
    if not np.allclose(a["coverage"], b["coverage"], rtol=0, atol=rtol):
        return "coverage differs"
    if a["token_id"][:100] != b["token_id"][:100]:
        return "top-100 ranking differs"
    return "same"


def summarize(runs: list[dict]) -> dict:
    """Several runs of one worker: median compute / process seconds, highest peak RSS, first result."""
    import statistics

    out = dict(runs[0])
    for k in ("seconds", "process_seconds"):
        out[k] = statistics.median(r[k] for r in runs)
        out[k + "_all"] = [round(r[k], 2) for r in runs]
    for k in ("max_rss_bytes", "base_rss_bytes"):
        out[k] = max(r[k] for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement (median time, max RSS)")
    ap.add_argument("--memory-limit", default=None,
                    help="DuckDB memory_limit for (c); default: a quarter of the columns read, within 32-100 MB")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        kind, data, threads, *rest = args.worker
        if kind == "duckdb":
            mem = rest[0] if rest and rest[0] != "-" else None
            res = worker_duckdb(Path(data), int(threads), mem, rest[1] if len(rest) > 1 else None)
        else:
            res = worker_pandas(Path(data), int(threads))
        res["max_rss_bytes"] = peak_rss_bytes()
        Path(args.result).write_text(json.dumps(res))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    data = dataset(args.rows, args.seed)
    on_disk = dir_bytes(data)
    columns_in_memory = args.rows * (4 + 4)         # token_id int32 + rkl float32, the columns read
    limit_mb = max(32, min(100, columns_in_memory // 4 // 2**20))
    limit = args.memory_limit or f"{limit_mb}MB"
    th = str(args.threads)
    print(f"data: {args.rows:,} rows, {N_TYPES:,} token types, parquet on disk {on_disk / 2**20:,.0f} MiB, "
          f"columns read (token_id, {LOSS}) in memory {columns_in_memory / 2**20:,.0f} MiB; threads {th}; "
          f"each measurement a fresh subprocess, {args.repeat} interleaved runs (median time, max RSS); "
          f"load average now {os.getloadavg()[0]:.2f}", flush=True)

    runs: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    with tempfile.TemporaryDirectory(dir=OUT) as spill:
        for _ in range(args.repeat):            # interleaved, so load from other jobs hits all three alike
            runs["a"].append(run_worker(["duckdb", str(data), th], args.threads))
            runs["b"].append(run_worker(["pandas", str(data), th], args.threads))
            runs["c"].append(run_worker(["duckdb", str(data), th, limit, spill], args.threads))
    duck, pand, lim = (summarize(runs[k]) for k in "abc")

    mib = 2**20
    print(f"{'':30}{'compute s':>10}{'process s':>11}{'peak RSS MiB':>14}{'after imports':>15}{'working MiB':>13}")
    rows = [("(a) DuckDB (default memory)", duck), ("(b) pandas + pyarrow", pand), (f"(c) DuckDB limit {limit}", lim)]
    for name, r in rows:
        print(f"{name:<30}{r['seconds']:>10.2f}{r['process_seconds']:>11.2f}{r['max_rss_bytes'] / mib:>14.0f}"
              f"{r['base_rss_bytes'] / mib:>15.0f}{(r['max_rss_bytes'] - r['base_rss_bytes']) / mib:>13.0f}"
              f"   compute s per run {r['seconds_all']}")

    def ratio(num, den, target, what):
        x = num / den
        return f"{x:6.2f}x {what:<36} target >= {target}x: {'met' if x >= target else 'NOT met'}"

    def work(r):
        return max(1, r["max_rss_bytes"] - r["base_rss_bytes"])

    print("speed  pandas/DuckDB " + ratio(pand["seconds"], duck["seconds"], 3, "compute time (a)"))
    print("speed  pandas/DuckDB " + ratio(pand["process_seconds"], duck["process_seconds"], 3,
                                          "process wall time, imports incl. (a)"))
    print("memory pandas/DuckDB " + ratio(pand["max_rss_bytes"], duck["max_rss_bytes"], 10, "peak RSS (a)"))
    print("memory pandas/DuckDB " + ratio(pand["max_rss_bytes"], lim["max_rss_bytes"], 10, "peak RSS (c)"))
    print("memory pandas/DuckDB " + ratio(work(pand), work(duck), 10, "working memory, above imports (a)"))
    print("memory pandas/DuckDB " + ratio(work(pand), work(lim), 10, "working memory, above imports (c)"))
    print(f"(b) vs (a): {compare(duck, pand, rtol=1e-5)}")
    lim_b = _bytes(limit)
    rel = [f"{'<' if lim_b < size else 'NOT <'} {size / mib:,.0f} MiB {what}"
           for size, what in [(on_disk, "parquet on disk"), (columns_in_memory, "columns read, in memory")]]
    print(f"(c) under memory_limit {limit} ({'; '.join(rel)}): completed, vs (a): {compare(duck, lim, rtol=1e-12)}")


def _bytes(size: str) -> int:
    """DuckDB's reading of a size: KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024."""
    import re

    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?)B\s*", size, re.I)
    if not m:
        raise ValueError(f"memory limit {size!r}: use e.g. 100MB")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2).upper() or " "))


if __name__ == "__main__":
    main()
