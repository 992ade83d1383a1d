"""The workflow through a real SLURM on this machine (profiles/slurm-local), plus the cluster profile and checks.

A module fixture installs munge + slurm-wlm if missing (apt-get, as root), writes a munge key and slurm.conf into a
temporary directory (own ports and munge socket: nothing of the host's configuration is used or changed), starts
munged, slurmctld and slurmd by pid and stops them by pid at the end (also when a test fails). The cluster has one
node with this machine's CPUs and two partitions, `debug` (default) and `rockcpu`; ROCKTOKENS_PARTITION=rockcpu
sends the jobs to the second, so placement from the environment is exercised too.

Target: the smoke DAG up to and including stage2_opd (tokenizers, world, toy pretraining, data, teacher samples,
stage-1 KD, OPD: 10 jobs) -- not the whole smoke DAG, to keep the file within a few minutes on 2 cores and to stay
independent of rules added downstream later.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from rocktokens.workflow.cluster import parse_time

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
             str(REPO / "configs" / "smoke.yaml")]
PROFILE = ["--workflow-profile", str(REPO / "profiles" / "slurm-local")]
TARGET = "results/smoke/distill/stage2_history.parquet"
STATE = "results/smoke/train_state/stage2"
_SMOKE = {**yaml.safe_load((REPO / "config.yaml").read_text())["stage2"],
          **yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text()).get("stage2", {})}
CKPTS = tuple(f"opd-{k}" for k in range(1, _SMOKE["n_checkpoints"] + 1))
UPSTREAM = ("qwen3_tokenizer", "make_world", "compact_tokenizer", "prepare_data", "pretrain_model",
            "teacher_samples", "teacher_samples_merge", "stage1_kd", "stage2_opd")


# ---------------------------------------------------------------------------------------------- the cluster
def _install_slurm() -> None:
    if os.geteuid() != 0:
        pytest.skip("a single-node SLURM test cluster needs root (slurmd runs jobs as their users)")
    if all(shutil.which(b) for b in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")):
        return
    if not shutil.which("apt-get"):
        pytest.skip("SLURM/munge are not installed and there is no apt-get to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(cmd, env=env, capture_output=True, check=True)


def _mb(text: str) -> int:
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    return round(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """munged + slurmctld + slurmd in the foreground, owned by this process (stopped by pid)."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.host = socket.gethostname().split(".")[0]

    def start(self) -> "LocalSlurm":
        d = self.root
        for sub in ("munge", "state", "spool", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(d / sub, 0o700)
        key, sock = d / "munge" / "munge.key", d / "munge" / "munge.socket"
        subprocess.run(["mungekey", "-c", "-f", "-k", str(key)], check=True, capture_output=True)
        os.chmod(key, 0o400)
        self.procs["munged"] = subprocess.Popen(
            ["munged", "-F", "-f", f"--socket={sock}", f"--key-file={key}", f"--pid-file={d / 'munge' / 'munged.pid'}",
             f"--seed-file={d / 'munge' / 'seed'}", f"--log-file={d / 'log' / 'munged.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(lambda: sock.exists(), 10, "munged did not create its socket")
        with open("/proc/meminfo") as f:
            total_mb = int(next(line for line in f if line.startswith("MemTotal")).split()[1]) // 1024
        conf = d / "slurm.conf"
        conf.write_text("\n".join([
            "ClusterName=rocktest", f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge", f"AuthInfo=socket={sock}", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
            "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
            "SchedulerType=sched/backfill", "MinJobAge=600", "ReturnToService=2", "KillWait=2",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={min(8000, total_mb // 2)} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=rockcpu Nodes={self.host} MaxTime=120 State=UP", ""]))
        # Jobs run their command with `srun`, and the executor's job step drops SLURM_* variables (SLURM_CONF too)
        # from its environment: an `srun` shim on PATH puts our config back (a real cluster has /etc/slurm).
        shim = d / "bin" / "srun"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f"#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which('srun')} \"$@\"\n")
        shim.chmod(0o755)
        self.env = dict(os.environ, SLURM_CONF=str(conf), PATH=f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        for name in ("slurmctld", "slurmd"):
            args = [name, "-D", "-f", str(conf)] + (["-c", "-i"] if name == "slurmctld" else [])
            self.procs[name] = subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL,
                                                stderr=open(d / "log" / f"{name}.stderr", "w"))
        self._wait(lambda: self.sinfo_states() == {"idle"}, 60, "the SLURM node did not become idle")
        return self

    def _wait(self, ok, timeout, what):
        t = time.time()
        while time.time() - t < timeout:
            if ok():
                return
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        logs = "\n".join(f"--- {f.name}\n{f.read_text()[-1500:]}" for f in sorted((self.root / "log").glob("*")))
        raise RuntimeError(f"{what} (exited: {[n for n, p in self.procs.items() if p.poll() is not None]})\n{logs}")

    def run(self, *args, **kw):
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60, **kw)

    def sinfo_states(self) -> set:
        r = self.run("sinfo", "-h", "-o", "%T")
        return set(r.stdout.split()) if r.returncode == 0 else set()

    def jobs(self) -> list[dict]:
        """Every job slurmctld still knows (MinJobAge=600 keeps finished ones): id, rule, partition, state."""
        r = self.run("squeue", "-h", "--states=all", "-o", "%i|%k|%P|%T|%m|%l")
        out = []
        for line in r.stdout.split("\n"):
            if line.strip():
                jid, comment, part, state, mem, limit = line.strip().split("|")
                out.append({"id": jid, "rule": re.sub(r"^rule_([A-Za-z0-9_]+?)(_wildcards_.*)?$", r"\1", comment),
                            "partition": part, "state": state, "mem_mb": _mb(mem), "minutes": parse_time(limit)})
        return out

    def stop(self) -> dict:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", str(os.getuid()))
            t = time.time()
            while time.time() - t < 20 and any(j["state"] in ("RUNNING", "PENDING", "COMPLETING") for j in self.jobs()):
                time.sleep(0.3)
        codes = {}
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            codes[name] = p.returncode
        return codes


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    _install_slurm()
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def _snakemake(cluster, wd: Path, *args, background=False, env=None, timeout=900):
    env = {**cluster.env, "ROCKTOKENS_PARTITION": "rockcpu", **(env or {})}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    cmd = [*SNAKEMAKE, *PROFILE, *args]
    if background:  # output to a file (a pipe nobody reads could fill up and block Snakemake)
        out = wd / f"snakemake-{time.time_ns()}.out"
        with open(out, "w") as f:
            proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
        proc.output = out
        return proc
    return subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)


def _out(proc) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


# ---------------------------------------------------------------------------------------------- the runs
@pytest.fixture(scope="module")
def slurm_wd(slurm, tmp_path_factory):
    """Working dir in which the smoke DAG up to stage2_opd was built through SLURM (uninterrupted reference)."""
    wd = tmp_path_factory.mktemp("slurm_wd")
    t = time.time()
    proc = _snakemake(slurm, wd, TARGET)
    assert proc.returncode == 0, _out(proc)[-6000:]
    wd.joinpath("uninterrupted_seconds").write_text(f"{time.time() - t:.1f}")
    ref = wd / "reference"
    for c in CKPTS:
        shutil.copytree(wd / "results/smoke/checkpoints" / c, ref / c)
    shutil.copy(wd / "results/smoke/distill/stage2_history.parquet", ref / "history.parquet")
    return wd


@pytest.mark.slow
def test_smoke_dag_through_slurm(slurm, slurm_wd):
    jobs = slurm.jobs()
    rules = {j["rule"] for j in jobs}
    assert set(UPSTREAM) <= rules, jobs
    ours = [j for j in jobs if j["rule"] in UPSTREAM]
    assert all(j["state"] == "COMPLETED" for j in ours), ours
    # partition from the environment (ROCKTOKENS_PARTITION), not the cluster's default partition
    assert {j["partition"] for j in ours} == {"rockcpu"}, ours
    r = slurm_wd / "results/smoke"
    for c in CKPTS:
        assert (r / "checkpoints" / c / "model.safetensors").exists()
    assert list((slurm_wd / ".snakemake/slurm_logs/rule_stage2_opd").rglob("*.log"))
    print(f"\nsmoke DAG up to stage2_opd through SLURM: {(slurm_wd / 'uninterrupted_seconds').read_text()} s")


def _train_pid(wd: Path) -> int | None:
    """The stage-2 trainer started by the job in ``wd`` (found through /proc: its cwd and command line)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
            if any(c.endswith(b"workflow_scripts/train.py") for c in cmd) and b"stage2" in cmd \
                    and os.path.realpath(p / "cwd") == os.path.realpath(wd):
                return int(p.name)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return None


def _interrupt_at(proc, wd: Path, at: str, not_pid: int | None = None) -> tuple[int, str]:
    """Wait until the trainer saved state ``at`` or later, then SIGSTOP it so that the interruption that follows
    lands mid-run whatever the machine's speed; returns its pid and the latest saved state."""
    ptr = wd / STATE / "latest.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            latest = json.loads(ptr.read_text())["dir"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            latest = ""
        if latest >= at:
            pid = _train_pid(wd)
            if pid is not None and pid != not_pid:
                os.kill(pid, signal.SIGSTOP)
                return pid, json.loads(ptr.read_text())["dir"]
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended before the trainer could be interrupted:\n{proc.output.read_text()[-4000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"the trainer never reached {at}")


def _running_stage2(cluster) -> dict:
    job = [j for j in cluster.jobs() if j["rule"] == "stage2_opd" and j["state"] == "RUNNING"]
    assert len(job) == 1, cluster.jobs()
    return job[0]


def _assert_equal_to_reference(wd: Path) -> None:
    ref = wd / "reference"
    for c in CKPTS:
        mine = load_file(wd / "results/smoke/checkpoints" / c / "model.safetensors")
        theirs = load_file(ref / c / "model.safetensors")
        assert mine.keys() == theirs.keys()
        for k in theirs:
            assert torch.equal(mine[k], theirs[k]), f"{c}:{k} differs from the uninterrupted run"
    pd.testing.assert_frame_equal(pd.read_parquet(wd / "results/smoke/distill/stage2_history.parquet"),
                                  pd.read_parquet(ref / "history.parquet"))


def _resumed_steps(wd: Path, job_id: str) -> list[int]:
    """Steps the trainer resumed at, from the SLURM log of one job (the trainer logs to stderr too)."""
    log = next((wd / ".snakemake/slurm_logs/rule_stage2_opd").rglob(f"{job_id}.log")).read_text()
    return [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", log)]


@pytest.mark.slow
def test_kill_9_then_scancel_mid_training_resume_to_identical_weights(slurm, slurm_wd):
    """One fresh OPD training run (same inputs), interrupted twice through SLURM:

    1. kill -9 of the trainer inside its job (attempt 1): the profile's retry resubmits the job (attempt 2, with
       more memory and time) and the trainer resumes from its saved state;
    2. scancel of that job half-way: Snakemake fails (retries used up); a plain rerun resumes again.
    The final checkpoints and history equal those of the uninterrupted run, bit for bit (CPU).
    """
    wd = slurm_wd
    steps = len(pd.read_parquet(wd / "reference/history.parquet"))  # OPD steps of the smoke config (8)
    assert steps >= 4, "the smoke OPD run is too short to interrupt it twice"
    first, second, last = (f"state-{k:07d}" for k in (round(steps * 3 / 8), round(steps * 5 / 8), steps))
    shutil.rmtree(wd / STATE)
    proc = _snakemake(slurm, wd, TARGET, "--forcerun", "stage2_opd", background=True)  # targets first: -R takes a list
    pid1, s1 = _interrupt_at(proc, wd, first)
    job1 = _running_stage2(slurm)
    os.kill(pid1, signal.SIGKILL)
    pid2, s2 = _interrupt_at(proc, wd, second, not_pid=pid1)
    job2 = _running_stage2(slurm)
    assert job2["id"] != job1["id"]
    assert slurm.run("scancel", job2["id"]).returncode == 0
    proc.wait(timeout=240)
    out = proc.output.read_text()
    assert proc.returncode != 0, out[-3000:]
    assert "Trying to restart job" in out  # the retry after kill -9 came from Snakemake (profile: retries 1)
    assert s1 < s2 < last, (s1, s2)
    assert not (wd / "results/smoke/checkpoints" / CKPTS[-1]).exists()
    state = {j["id"]: j for j in slurm.jobs()}
    assert (state[job1["id"]]["state"], state[job2["id"]]["state"]) == ("FAILED", "CANCELLED")
    # the retry asked for more (config cluster.retry_growth: memory x1.25, runtime x1.5)
    assert state[job2["id"]]["mem_mb"] == round(1.25 * state[job1["id"]]["mem_mb"])
    assert state[job2["id"]]["minutes"] == round(1.5 * state[job1["id"]]["minutes"])

    assert _resumed_steps(wd, job1["id"]) == []  # a fresh start
    assert _resumed_steps(wd, job2["id"]) == [int(s1[-7:])]  # the retry resumed where the killed run had saved

    done = _snakemake(slurm, wd, TARGET)  # plain rerun: the incomplete job runs again and resumes
    assert done.returncode == 0, _out(done)[-6000:]
    job3 = max((j for j in slurm.jobs() if j["rule"] == "stage2_opd"), key=lambda j: int(j["id"]))
    assert job3["state"] == "COMPLETED" and int(job3["id"]) > int(job2["id"])
    assert _resumed_steps(wd, job3["id"]) == [int(s2[-7:])]
    assert "resumed from" in (wd / "results/smoke/logs/stage2_opd.log").read_text()  # the rule's own log too
    _assert_equal_to_reference(wd)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.slow
def test_partition_that_does_not_exist_is_named_before_submitting(slurm, tmp_path):
    n = len(slurm.jobs())
    proc = _snakemake(slurm, tmp_path, "results/smoke/tokenizer/qwen3", env={"ROCKTOKENS_PARTITION": "nosuch"})
    out = _out(proc)
    assert proc.returncode != 0
    assert "SLURM partition 'nosuch' does not exist on this cluster (partitions: debug, rockcpu)" in out, out[-3000:]
    assert len(slurm.jobs()) == n  # nothing was submitted


@pytest.mark.slow
def test_gpu_rule_on_partition_without_gpus_is_named(slurm, tmp_path):
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text("resources:\n  stage1_kd: {gpus: 4, cpus_per_gpu: 1, mem_mb: 1000, runtime: 10}\n"
                   "cluster: {gpu_model: h100}\n")
    n = len(slurm.jobs())
    proc = _snakemake(slurm, tmp_path, "results/smoke/checkpoints/stage1", "--configfile",
                      str(REPO / "configs/smoke.yaml"), str(gpu))
    out = _out(proc)
    assert proc.returncode != 0
    assert ("rule stage1_kd is a GPU rule (4 H100 GPUs on one node) but no node of partition rockcpu has them "
            f"({slurm.host}: no GPUs)") in out, out[-3000:]
    assert len(slurm.jobs()) == n


@pytest.mark.slow
def test_daemons_stop_by_pid(slurm):
    """Last test of the file: stop the daemons (the fixture's finalizer does it too, also after a failure)."""
    pids = {n: p.pid for n, p in slurm.procs.items()}
    codes = slurm.stop()
    assert set(codes) == {"munged", "slurmctld", "slurmd"}
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), name


# ---------------------------------------------------------------------------------------------- paper scale
def _dry_run_jobs(text: str) -> list[dict]:
    """(rule, threads, resources) of every job block a dry run prints."""
    jobs, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            cur = {"rule": m.group(1), "threads": 1, "resources": {}}
            jobs.append(cur)
        elif cur is not None and line.startswith("    threads: "):
            cur["threads"] = int(line.split(":", 1)[1])
        elif cur is not None and line.startswith("    resources: "):
            for item in line.split(":", 1)[1].split(", "):
                k, _, v = item.strip().partition("=")
                cur["resources"][k] = int(v) if v.isdigit() else v
    return jobs


class _Resources(dict):
    """What the plugin reads from a job: ``resources.get(k)`` and ``resources.k``."""

    def __getattr__(self, k):
        return self.get(k)


def _sbatch(job: dict) -> str:
    """The sbatch command line the SLURM executor plugin builds for ``job`` (its own functions)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    res = _Resources({k: v for k, v in job["resources"].items() if v != "<TBD>"})
    j = SimpleNamespace(resources=res, threads=job["threads"], name=job["rule"], rule=SimpleNamespace(name=job["rule"]),
                        is_group=lambda: False)
    # account/partition as Executor.get_account_arg / get_partition_arg render a given value
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": f"rule_{job['rule']}", "workdir": "/wd",
              "account": f" -A {res['slurm_account']}" if res.get("slurm_account") else "",
              "partition": f" -p {res['slurm_partition']}" if res.get("slurm_partition") else ""}
    return get_submit_command(j, params) + set_gres_string(j)


def test_paper_gpu_rules_request_h100s_on_one_node(tmp_path):
    """Dry-run the paper DAG with profiles/slurm-h100 (the resources Snakemake evaluates for each job), then build
    each job's sbatch call with the executor plugin's own code: every GPU job asks for its H100s on one node of
    4xH100 -- all 4 for stage-1 KD, OPD, rollouts and token scoring, 2 (vLLM TP=2) for each teacher-sample block,
    evaluation and knockout job."""
    env = {**os.environ, "ROCKTOKENS_GPU_PARTITION": "h100q", "ROCKTOKENS_PARTITION": "cpuq",
           "ROCKTOKENS_ACCOUNT": "proj42", "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n", "--configfile",
                        str(REPO / "configs/paper.yaml"), "--workflow-profile", str(REPO / "profiles/slurm-h100")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, _out(r)[-4000:]
    jobs = _dry_run_jobs(r.stdout + r.stderr)
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    gpu_rules = {k for k, v in paper["resources"].items() if v.get("gpus")}
    assert {"teacher_samples", "stage1_kd", "stage2_opd", "evaluate", "rollouts", "token_kl"} <= gpu_rules
    seen = set()
    for job in jobs:
        rule, res = job["rule"], job["resources"]
        if rule == "all" or rule in ("stage_model", "stage_dataset", "stage_nltk_data"):  # localrules: login node
            continue
        call = _sbatch(job)
        if res.get("gpus"):  # a GPU job (its rule's resources entry, or one it shares, lists gpus)
            seen.add(rule)
            spec = paper["resources"].get(rule, res)
            assert 1 <= spec["gpus"] <= 4  # fits one 4xH100 node
            for want in (f"--gpus=h100:{spec['gpus']}", "--nodes=1", f"--cpus-per-gpu={spec['cpus_per_gpu']}",
                         f"--mem {spec['mem_mb']}", f"-t {spec['runtime']}", "-p h100q", "-A proj42"):
                assert want in call, f"{rule}: {want!r} not in {call}"
            assert "--ntasks" not in call  # one task; accelerate/vLLM start the per-GPU processes
        else:
            assert "--gpus" not in call and "--gres" not in call, call
            assert "-p cpuq" in call and "-A proj42" in call and "--cpus-per-task=" in call, call
    assert gpu_rules & {j["rule"] for j in jobs} <= seen
    assert {"stage1_kd", "stage2_opd", "teacher_samples"} <= seen
    for rule in ("stage1_kd", "stage2_opd", "rollouts", "token_kl"):  # FSDP / TP
        assert paper["resources"][rule]["gpus"] == 4
    for rule in ("teacher_samples", "evaluate", "evaluate_arm", "knockout_shard"):  # one block / bench, vLLM TP=2
        assert paper["resources"][rule]["gpus"] == 2 and rule in seen
    assert len(jobs) >= 1000


def test_retry_asks_for_more_time_and_memory_capped():
    from rocktokens.workflow.cluster import rule_resources

    cfg = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    res = rule_resources(cfg, "stage2_opd")
    mem, rt = res["mem_mb"], res["runtime"]
    assert [mem(None, a) for a in (1, 2, 3)] == [480000, 500000, 500000]  # x1.25, capped at max_mem_mb
    assert [rt(None, a) for a in (1, 2)] == [4320, 4320]  # capped at max_runtime (training resumes)
    ev = rule_resources(cfg, "evaluate")
    assert [ev["runtime"](None, a) for a in (1, 2, 3)] == [240, 360, 540]
    assert (res["gpu"], res["gpus"], res["nodes"], res["cpus_per_gpu"], res["gpu_model"]) == (4, 4, 1, 4, "h100")
    assert "slurm_partition" not in res and "slurm_account" not in res  # nothing cluster-specific in the repo


def test_placement_from_config_then_environment():
    from rocktokens.workflow.cluster import asks_for_gpus, placement

    cfg = {"cluster": {"partition": "", "gpu_partition": "", "account": ""}}
    assert placement(cfg, True, {}) == {}
    env = {"ROCKTOKENS_PARTITION": "cpu", "ROCKTOKENS_GPU_PARTITION": "gpu", "SBATCH_ACCOUNT": "acc"}
    assert placement(cfg, True, env) == {"slurm_partition": "gpu", "slurm_account": "acc"}
    assert placement(cfg, False, env) == {"slurm_partition": "cpu", "slurm_account": "acc"}
    assert placement(cfg, True, {"SBATCH_PARTITION": "p"}) == {"slurm_partition": "p"}
    cfg["cluster"].update(gpu_partition="h100", account="me")
    assert placement(cfg, True, env) == {"slurm_partition": "h100", "slurm_account": "me"}
    assert asks_for_gpus({"gpus": 4}) and asks_for_gpus({"gres": "gpu:h100:2"})
    assert not asks_for_gpus({"gpus": 0, "mem_mb": 1000}) and not asks_for_gpus({})


def test_sinfo_parsing_and_checks_without_a_cluster():
    from rocktokens.workflow.cluster import ClusterError, Request, SlurmInfo, check_slurm_requests, parse_gres, parse_time

    assert parse_gres("gpu:h100:4(S:0-1)") == {"h100": 4} and parse_gres("(null)") == {}
    assert parse_gres("gpu:8,shard:4") == {"": 8} and parse_gres("gpu:a100:2,gpu:h100:4") == {"a100": 2, "h100": 4}
    assert [parse_time(t) for t in ("infinite", "2-00:00:00", "12:00:00", "30:00", "90")] == [None, 2880, 720, 30, 90]
    info = SlurmInfo.parse("cpu*|c1|64|256000|(null)|1-00:00:00\n"
                           "gpu|g1|64|1000000|gpu:h100:4(S:0-1)|3-00:00:00\n")
    ok = Request("stage2_opd", "gpu", gpus=4, gpu_model="h100", mem_mb=480000, runtime=4320, cpus=16)
    check_slurm_requests([ok, Request("prepare_data", "", mem_mb=8000, runtime=60, cpus=8)], info)
    bad = [Request("stage1_kd", "", gpus=4, gpu_model="h100", mem_mb=1000, runtime=10, cpus=4),
           Request("evaluate", "gpu", gpus=4, gpu_model="a100", runtime=10),
           Request("token_kl", "gpu", gpus=4, gpu_model="h100", mem_mb=2_000_000, runtime=5000, cpus=4),
           Request("figure2", "nosuch")]
    with pytest.raises(ClusterError) as e:
        check_slurm_requests(bad, info)
    msg = str(e.value)
    assert "rule stage1_kd is a GPU rule (4 H100 GPUs on one node) but no node of partition cpu has them (c1: no GPUs)" in msg
    assert "rule evaluate is a GPU rule (4 A100 GPUs on one node) but no node of partition gpu has them (g1: h100x4)" in msg
    assert "rule token_kl asks for 2000000 MB of memory but the largest node of partition gpu has 1000000 MB" in msg
    assert "rule token_kl asks for 5000 min but partition gpu allows at most 4320 min" in msg
    assert "rule figure2: SLURM partition 'nosuch' does not exist on this cluster (partitions: cpu, gpu)" in msg


def test_gpu_layout_of_the_config_is_checked():
    from rocktokens.workflow.cluster import ClusterError, check_parallelism

    cfg = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    check_parallelism(cfg)
    cfg["training"]["launcher"] = cfg["training"]["launcher"].replace("--num_processes 4", "--num_processes 8")
    with pytest.raises(ClusterError, match="--num_processes 8 but resources.stage1_kd.gpus is 4"):
        check_parallelism(cfg)
    cfg = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    cfg["generation"]["tensor_parallel_size"] = 3
    with pytest.raises(ClusterError, match="tensor_parallel_size 3 does not divide resources.teacher_samples.gpus 2"):
        check_parallelism(cfg)


def test_gpu_rule_on_a_machine_without_gpus_is_named(tmp_path):
    """The paper-style GPU request run by the local executor on a machine without GPUs: one message, nothing runs."""
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text("resources:\n  stage1_kd: {gpus: 4, mem_mb: 1000, runtime: 10}\n")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    r = subprocess.run([sys.executable, "-m", "snakemake", "results/smoke/checkpoints/stage1", "-s", str(REPO / "Snakefile"),
                        "--cores", "1", "--configfile", str(REPO / "configs/smoke.yaml"), str(gpu)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = _out(r)
    assert r.returncode != 0
    assert "GPU rule(s) stage1_kd (4 GPUs) would run on this machine, which has 0 visible GPU(s)" in out, out[-3000:]
    assert not (tmp_path / "results").exists()  # nothing started


def test_staging_rule_without_network_is_one_clear_message(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2",
           "HF_HUB_DOWNLOAD_TIMEOUT": "2", "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = subprocess.run([sys.executable, "-m", "snakemake", "resources/models/student_base", "-s", str(REPO / "Snakefile"),
                        "--cores", "1", "--configfile", str(REPO / "configs/paper.yaml")],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = _out(r)
    assert r.returncode != 0
    assert "staging model Qwen/Qwen3-4B-Instruct-2507 needs network access to the Hugging Face hub" in out, out[-3000:]
    assert "login node" in out
    assert not (tmp_path / "resources/models/student_base").exists()
