"""Cluster execution (SLURM): what each rule asks for, and the checks that fail before anything is submitted.

Rules keep generic resources in the config (``resources.<rule>: {gpus, cpus_per_gpu, mem_mb, runtime}``, minutes
and MB); :func:`rule_resources` turns one entry into the names the Snakemake SLURM executor plugin reads
(``gpu``, ``gpu_model``, ``nodes``, ``cpus_per_gpu``, ``mem_mb``, ``runtime``, ``slurm_partition``,
``slurm_account``, ``slurm_extra``) -- so ``--gpus=h100:4 --nodes=1 --cpus-per-gpu=4 --mem ... -t ...`` -- and
makes ``mem_mb``/``runtime`` grow with the attempt (a retried job gets more). Where jobs go (partition, account)
comes from the config section ``cluster`` or, when that is empty, the environment (:func:`placement`); nothing
about a particular cluster is written in the repository.

Checks with one clear message each (:class:`ClusterError`), run by the ``onstart`` hook of ``rules/cluster.smk``
before the first job starts, on the jobs that will really run:

* :func:`check_slurm_requests` -- a partition that does not exist; a GPU job sent to a partition without GPU
  nodes (or without enough GPUs of the model on one node); memory, CPUs or time beyond every node/limit of the
  partition;
* :func:`check_local_gpus` -- a GPU job about to run on a machine (or allocation) without the GPUs it needs;
* :func:`check_parallelism` (parse time) -- the training launcher's ``--num_processes`` and the vLLM tensor
  parallel size against the GPUs each job asks for.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

#: Settings of the config section ``cluster`` and their defaults (schemas/config.schema.yaml documents them).
DEFAULTS = {
    "partition": "",
    "gpu_partition": "",
    "account": "",
    "gpu_model": "",
    "retry_growth": {"runtime": 1.5, "mem_mb": 1.25},
    "max_runtime": 0,
    "max_mem_mb": 0,
}

#: Environment variables read when the config leaves a placement empty (first set one wins). SBATCH_* are
#: sbatch's own input variables: honoured here because the executor passes -p/-A explicitly, which would
#: otherwise override them.
ENV = {
    "partition": ("ROCKTOKENS_PARTITION", "SBATCH_PARTITION"),
    "gpu_partition": ("ROCKTOKENS_GPU_PARTITION",),
    "account": ("ROCKTOKENS_ACCOUNT", "SBATCH_ACCOUNT"),
}

#: Rules that are launched with ``training.launcher`` (one process per GPU) and rules whose generation runs in
#: vLLM with ``generation.tensor_parallel_size`` (GPU count must be a multiple of it).
LAUNCHED_RULES = ("stage1_kd", "stage2_opd", "opd_arm")


class ClusterError(RuntimeError):
    """A job cannot run where it is sent; the message names the rule, what it asks for and what to change."""


def settings(config: Mapping) -> dict:
    """The ``cluster`` config section with defaults filled in."""
    c = {**DEFAULTS, **(config.get("cluster") or {})}
    c["retry_growth"] = {**DEFAULTS["retry_growth"], **(c.get("retry_growth") or {})}
    return c


def _from_env(key: str, env: Mapping[str, str]) -> str:
    for var in ENV[key]:
        if env.get(var):
            return env[var]
    return ""


def placement(config: Mapping, gpu: bool, env: Mapping[str, str] | None = None) -> dict:
    """``slurm_partition``/``slurm_account`` of a job: config first, then the environment, else left out.

    GPU jobs use ``gpu_partition`` (config, then ``$ROCKTOKENS_GPU_PARTITION``) and fall back to ``partition``;
    a job without a partition goes to the cluster's default partition (the executor asks ``sinfo``).
    """
    env = os.environ if env is None else env
    c = settings(config)
    part = ""
    if gpu:
        part = c["gpu_partition"] or _from_env("gpu_partition", env)
    part = part or c["partition"] or _from_env("partition", env)
    account = c["account"] or _from_env("account", env)
    out = {}
    if part:
        out["slurm_partition"] = part
    if account:
        out["slurm_account"] = account
    return out


def grown(base: int, factor: float, cap: int = 0) -> int | Callable:
    """``base`` on the first attempt, ``base * factor**(attempt-1)`` on retries, never above ``cap`` (0: none).

    Returned as a Snakemake resource callable (it receives ``attempt``); a plain int when nothing can grow.
    """
    base = int(base)
    if factor == 1.0:
        return min(base, cap) if cap else base

    def value(wildcards, attempt):
        v = int(round(base * factor ** (attempt - 1)))
        return min(v, cap) if cap else v

    value.__name__ = f"grown_{base}x{factor}"
    return value


def rule_resources(config: Mapping, rule: str) -> dict:
    """Snakemake ``resources:`` of ``rule`` from ``config["resources"]`` (``default`` when the rule is not listed).

    ``gpus`` stays (the local scheduler caps it: ``profiles/default`` gives ``gpus=4``); a GPU job also gets
    ``gpu`` (+ ``gpu_model``), ``nodes=1`` (all its GPUs on one node, as FSDP and vLLM TP need) and
    ``cpus_per_gpu`` for the SLURM executor. Partition and account are not set here: ``rules/cluster.smk``
    places every rule, these included (:func:`placement`).
    """
    table = config["resources"]
    spec = dict(table.get(rule, table["default"]))
    c = settings(config)
    gpus = int(spec.pop("gpus", 0) or 0)
    cpus_per_gpu = spec.pop("cpus_per_gpu", None)
    out: dict = {}
    if "mem_mb" in spec:
        out["mem_mb"] = grown(spec.pop("mem_mb"), float(c["retry_growth"]["mem_mb"]), int(c["max_mem_mb"]))
    if "runtime" in spec:
        out["runtime"] = grown(spec.pop("runtime"), float(c["retry_growth"]["runtime"]), int(c["max_runtime"]))
    out.update(spec)  # slurm_extra
    out["gpus"] = gpus
    if gpus:
        out["gpu"] = gpus
        out["nodes"] = 1
        if cpus_per_gpu:
            out["cpus_per_gpu"] = int(cpus_per_gpu)
        if c["gpu_model"]:
            out["gpu_model"] = c["gpu_model"]
    return out


def asks_for_gpus(resources: Mapping) -> bool:
    """Whether a rule's declared resources ask for GPUs (``gpu``/``gpus`` > 0 or a ``gpu`` GRES)."""
    for key in ("gpu", "gpus"):
        if key in resources.keys():
            v = resources[key]
            try:
                v = getattr(v, "value", v)  # a Snakemake Resource; callables are not evaluated here
            except ValueError:
                return True
            if isinstance(v, int) and v > 0 or callable(v):
                return True
    gres = resources["gres"] if "gres" in resources.keys() else None
    return "gpu" in str(getattr(gres, "_value", gres) or "")


# ----------------------------------------------------------------------------------------------- parse time
def _num_processes(launcher: str) -> int | None:
    args = shlex.split(launcher)
    for i, a in enumerate(args):
        if a == "--num_processes" and i + 1 < len(args):
            return int(args[i + 1])
        if a.startswith("--num_processes="):
            return int(a.split("=", 1)[1])
    return None


def check_parallelism(config: Mapping) -> None:
    """Processes and tensor-parallel groups must fit the GPUs each job asks for (one clear error otherwise)."""
    table = config["resources"]
    problems = []
    nproc = _num_processes(config["training"]["launcher"])
    for rule in LAUNCHED_RULES:
        gpus = int(table.get(rule, table["default"]).get("gpus", 0) or 0)
        if gpus and nproc is not None and nproc != gpus:
            problems.append(f"training.launcher starts --num_processes {nproc} but resources.{rule}.gpus is {gpus}")
        if gpus and nproc is None and config["training"]["launcher"].split()[0] != "python":
            problems.append(f"training.launcher has no --num_processes; resources.{rule}.gpus is {gpus}")
    tp = int(config.get("generation", {}).get("tensor_parallel_size", 1) or 1)
    if config.get("generation", {}).get("backend") == "vllm":
        for rule, spec in table.items():
            gpus = int(spec.get("gpus", 0) or 0)
            if gpus and gpus % tp:
                problems.append(f"generation.tensor_parallel_size {tp} does not divide resources.{rule}.gpus {gpus}")
    if problems:
        raise ClusterError("GPU layout of the config is inconsistent: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Request:
    """What one job asks the scheduler for (evaluated resources of a Snakemake job)."""

    rule: str
    partition: str = ""  # "" = the cluster's default partition
    gpus: int = 0
    gpu_model: str = ""
    mem_mb: int = 0
    runtime: int = 0  # minutes
    cpus: int = 1

    @classmethod
    def from_resources(cls, rule: str, res: Mapping, threads: int = 1) -> "Request":
        def get(k, default=None):
            v = res.get(k, default)
            if v is None or v == "":
                return default
            if isinstance(v, str) and v.isdigit():
                return int(v)
            return default if type(v).__name__ == "TBDString" else v  # not yet known (input-size dependent)

        gpus = int(get("gpu", 0) or get("gpus", 0) or 0)
        gres = str(get("gres", "") or "")
        model = str(get("gpu_model", "") or "")
        if not gpus and gres.startswith("gpu"):
            parts = gres.split(":")
            gpus = int(parts[-1]) if parts[-1].isdigit() else 1
            model = model or (parts[1] if len(parts) == 3 else "")
        if get("cpus_per_task"):
            cpus = int(get("cpus_per_task"))
        elif gpus and get("cpus_per_gpu"):
            cpus = int(get("cpus_per_gpu")) * gpus
        else:
            cpus = int(threads or 1)
        return cls(rule=rule, partition=str(get("slurm_partition", "") or ""), gpus=gpus, gpu_model=model,
                   mem_mb=int(get("mem_mb", 0) or 0), runtime=int(get("runtime", 0) or 0), cpus=cpus)


def requests_of(jobs: Iterable, skip_local: bool = True) -> list[Request]:
    """:class:`Request` of each Snakemake job (``job.resources`` evaluated for the current attempt)."""
    out = []
    for job in jobs:
        if skip_local and getattr(job, "is_local", False):
            continue
        res = job.resources
        mapping = {k: res.get(k) for k in ("gpu", "gpus", "gres", "gpu_model", "cpus_per_task", "cpus_per_gpu",
                                           "slurm_partition", "mem_mb", "runtime")}
        out.append(Request.from_resources(job.rule.name, mapping, getattr(job, "threads", 1)))
    return out


# ----------------------------------------------------------------------------------------------- SLURM side
@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: dict = field(default_factory=dict)  # GPU model ("" if untyped) -> count


@dataclass
class SlurmInfo:
    """Partitions of a cluster: their nodes and time limits (from ``sinfo``)."""

    partitions: dict  # name -> list[Node]
    max_time: dict  # name -> minutes (None = unlimited)
    default: str = ""

    FORMAT = "%P|%N|%c|%m|%G|%l"

    @classmethod
    def parse(cls, text: str) -> "SlurmInfo":
        parts: dict = {}
        limits: dict = {}
        default = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            p, node, cpus, mem, gres, limit = line.strip().split("|")
            if p.endswith("*"):
                p = p[:-1]
                default = p
            parts.setdefault(p, []).append(Node(node, int(cpus.rstrip("+")), int(mem.rstrip("+")), parse_gres(gres)))
            limits[p] = parse_time(limit)
        return cls(parts, limits, default)

    @classmethod
    def query(cls) -> "SlurmInfo":
        if not shutil.which("sinfo"):
            raise ClusterError("the SLURM executor is selected but `sinfo` is not on PATH: run Snakemake on a "
                               "SLURM login node (or use the default profile for a local run)")
        r = subprocess.run(["sinfo", "-h", "-N", "-o", cls.FORMAT], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise ClusterError(f"cannot ask SLURM for its partitions (`sinfo` failed): {r.stderr.strip()}")
        return cls.parse(r.stdout)


def parse_gres(text: str) -> dict:
    """``gpu:h100:4(S:0-1),gpu:a100:2`` -> ``{"h100": 4, "a100": 2}``; ``gpu:4`` -> ``{"": 4}``; ``(null)`` -> {}."""
    out: dict = {}
    for item in re.sub(r"\([^)]*\)", "", text or "").split(","):
        bits = item.strip().split(":")
        if not bits or bits[0] != "gpu":
            continue
        count = int(bits[-1]) if len(bits) > 1 and bits[-1].isdigit() else 1
        model = bits[1] if len(bits) == 3 else ("" if len(bits) <= 2 or bits[1].isdigit() else bits[1])
        out[model] = out.get(model, 0) + count
    return out


def parse_time(text: str) -> int | None:
    """SLURM time limit (``infinite``, ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in minutes."""
    t = text.strip().lower()
    if t in ("infinite", "unlimited", "n/a", ""):
        return None
    days = 0
    if "-" in t:
        d, t = t.split("-", 1)
        days = int(d)
    f = [int(x) for x in t.split(":")]
    h, m, s = ([0] * (3 - len(f)) + f) if len(f) > 1 else (0, f[0], 0)
    return days * 1440 + h * 60 + m + (1 if s else 0)


def _gpus_on(node: Node, model: str) -> int:
    if not model:
        return sum(node.gpus.values())
    return node.gpus.get(model, 0)


def check_slurm_requests(requests: Iterable[Request], info: SlurmInfo) -> None:
    """Every request fits at least one node of its partition; else one :class:`ClusterError` listing each rule."""
    problems: dict = {}
    known = ", ".join(sorted(info.partitions)) or "none"
    for r in requests:
        names = [p for p in r.partition.split(",") if p] or ([info.default] if info.default else [])
        if not names:
            problems.setdefault((r.rule, "nopart"), f"rule {r.rule}: no partition given and the cluster has no "
                                "default partition; set cluster.partition or $ROCKTOKENS_PARTITION")
            continue
        missing = [p for p in names if p not in info.partitions]
        if missing:
            problems.setdefault((r.rule, "part"), (
                f"rule {r.rule}: SLURM partition {', '.join(repr(p) for p in missing)} does not exist on this "
                f"cluster (partitions: {known}); set cluster.{'gpu_partition' if r.gpus else 'partition'} in the "
                f"config or ${'ROCKTOKENS_GPU_PARTITION' if r.gpus else 'ROCKTOKENS_PARTITION'}"))
            continue
        nodes = [n for p in names for n in info.partitions[p]]
        where = f"partition {'/'.join(names)}"
        if r.gpus:
            gpu_nodes = [n for n in nodes if _gpus_on(n, r.gpu_model) >= r.gpus]
            if not gpu_nodes:
                have = sorted({f"{n.name}: " + (", ".join(f"{m or 'gpu'}x{c}" for m, c in n.gpus.items()) or "no GPUs")
                               for n in nodes})
                what = f"{r.gpus} {r.gpu_model.upper() + ' ' if r.gpu_model else ''}GPU{'s' if r.gpus > 1 else ''}"
                problems.setdefault((r.rule, "gpu"), (
                    f"rule {r.rule} is a GPU rule ({what} on one node) but no node of {where} has them "
                    f"({'; '.join(have[:4])}{'; ...' if len(have) > 4 else ''}); send GPU rules to a GPU "
                    "partition with cluster.gpu_partition or $ROCKTOKENS_GPU_PARTITION "
                    "(or set cluster.gpu_model to the GRES type the nodes report)"))
                continue
            nodes = gpu_nodes
        if r.mem_mb and not any(n.mem_mb >= r.mem_mb for n in nodes):
            problems.setdefault((r.rule, "mem"), (
                f"rule {r.rule} asks for {r.mem_mb} MB of memory but the largest node of {where} has "
                f"{max(n.mem_mb for n in nodes)} MB; lower resources.{r.rule}.mem_mb or cap retries with cluster.max_mem_mb"))
        if r.cpus and not any(n.cpus >= r.cpus for n in nodes):
            problems.setdefault((r.rule, "cpu"), (
                f"rule {r.rule} asks for {r.cpus} CPUs on one node but the largest node of {where} has "
                f"{max(n.cpus for n in nodes)}; lower threads or resources.{r.rule}.cpus_per_gpu"))
        limits = [info.max_time.get(p) for p in names]
        if r.runtime and all(lim is not None and r.runtime > lim for lim in limits):
            problems.setdefault((r.rule, "time"), (
                f"rule {r.rule} asks for {r.runtime} min but {where} allows at most {max(limits)} min; "
                f"lower resources.{r.rule}.runtime or cap retries with cluster.max_runtime"))
    if problems:
        raise ClusterError("SLURM pre-flight check failed, nothing was submitted:\n  - "
                           + "\n  - ".join(problems.values()))


def visible_gpus(env: Mapping[str, str] | None = None) -> int:
    """GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``, else 0."""
    env = os.environ if env is None else env
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return len([d for d in cvd.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return sum(1 for line in r.stdout.splitlines() if line.startswith("GPU "))
    return 0


def check_local_gpus(requests: Iterable[Request], available: int) -> None:
    """GPU jobs about to run here need ``available`` >= their GPU count; else one :class:`ClusterError`."""
    short = {}
    for r in requests:
        if r.gpus > available:
            short.setdefault(r.rule, r.gpus)
    if short:
        rules = ", ".join(f"{k} ({v} GPUs)" for k, v in sorted(short.items()))
        raise ClusterError(
            f"GPU rule(s) {rules} would run on this machine, which has {available} visible GPU(s); run them where "
            "the GPUs are: through SLURM (`--workflow-profile profiles/slurm-h100`), or on a GPU node / in an "
            "allocation with that many GPUs. Nothing was started.")


def preflight(workflow) -> None:
    """``onstart`` hook: check the jobs about to run against where they will run (main Snakemake process only)."""
    if not workflow.is_main_process or workflow.dryrun:
        return
    jobs = [j for j in workflow.dag.needrun_jobs() if not getattr(j, "is_group", lambda: False)()]
    plugin = getattr(workflow.executor_plugin, "name", "")
    if plugin == "slurm":
        check_slurm_requests(requests_of(jobs, skip_local=True), SlurmInfo.query())
    elif workflow.local_exec and not getattr(workflow, "touch", False):
        reqs = [r for r in requests_of(jobs, skip_local=False) if r.gpus]
        if reqs:
            check_local_gpus(reqs, visible_gpus())
