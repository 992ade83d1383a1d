"""A change reruns only what reads it (issue 16): a setting that only a statistic or a figure reads never plans a
generation or training job, under the cluster profile's rerun triggers (mtime, params, input).

Checked twice: on the finished smoke DAG (real outputs and metadata), and at paper scale on a tree whose every
output was created and ``--touch``-ed under configs/paper.yaml with the SLURM profile (plan level: params and inputs
as the cluster would see them, nothing run)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TRIGGERS = ["--rerun-triggers", "mtime", "params", "input"]

# jobs that generate or train: hours of GPU time each at paper scale
EXPENSIVE = {"pretrain_model", "teacher_samples", "stage1_kd", "stage2_opd", "evaluate", "evaluate_arm",
             "evaluate_arm_start", "rollouts", "token_kl", "opd_arm", "knockout_plan", "knockout_shard", "arm_kl",
             "gradient_geometry"}

# (overlay, a rule that must be planned: the setting is read somewhere)
STATISTICS_SETTINGS = {
    "knockout.epsilon": ({"knockout": {"epsilon": 0.0234}}, "knockout_effects"),
    "knockout.alpha": ({"knockout": {"alpha": 0.0789}}, "knockout_effects"),
    "knockout.bootstrap_resamples": ({"knockout": {"bootstrap_resamples": 321}}, "knockout_effects"),
    "knockout.fdr_q": ({"knockout": {"fdr_q": [0.0789]}}, "knockout_tables"),
    "geometry.alpha": ({"geometry": {"alpha": 0.0789}}, "geometry_finding"),
    "figures.dpi": ({"figures": {"dpi": 77}}, "figure2"),
    "evaluate.hard_average": ({"evaluate": {"hard_average": ["aime24"]}}, "accuracy_table"),
    "distillation.bootstrap_resamples": ({"distillation": {"bootstrap_resamples": 321}}, "distillation"),
}


def planned(out: str) -> dict[str, int]:
    """Rule → job count of a dry run's "Job stats" table ({} when nothing is to be done)."""
    if "Job stats:" not in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M) if m.group(1) != "total"}


def test_planned_reads_the_job_stats_table():
    out = "Building DAG of jobs...\nJob stats:\njob      count\n-----  -----\nfigure2      1\nopd_arm      8\ntotal   9\n\nx 3\n"
    assert planned(out) == {"figure2": 1, "opd_arm": 8}
    assert planned("Nothing to be done (all requested files are present and up to date).") == {}


def _overlay(tmp_path: Path, name: str, overlay: dict) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(overlay))
    return f


@pytest.mark.slow
@pytest.mark.parametrize("setting", sorted(STATISTICS_SETTINGS))
def test_a_statistics_setting_reruns_no_generation_or_training(smoke_dir, tmp_path, setting):
    from conftest import run_snakemake

    overlay, expected = STATISTICS_SETTINGS[setting]
    out = run_snakemake(smoke_dir, "-n", "--configfile", str(REPO / "configs" / "smoke.yaml"),
                        str(_overlay(tmp_path, setting, overlay)), *TRIGGERS)
    jobs = planned(out.stdout + out.stderr)
    assert expected in jobs, f"{setting}: {expected} not replanned ({jobs})"
    assert not EXPENSIVE & set(jobs), f"{setting} replans {sorted(EXPENSIVE & set(jobs))}"


# ------------------------------------------------------------------------------------------------ paper scale
PAPER = ["--configfile", "configs/paper.yaml", "--profile", "profiles/slurm-h100"]


def _snakemake(cwd: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.fixture(scope="module")
def paper_tree(tmp_path_factory):
    """A copy of the workflow in which every output of the paper DAG exists and is recorded as built by its rule
    (created, then ``--touch``: metadata with the params and inputs the cluster run would record)."""
    wd = tmp_path_factory.mktemp("paper")
    for part in ("Snakefile", "config.yaml", "rules", "workflow_scripts", "schemas", "configs", "report", "envs",
                 "profiles"):
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, wd / part)
    summary = _snakemake(wd, *PAPER, "--summary").stdout.splitlines()
    outputs = [line.split("\t")[0] for line in summary[1:] if line.strip()]
    assert len(outputs) > 1000, f"only {len(outputs)} outputs in the paper DAG"
    for o in outputs:  # directories (checkpoints, staged models, token tables) have no suffix
        p = wd / o
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        else:
            p.mkdir(parents=True, exist_ok=True)
    # --forceall: every job records its metadata (a job whose created outputs already look up to date is else skipped)
    _snakemake(wd, *PAPER, "--touch", "--forceall", "--executor", "local", "--cores", "256", "--max-jobs-per-timespan",
               "100000/1s", "--max-status-checks-per-second", "1000", "--quiet", timeout=900)
    assert planned(_snakemake(wd, *PAPER, "-n", *TRIGGERS).stdout) == {}, "the touched tree is not up to date"
    return wd


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["knockout.epsilon", "knockout.alpha", "knockout.bootstrap_resamples",
                                     "knockout.fdr_q", "geometry.alpha", "figures.dpi"])
def test_paper_plan_a_statistics_setting_reruns_no_gpu_job(paper_tree, tmp_path, setting):
    overlay, expected = STATISTICS_SETTINGS[setting]
    out = _snakemake(paper_tree, *PAPER[:2], str(_overlay(tmp_path, setting, overlay)), *PAPER[2:], "-n", *TRIGGERS)
    jobs = planned(out.stdout)
    assert expected in jobs, f"{setting}: {expected} not replanned ({jobs})"
    assert not EXPENSIVE & set(jobs), f"{setting} replans {sorted(EXPENSIVE & set(jobs))}"


@pytest.mark.slow
def test_paper_plan_a_generation_setting_does_rerun_generation(paper_tree, tmp_path):
    """The check can fail: a setting the generation reads (the decoding batch) replans teacher samples and
    evaluation."""
    out = _snakemake(paper_tree, *PAPER[:2], str(_overlay(tmp_path, "gen", {"generation": {"batch_size": 12}})),
                     *PAPER[2:], "-n", *TRIGGERS)
    jobs = planned(out.stdout)
    assert {"teacher_samples", "evaluate", "knockout_shard"} <= set(jobs), jobs
