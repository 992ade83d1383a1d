"""Staging from the Hugging Face hub (paper scale): model snapshots and dataset slices.

Both functions need network access to the hub and are meant for a login node (the staging rules
are ``localrule``). Without it they fail at once with one :class:`RuntimeError` saying so; nothing
half-written is left at the output path.

* :func:`stage_model` -- ``huggingface_hub.snapshot_download`` of the weights, config and tokenizer
  at a pinned revision. The revision is resolved to its commit first and the download uses that
  commit, so a branch that moves mid-download cannot mix two versions. Files go into a sibling
  ``.<name>.partial`` directory (a killed download resumes there) that is renamed onto the output
  when complete; ``STAGED.json`` in the output records hub id, requested revision and commit.
* :func:`stage_dataset` -- ``datasets.load_dataset(..., streaming=True)`` at the resolved commit,
  rows matching ``filter`` (if any), then the slice ``[start:stop]`` of those rows, written to one
  parquet file atomically. Streaming reads only as far as ``stop`` (OpenThoughts3-1.2M is ~28 GB).

``datasets`` and ``huggingface_hub`` are imported lazily: the rest of the package, the tests and a
dry run need neither.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rocktokens.core.io import read_json

log = logging.getLogger("rocktokens.data.hub")

#: What a model snapshot needs: weights, configs, tokenizer files, chat template, licence.
MODEL_ALLOW_PATTERNS = [
    "*.json",  # config.json, generation_config.json, tokenizer*.json, model.safetensors.index.json
    "*.safetensors",
    "merges.txt",
    "vocab.json",
    "*.tiktoken",
    "*.jinja",
    "LICENSE*",
    "README.md",
]

_HINT = (
    "run this rule on a login node (or any machine that can reach huggingface.co; set HF_TOKEN for "
    "gated repos), e.g. `snakemake --configfile configs/paper.yaml --until {rule}`, then run the rest "
    "where you like"
)


def _import(module: str, purpose: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise ImportError(
            f"{purpose} needs the `{module}` package, which is not installed here: `pip install {module}` "
            "(envs/cpu.yaml and envs/gpu.yaml pin it)"
        ) from e


def _is_network_error(exc: BaseException) -> bool:
    """True when ``exc`` (or anything in its cause/context chain) means the hub was unreachable."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        names = {c.__name__ for c in type(e).__mro__}
        if names & {
            "LocalEntryNotFoundError",  # huggingface_hub: no connection and nothing in the cache
            "OfflineModeIsEnabled",
            "ConnectionError",  # builtin, requests and datasets
            "ConnectError",  # httpx
            "ConnectTimeout",
            "ReadTimeout",
            "TimeoutException",
            "TimeoutError",
            "NetworkError",
            "RemoteProtocolError",
            "ProxyError",
            "SSLError",
        }:
            return True
        e = e.__cause__ or e.__context__
    return False


def _network_guard(kind: str, name: str, rule: str):
    """Context manager: turn hub connection failures into one clear RuntimeError."""
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except Exception as e:
            if _is_network_error(e):
                raise RuntimeError(
                    f"staging {kind} {name} needs network access to the Hugging Face hub; "
                    + _HINT.format(rule=rule)
                    + f". (cause: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
                ) from e
            raise

    return guard()


def resolve_revision(hub_id: str, revision: str | None, repo_type: str = "model") -> str:
    """The commit sha that ``revision`` (branch, tag or sha; default ``main``) names right now."""
    hf = _import("huggingface_hub", f"staging {repo_type} {hub_id}")
    api = hf.HfApi()
    info = (api.model_info if repo_type == "model" else api.dataset_info)(hub_id, revision=revision or "main")
    return info.sha


def stage_model(hub_id: str, revision: str | None, out_dir, allow_patterns=None) -> Path:
    """Download ``hub_id`` at ``revision`` into ``out_dir`` (weights, config, tokenizer)."""
    hf = _import("huggingface_hub", f"staging model {hub_id}")
    out = Path(out_dir)
    partial = out.parent / f".{out.name}.partial"
    partial.parent.mkdir(parents=True, exist_ok=True)
    with _network_guard("model", hub_id, "stage_model"):
        sha = resolve_revision(hub_id, revision, "model")
        log.info("staging model %s revision %s = commit %s into %s", hub_id, revision, sha, out)
        hf.snapshot_download(
            repo_id=hub_id,
            revision=sha,
            local_dir=str(partial),
            allow_patterns=list(allow_patterns or MODEL_ALLOW_PATTERNS),
        )
    check_model_dir(partial, hub_id)
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # hub download bookkeeping, not the model
    (partial / "STAGED.json").write_text(
        json.dumps({"hub_id": hub_id, "revision": revision, "commit": sha}, indent=2, sort_keys=True)
    )
    if out.exists():
        shutil.rmtree(out)
    os.replace(partial, out)
    log.info("staged %s (%d files)", out, sum(1 for _ in out.rglob("*") if _.is_file()))
    return out


def check_model_dir(path, hub_id: str = "") -> None:
    """A usable HF model directory: config, tokenizer and at least one safetensors shard."""
    p = Path(path)
    problems = []
    if not (p / "config.json").is_file():
        problems.append("no config.json")
    if not any(p.glob("*.safetensors")):
        problems.append("no *.safetensors weights")
    if not ((p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file()):
        problems.append("no tokenizer.json/tokenizer_config.json")
    idx = p / "model.safetensors.index.json"
    if idx.is_file():
        shards = set(read_json(idx).get("weight_map", {}).values())
        lost = sorted(s for s in shards if not (p / s).is_file())
        if lost:
            problems.append(f"missing shards {lost[:3]}")
    if problems:
        raise RuntimeError(f"staged model {hub_id or p} is incomplete: {'; '.join(problems)}")


def _matches(example: dict, flt: dict) -> bool:
    from rocktokens.data.prepare import matches as match, get_field

    for key, want in flt.items():
        try:
            value = get_field(example, key)
        except KeyError:
            return False
        if not match(value, want):
            return False
    return True


def stage_dataset(spec: dict[str, Any], out_path, name: str = "") -> Path:
    """Stage rows ``[start:stop]`` of the (filtered) split of a hub dataset as one parquet file.

    ``spec`` is a config ``datasets.<name>`` entry: ``hub_id``, ``split`` (required), ``revision``
    (default ``main``), ``config_name``, ``start``/``stop``, ``filter``. Columns are kept as on the
    hub (nested ones too); :func:`rocktokens.data.prepare.normalise` maps them later. A ``hub_id``
    that is an existing local directory (an offline mirror of the repository) is read from disk.
    """
    label = name or spec["hub_id"]
    ds_lib = _import("datasets", f"staging dataset {label}")
    start, stop = int(spec.get("start", 0)), spec.get("stop")
    if stop is not None and int(stop) <= start:
        raise ValueError(f"dataset {label}: empty slice start={start} stop={stop}")
    flt = spec.get("filter") or {}
    local = Path(spec["hub_id"]).is_dir()  # an offline mirror (a directory of data files): no hub, no revision
    with _network_guard("dataset", f"{label} ({spec['hub_id']})", "stage_dataset"):
        sha = "local" if local else resolve_revision(spec["hub_id"], spec.get("revision"), "dataset")
        log.info("staging dataset %s: %s revision %s = commit %s, split %s, filter %s, rows [%s:%s]",
                 label, spec["hub_id"], spec.get("revision"), sha, spec["split"], flt, start, stop)
        ds = ds_lib.load_dataset(
            spec["hub_id"], name=spec.get("config_name"), split=spec["split"], streaming=True,
            **({} if local else {"revision": sha}),
        )
        rows = (ex for ex in ds if _matches(ex, flt)) if flt else iter(ds)
        rows = list(itertools.islice(rows, start, None if stop is None else int(stop)))
        features = ds.features
    if not rows:
        raise RuntimeError(f"dataset {label}: no rows in {spec['hub_id']}[{spec['split']}] slice [{start}:{stop}] with filter {flt}")
    if stop is not None and len(rows) < int(stop) - start:
        log.warning("dataset %s: only %d rows in [%s:%s] (source exhausted)", label, len(rows), start, stop)
    out = Path(out_path)
    from rocktokens.core.io import atomic_file

    with atomic_file(out) as tmp:
        table = ds_lib.Dataset.from_list(rows, features=features) if features is not None else ds_lib.Dataset.from_list(rows)
        table.to_parquet(str(tmp))
    meta = {"hub_id": spec["hub_id"], "revision": spec.get("revision"), "commit": sha, "rows": len(rows)}
    log.info("staged %s: %s", out, json.dumps(meta, sort_keys=True))
    return out
