"""``source: checkpoints`` (rocktokens/workflow/byo.py): analyse checkpoints trained elsewhere.

The end-to-end test copies the smoke run's checkpoints and prepared benchmarks to a folder outside ``results/``,
runs the DAG on them and gets the smoke run's own token table and rock sets (same seeds), with no training or
teacher-sampling job in the plan; the paper-sized dry-run plans none either.
"""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_snakemake
from rocktokens.workflow import byo
TRAINING = ("stage1_kd", "stage2_opd", "teacher_samples", "teacher_samples_merge", "opd_arm", "pretrain_model")


def _planned(proc) -> dict[str, int]:
    """Job counts of a dry-run's 'Job stats' table."""
    out, on = {}, False
    for line in proc.stdout.splitlines():
        if line.startswith("job ") and "count" in line:
            on = True
            continue
        if on:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
            elif out and not line.strip():
                break
    return out


def _fake_checkpoint(d: Path, vocab: int = 151_936, tokenizer: bool = True) -> str:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen3", "vocab_size": vocab}))
    if tokenizer:
        (d / "tokenizer_config.json").write_text("{}")
        (d / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": []}))
    return str(d)


def _config(tmp_path, **ck) -> dict:
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    base["source"] = "checkpoints"
    base["checkpoints"] = {"teacher": ck.get("teacher"), "pre_opd": ck.get("pre_opd"), "opd": ck.get("opd"),
                           "student_base": None, "stage2_prompts": None}
    data = tmp_path / "math.parquet"
    pd.DataFrame({"id": ["1"], "prompt": ["1+1?"], "answer": ["2"], "checker": ["math"]}).to_parquet(data)
    base["datasets"] = {b: {"path": str(data)} for b in base["benchmarks"]}
    return base


def test_parse_time_checks_name_the_key(tmp_path):
    t = _fake_checkpoint(tmp_path / "t")
    s = _fake_checkpoint(tmp_path / "s")
    o = [_fake_checkpoint(tmp_path / f"o{i}") for i in range(3)]
    cfg = _config(tmp_path, teacher=t, pre_opd=s, opd=o)
    byo.resolve(cfg)
    assert cfg["stage2"]["n_checkpoints"] == 3 and "student_base" not in cfg["evaluate"]["checkpoints"]
    byo.check(cfg, byo.needed_datasets(cfg))  # a well-formed run passes
    assert list(byo.checkpoint_dirs(cfg)) == ["teacher", "stage1", "opd-1", "opd-2", "opd-3"]
    assert byo.needed_datasets(cfg) == cfg["benchmarks"] and not byo.freeze_on(cfg)

    bad = _config(tmp_path, teacher=str(tmp_path / "nope"), pre_opd=s, opd=o)
    with pytest.raises(byo.ByoError, match=r"'checkpoints.teacher': .*nope is not a directory"):
        byo.check(bad, [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(byo.ByoError, match=r"'checkpoints.opd\[1\]': .* has no config.json"):
        byo.check(_config(tmp_path, teacher=t, pre_opd=s, opd=[o[0], str(tmp_path / "empty")]), [])
    notok = _fake_checkpoint(tmp_path / "notok", tokenizer=False)
    with pytest.raises(byo.ByoError, match=r"'checkpoints.pre_opd': .* has no tokenizer files"):
        byo.check(_config(tmp_path, teacher=t, pre_opd=notok, opd=o), [])
    other = _fake_checkpoint(tmp_path / "other", vocab=152_064)
    with pytest.raises(byo.ByoError, match=r"do not share one vocabulary.*opd-2 152064"):
        byo.check(_config(tmp_path, teacher=t, pre_opd=s, opd=[o[0], other]), [])
    with pytest.raises(byo.ByoError, match=r"'checkpoints.opd': a list .* got '/x'"):
        byo.resolve(_config(tmp_path, teacher=t, pre_opd=s, opd="/x"))
    nofield = _config(tmp_path, teacher=t, pre_opd=s, opd=o)
    nofield["datasets"]["math"] = {"path": nofield["datasets"]["math"]["path"], "prompt_field": "question",
                                   "answer_field": "answer", "checker": "math"}
    with pytest.raises(byo.ByoError, match=r"'datasets.math': .* has no field\(s\) \['question'\]"):
        byo.check(nofield, ["math"])
    nofield["datasets"]["math"] = {"path": nofield["datasets"]["math"]["path"], "prompt_field": "prompt",
                                   "checker": "math"}
    with pytest.raises(byo.ByoError, match=r"'datasets.math.answer_field': the math checker needs the gold"):
        byo.check(nofield, ["math"])


def test_paper_sized_byo_dry_run_plans_no_training(tmp_path):
    t = _fake_checkpoint(tmp_path / "ck" / "teacher")
    s = _fake_checkpoint(tmp_path / "ck" / "pre")
    o = [_fake_checkpoint(tmp_path / "ck" / f"step{i}") for i in range(7)]
    overlay = tmp_path / "byo.yaml"
    overlay.write_text(yaml.safe_dump({"run": "byo_paper", "source": "checkpoints",
                                       "checkpoints": {"teacher": t, "pre_opd": s, "opd": o}}))
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "configs" / "paper.yaml"), str(overlay),
                         timeout=300)
    jobs = _planned(proc)
    assert jobs.get("evaluate", 0) > 0 and jobs.get("knockout_shard", 0) > 0 and jobs.get("token_kl") == 1
    assert not set(jobs) & set(TRAINING), jobs
    assert "stage_model" not in jobs  # the models are given, never downloaded


@pytest.mark.slow
def test_byo_run_reproduces_the_smoke_token_table_and_rock_sets(smoke_results, tmp_path):
    ck = tmp_path / "elsewhere"  # outside results/
    dirs = {"teacher": smoke_results / "models" / "teacher", "pre_opd": smoke_results / "checkpoints" / "stage1"}
    n_opd = len(list((smoke_results / "checkpoints").glob("opd-*")))
    opd = [smoke_results / "checkpoints" / f"opd-{k}" for k in range(1, n_opd + 1)]
    for name, d in [*dirs.items(), *((f"opd{k}", d) for k, d in enumerate(opd, 1))]:
        shutil.copytree(d, ck / name)
    for d in ck.iterdir():  # the world checkpoints carry the compact tokenizer, as any saved run carries its own
        assert (d / "tokenizer.json").exists()
    # the world's compact tokenizer maps its ids to Qwen3 ids (id_map.parquet, beside tokenizer.json); a run saved
    # with that tokenizer carries the map in its tokenizer directory (a hub model's ids already are Qwen3 ids)
    shutil.copy(smoke_results / "tokenizer" / "compact" / "id_map.parquet", ck / "pre_opd")
    shutil.copytree(smoke_results / "data", ck / "data")
    smoke_cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    overlay = {
        "run": "byo", "source": "checkpoints",
        "checkpoints": {"teacher": str(ck / "teacher"), "pre_opd": str(ck / "pre_opd"),
                        "opd": [str(ck / f"opd{k}") for k in range(1, n_opd + 1)]},
        "datasets": {b: {"path": str(ck / "data" / f"{b}.parquet")}
                     for b in yaml.safe_load((REPO / "config.yaml").read_text())["benchmarks"]},
    }
    assert smoke_cfg["stage2"]["n_checkpoints"] == n_opd
    (tmp_path / "byo.yaml").write_text(yaml.safe_dump(overlay))
    wd = smoke_results.parents[1]  # the smoke run's working directory: results/byo lands beside results/smoke
    plan = _planned(run_snakemake(wd, "-n", "--configfile", str(REPO / "configs" / "smoke.yaml"),
                                  str(tmp_path / "byo.yaml")))
    assert plan.get("token_kl") == 1 and not set(plan) & set(TRAINING), plan
    targets = ["results/byo/tokens/kl", "results/byo/rocks/R.json",
               *(f"results/byo/{f.relative_to(smoke_results)}" for f in sorted((smoke_results / "rocks").glob("K*.parquet")))]
    run_snakemake(wd, "--cores", "2", *targets,  # targets before --configfile, which takes a list
                  "--configfile", str(REPO / "configs" / "smoke.yaml"), str(tmp_path / "byo.yaml"))
    mine, theirs = wd / "results" / "byo", smoke_results
    for f in sorted((theirs / "tokens" / "kl").glob("*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(mine / "tokens" / "kl" / f.name), pd.read_parquet(f))
    for name in ("chosen_K.json", "R.json"):
        assert json.loads((mine / "rocks" / name).read_text()) == json.loads((theirs / "rocks" / name).read_text())
    pd.testing.assert_frame_equal(pd.read_parquet(mine / "rocks" / "R.parquet"), pd.read_parquet(theirs / "rocks" / "R.parquet"))
    for f in sorted((theirs / "rocks").glob("K*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(mine / "rocks" / f.name), pd.read_parquet(f))
