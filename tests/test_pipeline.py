"""The smoke DAG end-to-end through Snakemake, plus resume-after-kill of the OPD trainer."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_snakemake

pytestmark = pytest.mark.slow


def test_smoke_dag_artifacts(smoke_results):
    r = smoke_results
    for d in ["tokenizer/qwen3", "tokenizer/compact", "models/teacher", "models/student_base",
              "checkpoints/stage1", "checkpoints/opd-1", "checkpoints/opd-2"]:
        assert (r / d).is_dir(), d
    for d in ["models/teacher", "checkpoints/stage1", "checkpoints/opd-2"]:
        assert (r / d / "config.json").exists() and (r / d / "tokenizer.json").exists()
    samples = pd.read_parquet(r / "distill/teacher_samples.parquet")
    assert set(["id", "prompt", "response", "prompt_ids", "token_ids", "finish_reason"]) <= set(samples.columns)
    assert len(samples) == 64 and samples["finish_reason"].isin(["stop", "length"]).all()
    hist = pd.read_parquet(r / "distill/stage2_history.parquet")
    assert hist["step"].tolist() == list(range(1, 9)) and hist["loss"].notna().all()
    table = pd.read_csv(r / "eval/accuracy.tsv", sep="\t")
    expect = {(c, b) for c in ["teacher", "student_base", "stage1", "opd-1", "opd-2"]
              for b in ["math", "ifeval", "aime24", "aime25", "hmmt25", "hard_avg"]}
    assert {(c, b) for c, b in zip(table["checkpoint"], table["benchmark"])} == expect
    assert table["pass@1"].between(0, 1).all()
    ev = pd.read_parquet(r / "eval/opd-2/math.parquet")
    assert len(ev) == 24 and ev["correct"].dtype == bool
    # nothing half-written anywhere
    assert not [p for p in r.rglob("*") if ".tmp" in p.name]


def test_opd_checkpoints_differ_and_load(smoke_results):
    from transformers import AutoModelForCausalLM

    a = load_file(smoke_results / "checkpoints/opd-1/model.safetensors")
    b = load_file(smoke_results / "checkpoints/stage1/model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # OPD really trained
    m = AutoModelForCausalLM.from_pretrained(smoke_results / "checkpoints/opd-2", local_files_only=True)
    assert m.config.model_type == "qwen3"


def test_dag_is_complete(smoke_dir):
    out = run_snakemake(smoke_dir, "-n")  # its wall time is a benchmark (benchmarks/dag_timing.py), not a test
    assert "Nothing to be done" in out.stdout + out.stderr


def test_moving_the_checkout_does_not_rerun_training(smoke_dir, tmp_path):
    """The cluster profile's rerun triggers (mtime, params, input) must not relaunch finished training when the
    workflow is run from another checkout: no param may hold an absolute path of the checkout or interpreter."""
    import shutil

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for part in ("Snakefile", "config.yaml", "rules", "workflow_scripts", "schemas", "configs", "report", "envs", "profiles"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, moved / part)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(moved / "Snakefile"), "--directory", str(smoke_dir),
           "--configfile", str(REPO / "configs" / "smoke.yaml"), "-n", "--rerun-triggers", "mtime", "params", "input"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=moved)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def _train_cmd(r: Path, state: Path, out: Path):
    import yaml

    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    smoke = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    stage2 = {**cfg["stage2"], **smoke["stage2"]}
    spec = {"stage2": stage2, "seed": cfg["seed"], "threads": 1, "generation": cfg["generation"], "dtype": "float32"}
    return [sys.executable, str(REPO / "workflow_scripts/train.py"), "stage2", "--spec", json.dumps(spec),
            "--input", f"student={r}/checkpoints/stage1", f"teacher={r}/models/teacher",
            f"tokenizer={r}/tokenizer/compact", f"prompts={r}/data/stage2_prompts.parquet",
            "--output", f"opd-1={out}/opd-1", f"opd-2={out}/opd-2", f"history={out}/history.parquet",
            "--state", str(state)]


def test_opd_resumes_after_kill_9_with_identical_weights(smoke_results, tmp_path):
    """kill -9 the OPD trainer mid-run; rerun; final weights equal the uninterrupted DAG run's (CPU)."""
    state, out = tmp_path / "state", tmp_path / "out"
    cmd = _train_cmd(smoke_results, state, out)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        ptr = state / "latest.json"
        if ptr.exists() and json.loads(ptr.read_text())["dir"] >= "state-0000003":
            break
        if proc.poll() is not None:
            pytest.fail(f"trainer ended before it could be killed: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads((state / "latest.json").read_text())["dir"]
    assert killed_at < "state-0000008", "killed too late to test resuming"
    assert not (out / "opd-2").exists()
    log = tmp_path / "resume.log"
    done = subprocess.run(cmd + ["--log", str(log)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in log.read_text()
    for ck in ["opd-1", "opd-2"]:
        mine = load_file(out / ck / "model.safetensors")
        ref = load_file(smoke_results / "checkpoints" / ck / "model.safetensors")
        assert mine.keys() == ref.keys()
        for k in ref:
            assert torch.equal(mine[k], ref[k]), f"{ck}:{k} differs after resume"
    hist = pd.read_parquet(out / "history.parquet")
    ref_hist = pd.read_parquet(smoke_results / "distill/stage2_history.parquet")
    pd.testing.assert_frame_equal(hist, ref_hist)


def test_unknown_config_key_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage2:\n  learning_rat: 0.1\n")
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "learning_rat" in proc.stdout + proc.stderr


def test_bad_cross_field_config_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evaluate:\n  checkpoints: [opd-9]\n")
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0 and "evaluate.checkpoints" in proc.stdout + proc.stderr


def test_distillation_benchmark_must_be_evaluated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distillation:\n  benchmark: gsm8k\n")
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0 and "distillation.benchmark" in proc.stdout + proc.stderr


def test_distillation_table_of_the_smoke_run(smoke_results):
    ck = pd.read_csv(smoke_results / "eval/distillation_checkpoints.tsv", sep="\t")
    assert ck["checkpoint"].tolist() == ["teacher", "student_base", "stage1", "opd-1", "opd-2"]
    acc = pd.read_parquet(smoke_results / "eval/accuracy.parquet")
    math_acc = acc[acc["benchmark"] == "math"].set_index("checkpoint")["pass@1"]
    assert all(abs(math_acc[c] - p) < 1e-4 for c, p in zip(ck["checkpoint"], ck["pass@1"]))
    summary = json.loads((smoke_results / "eval/distillation.json").read_text())
    assert summary["final"] == "opd-2" and summary["kl_curve"]["steps"] == 8
    assert (smoke_results / "figures/distillation.png").stat().st_size > 10_000


def test_token_table_and_rock_artifacts(smoke_results):
    r = smoke_results
    t = pd.read_parquet(r / "tokens/kl")
    ro = pd.read_parquet(r / "tokens/rollouts/opd-2.parquet")
    assert set(t["scorer"].astype(str)) == {"stage1", "opd-1", "opd-2"}
    per = {s: g.reset_index(drop=True) for s, g in t.groupby("scorer", observed=True)}
    # every scorer scored exactly the same occurrences: every response token of every post-OPD rollout
    keys = ["problem_id", "sample", "position", "token_id"]
    assert all(per[s][keys].equals(per["stage1"][keys]) for s in per)
    assert len(per["stage1"]) == ro["n_tokens"].sum()
    first = ro.iloc[0]
    rows = per["opd-2"][(per["opd-2"]["problem_id"] == first["problem_id"]) & (per["opd-2"]["sample"] == first["sample"])]
    assert rows.sort_values("position")["token_id"].tolist() == list(first["token_ids"])
    assert (t["rkl"] >= -1e-5).all() and (t["fkl"] >= -1e-5).all()
    assert ((t["log_ratio"] - (t["logp_student"] - t["logp_teacher"])).abs() < 1e-5).all()
    # the logprob the sampler recorded equals the teacher-forced post-OPD student's (same model, raw T=1)
    lp = pd.Series(list(first["logprobs"]))
    assert (rows.sort_values("position")["logp_student"].reset_index(drop=True) - lp).abs().max() < 1e-3
    chosen = json.loads((r / "rocks/chosen_K.json").read_text())
    assert chosen["K"] in (5, 10)
    for k in (5, 10):
        rocks = pd.read_parquet(r / f"rocks/K{k}.parquet")
        assert len(rocks) == k and {"token", "freq", "R", "CCR", "R_ctx", "rank", "cluster"} <= set(rocks.columns)
        ctrl = pd.read_parquet(r / f"rocks/K{k}_controls.parquet")
        ratio = ctrl["control_freq"].sum() / ctrl["rock_freq"].sum()
        assert (0.9 <= ratio <= 1.1) == bool(ctrl["within_tol"].all())
        assert not set(ctrl["control_token_id"]) & set(rocks["token_id"])
    assert (r / "figures/figure2.png").stat().st_size > 20_000
