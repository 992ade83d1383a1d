"""configs/paper.yaml: valid against the schema and the cross-field checks, faithful to Appendix C, and
`snakemake -n --configfile configs/paper.yaml` plans the whole paper-scale DAG offline (its wall time is measured
by benchmarks/dag_timing.py, not asserted here)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from rocktokens.workflow.config import check_config, eval_checkpoints

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper.yaml"
# the snakemake of this interpreter's environment (the venv), else the one on PATH
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
if not SNAKEMAKE.exists():
    SNAKEMAKE = Path(shutil.which("snakemake") or "snakemake")


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(PAPER.read_text())


def test_paper_config_is_valid(cfg):
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(cfg)
    check_config(cfg)
    assert cfg["source"] == "hub" and cfg["run"] == "paper"


def test_paper_hyperparameters(cfg):
    """Appendix C / §5 values (FACTS.md), and the step arithmetic they imply."""
    assert cfg["models"]["teacher"]["hub_id"] == "Qwen/Qwen3-30B-A3B-Instruct-2507"
    assert cfg["models"]["student_base"]["hub_id"] == "Qwen/Qwen3-4B-Instruct-2507"
    for m in cfg["models"].values():
        assert m.get("revision") and "arch" not in m and "pretrain" not in m
    assert cfg["teacher_samples"] == {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 16384, "shards": 20}
    s1, s2 = cfg["stage1"], cfg["stage2"]
    assert (s1["divergence"], s1["kd_ratio"], s1["lr"], s1["warmup_ratio"]) == ("fkl", 0.5, 2e-5, 0.05)
    assert (s1["global_batch"], s1["micro_batch"], s1["max_len"], s1["epochs"]) == (128, 1, 16384, 1)
    assert (s2["divergence"], s2["kd_ratio"], s2["lr"], s2["warmup_ratio"], s2["clip"]) == ("rkl", 1.0, 2e-6, 0.05, 1.0)
    assert (s2["rollouts_per_prompt"], s2["rollout_temperature"], s2["rollout_top_p"]) == (4, 1.0, 1.0)
    assert (s2["max_new_tokens"], s2["prompt_max_len"], s2["n_checkpoints"]) == (8000, 800, 7)
    assert (s2["global_batch"], s2["micro_batch"], s2["epochs"], s2["temperature"]) == (4, 1, 1, 1.0)
    # "each 200 training steps correspond to 8,000 prompts, with 4 rollouts per prompt" (Fig. 5)
    assert 200 * s2["prompts_per_step"] == 8000
    ds = cfg["datasets"]
    n_stage2 = ds["stage2_prompts"]["stop"] - ds["stage2_prompts"]["start"]
    assert (ds["stage1_prompts"]["start"], ds["stage1_prompts"]["stop"]) == (0, 20000)
    assert n_stage2 == 10000 and n_stage2 // s2["prompts_per_step"] >= s2["n_checkpoints"]
    assert ds["math"]["answer_field"] == "solution" and ds["math"]["answer_from_boxed"] is True
    assert ds["ifeval"]["checker"] == "ifeval"
    assert {d["hub_id"] for d in ds.values()} >= {
        "open-thoughts/OpenThoughts3-1.2M", "HuggingFaceH4/MATH-500", "Maxwell-Jia/AIME_2024", "math-ai/aime25",
        "MathArena/hmmt_feb_2025", "google/IFEval"}
    assert cfg["generation"]["backend"] == "vllm" and cfg["generation"]["tensor_parallel_size"] == 2
    assert cfg["training"]["launcher"].startswith("accelerate launch --config_file envs/accelerate_fsdp.yaml")
    assert (REPO / "envs" / "accelerate_fsdp.yaml").exists()
    ev = cfg["evaluate"]
    assert ev["k"] == 5 and ev["hard_average"] == ["aime24", "aime25", "hmmt25"]
    assert eval_checkpoints(cfg) == ["teacher", "student_base", "stage1", *[f"opd-{k}" for k in range(1, 8)]]
    for rule in ("stage1_kd", "stage2_opd"):
        assert cfg["resources"][rule]["gpus"] == 4
    for rule in ("teacher_samples", "evaluate", "evaluate_arm", "knockout_shard"):  # TP=2 on 2xH100 (paper)  # one 4B model at vLLM TP=2: two jobs per node
        assert cfg["resources"][rule]["gpus"] == cfg["generation"]["tensor_parallel_size"] == 2
    assert cfg["knockout"]["k_screen"] == 200 and cfg["knockout"]["shard_size"] == 1


def _job_counts(text: str) -> dict[str, int]:
    table = text.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_paper_dry_run_plans_every_stage_offline():
    # No network: point the hub at a closed local port and switch it offline; a dry run must not care.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run([str(SNAKEMAKE), "-n", "--configfile", "configs/paper.yaml"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    counts = _job_counts(out)
    for rule in ("stage_model", "stage_dataset", "prepare_data", "teacher_samples", "stage1_kd", "stage2_opd", "evaluate"):
        assert counts.get(rule, 0) >= 1, f"{rule} not planned: {counts}"
    assert counts["stage_model"] == 2 and counts["stage_dataset"] == 7 and counts["prepare_data"] == 7
    assert counts["evaluate"] == 50  # one job per checkpoint (teacher, student_base, stage1, opd-1..7) x benchmark (5)
    # knockout: 200 candidates x (token, window, local) x (MATH-500, IFEval), one GPU job each, + a baseline per benchmark
    assert counts["knockout_shard"] == 1202  # (token, window, local) x 200 candidates x 2 benchmarks + 2 baselines
    assert counts["evaluate_arm"] == 8 * 7 * 3 and counts["evaluate_arm_start"] == 3  # 8 arms (incl. tokens-only)
    assert counts["total"] >= 1000, counts
    assert "resources/models/teacher" in out and "resources/datasets/stage1_prompts.parquet" in out
    assert not re.search(r"rule (make_world|pretrain_model|qwen3_tokenizer)\b", out)  # no world rules at hub scale
