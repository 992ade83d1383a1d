"""Wall-clock targets of the workflow itself (issue: foundation).

    python benchmarks/dag_timing.py            # dry-runs of both configs (target <= 5 s each), and the paper
                                               # DAG with the SLURM profile (issue: cluster; <= 10 s, >= 1,000 jobs)
    python benchmarks/dag_timing.py --smoke    # + the smoke DAG from scratch in a temp dir (target <= 180 s)

Prints one line per measurement with its target and the ratio target/measured (>= 1.0 meets the target).
The full embedded default (target <= 15 min) is measured with `make run` from a clean clone; per-rule
times are in results/default/benchmarks/*.tsv (Snakemake `benchmark:` files).
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir, *args, output=False):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    t, c = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, check=True, env=env, capture_output=True, cwd=REPO, text=True)
    dt, c2 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = c2.ru_utime + c2.ru_stime - c.ru_utime - c.ru_stime  # load-independent: wall ~ cpu on an idle machine
    return (dt, cpu, r.stdout + r.stderr) if output else dt


def job_count(text):
    """The `total` line of a dry run's job statistics."""
    m = re.search(r"^total\s+(\d+)\s*$", text, re.M)
    return int(m.group(1)) if m else 0


def report(name, seconds, target):
    print(f"{name:<40} {seconds:8.2f} s   target {target:7.1f} s   ratio {target / seconds:5.2f}x")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as wd:
        report("dry-run, embedded default", snakemake(wd, "-n"), 5.0)
        report("dry-run, paper scale", snakemake(wd, "-n", "--configfile", str(REPO / "configs/paper.yaml")), 5.0)
        # paper DAG as it would be submitted: SLURM executor settings and per-job sbatch resources evaluated
        dt, cpu, out = snakemake(wd, "-n", "--configfile", str(REPO / "configs/paper.yaml"), "--workflow-profile",
                                 str(REPO / "profiles/slurm-h100"), output=True)
        report("dry-run, paper scale, profiles/slurm-h100", dt, 10.0)
        print(f"{'  (CPU seconds of that dry run)':<40} {cpu:8.2f} s")
        n = job_count(out)
        print(f"{'  jobs in the paper DAG':<40} {n:8d}     target  >= 1000     ratio {n / 1000:5.2f}x")
        if a.smoke:
            report("smoke DAG from scratch (--cores 2)",
                   snakemake(wd, "--cores", "2", "--configfile", str(REPO / "configs/smoke.yaml")), 180.0)
