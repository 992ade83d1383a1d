"""``source: checkpoints`` -- analyse a distillation run trained elsewhere (KDFlow, verl, TRL, your own trainer).

The config names local HF checkpoint directories (section ``checkpoints``): the teacher, the student before OPD
(``pre_opd``, which plays the workflow's ``stage1``), the OPD checkpoints in training order (``opd``, which play
``opd-1 … opd-C``; the last is post-OPD) and, optionally, the student before any distillation (``student_base``).
Everything downstream of training then runs on them -- rollouts, the token table, the rock analysis, geometry and
persistence, knockout, evaluation, the report -- and no training or teacher-sampling job is planned. The freeze
arms, which need a trainer and stage-2 prompts, run only when ``checkpoints.stage2_prompts`` names a prompt file.

Everything here runs at parse time (``rules/common.smk``): :func:`resolve` derives the settings that follow from
the checkpoint list, :func:`check` stops with one :class:`ByoError` naming the key and the cause before any job.
"""
from __future__ import annotations
from rocktokens.core.io import read_json
from rocktokens.core.naming import opd_name

from pathlib import Path

__all__ = ["ByoError", "resolve", "check", "checkpoint_dirs", "freeze_on", "dataset_file", "needed_datasets",
           "TOKENIZER_FILES"]

#: A checkpoint directory must hold its tokenizer: one of these (with tokenizer_config.json).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


class ByoError(ValueError):
    """A ``source: checkpoints`` config that cannot run; the message names the key and what to change."""


def _byo(config: dict) -> bool:
    return config.get("source") == "checkpoints"


def checkpoint_dirs(config: dict) -> dict[str, str]:
    """Workflow checkpoint name -> directory: teacher, [student_base], stage1 (= pre_opd), opd-1 … opd-C."""
    ck = config["checkpoints"]
    out = {"teacher": ck["teacher"]}
    if ck.get("student_base"):
        out["student_base"] = ck["student_base"]
    out["stage1"] = ck["pre_opd"]
    out.update({opd_name(k): d for k, d in enumerate(ck["opd"], start=1)})
    return out


def freeze_on(config: dict) -> bool:
    """The freeze arms train from the pre-OPD checkpoint on stage-2 prompts: with source checkpoints only when
    ``checkpoints.stage2_prompts`` names them."""
    return not _byo(config) or bool(config["checkpoints"].get("stage2_prompts"))


def dataset_file(config: dict, name: str) -> str | None:
    """The local file a dataset is read from with source checkpoints (None: a staged hub dataset)."""
    if name == "stage2_prompts" and config["checkpoints"].get("stage2_prompts"):
        return config["checkpoints"]["stage2_prompts"]
    return config.get("datasets", {}).get(name, {}).get("path")


def resolve(config: dict) -> None:
    """Settings that follow from the checkpoint list (in place; nothing for other sources): the number of OPD
    checkpoints is the list's length, and the student base is evaluated only when it is given."""
    if not _byo(config):
        return
    if "checkpoints" not in config:
        raise ByoError("config key 'checkpoints': source 'checkpoints' needs the section checkpoints "
                       "{teacher, pre_opd, opd: [...]} (see configs/byo.example.yaml)")
    opd = config["checkpoints"].get("opd")
    if not isinstance(opd, list) or not opd:
        raise ByoError(f"config key 'checkpoints.opd': a list of OPD checkpoint directories in training order, "
                       f"got {opd!r}")
    config["stage2"]["n_checkpoints"] = len(opd)
    if not config["checkpoints"].get("student_base"):
        ev = config["evaluate"]
        ev["checkpoints"] = [c for c in ev["checkpoints"] if c != "student_base"]


def _vocab_of(d: Path) -> int:
    cfg = read_json(d / "config.json")
    v = cfg.get("vocab_size", cfg.get("text_config", {}).get("vocab_size"))
    if not isinstance(v, int):
        raise ByoError(f"checkpoint {d}: config.json has no vocab_size")
    return v


def _tokenizer_size(d: Path) -> int | None:
    """Entries of the tokenizer's vocabulary (model vocab + added tokens) when a tokenizer.json is there."""
    f = d / "tokenizer.json"
    if not f.exists():
        return None
    tj = read_json(f)
    ids = set((tj.get("model") or {}).get("vocab", {}).values()) | {t["id"] for t in tj.get("added_tokens", [])}
    return len(ids)


def _dataset_columns(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    from rocktokens.data import read_dataset_file

    return list(read_dataset_file(path).columns)


def needed_datasets(config: dict) -> list[str]:
    """The datasets a ``source: checkpoints`` run reads: its benchmarks, and the stage-2 prompts of the arms."""
    return list(config["benchmarks"]) + (["stage2_prompts"] if freeze_on(config) and _byo(config) else [])


def check(config: dict, needed: list[str]) -> None:
    """Every configured checkpoint is a model directory with its tokenizer, all share one vocabulary, and every
    local dataset in ``needed`` has the fields its adapter reads. One :class:`ByoError` naming the key otherwise."""
    if not _byo(config):
        return
    dirs = checkpoint_dirs(config)
    keys = {"teacher": "checkpoints.teacher", "student_base": "checkpoints.student_base", "stage1": "checkpoints.pre_opd",
            **{opd_name(k): f"checkpoints.opd[{k - 1}]" for k in range(1, len(config["checkpoints"]["opd"]) + 1)}}
    vocab, tok_size = {}, {}
    for name, d in dirs.items():
        p = Path(d)
        if not p.is_dir():
            raise ByoError(f"config key '{keys[name]}': {d} is not a directory")
        if not (p / "config.json").exists():
            raise ByoError(f"config key '{keys[name]}': {d} has no config.json (not a HF checkpoint directory)")
        if not (p / "tokenizer_config.json").exists() or not any((p / f).exists() for f in TOKENIZER_FILES):
            raise ByoError(f"config key '{keys[name]}': {d} has no tokenizer files (tokenizer_config.json and one of "
                           f"{', '.join(TOKENIZER_FILES)}): save the tokenizer with the checkpoint")
        vocab[name] = _vocab_of(p)
        if name in ("teacher", "stage1"):  # the tokenizer the workflow reads and the teacher's (parse time: the
            tok_size[name] = _tokenizer_size(p)  # others' heads are compared by config; token_kl checks each)
    if len(set(vocab.values())) > 1 or len({v for v in tok_size.values() if v is not None}) > 1:
        rows = ", ".join(f"{n} {vocab[n]} rows" + (f" / tokenizer {tok_size[n]}" if n in tok_size else "") for n in dirs)
        raise ByoError(f"config key 'checkpoints': the checkpoints do not share one vocabulary ({rows}); token-level "
                       f"KL between teacher and student needs the same tokenizer")
    for name in needed:
        spec = dict(config.get("datasets", {}).get(name, {}))
        path = dataset_file(config, name)
        if path is None and "hub_id" not in spec:
            raise ByoError(f"config key 'datasets.{name}': source 'checkpoints' needs this dataset (a local file under "
                           f"'path', or a hub dataset)")
        if path is None:
            continue
        key = "checkpoints.stage2_prompts" if name == "stage2_prompts" else f"datasets.{name}.path"
        if name == "stage2_prompts":
            spec = {}  # a prompt file in the workflow's schema
        p = Path(path)
        if not p.is_file():
            raise ByoError(f"config key '{key}': {p} is not a file")
        cols = _dataset_columns(p)
        fields = [spec[k].split(".")[0] for k in ("id_field", "prompt_field", "answer_field") if k in spec]
        if "prompt_field" not in spec:  # already in the workflow's schema
            fields = ["id", "prompt", "answer", "checker"]
        elif "checker" not in spec:
            raise ByoError(f"config key 'datasets.{name}.checker': with prompt_field the checker must be named")
        elif spec["checker"] == "math" and "answer_field" not in spec and not name.endswith("_prompts"):
            raise ByoError(f"config key 'datasets.{name}.answer_field': the math checker needs the gold answers")
        missing = [f for f in fields if f not in cols]
        if missing:
            raise ByoError(f"config key 'datasets.{name}': {p} has no field(s) {missing} (columns: {cols})")
