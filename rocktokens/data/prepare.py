"""Normalise a staged hub dataset into the workflow's schema, and validate any prepared dataset.

The schema (:data:`COLUMNS`): ``id`` (unique str), ``prompt`` (the user message), ``answer`` (str,
``""`` when there is none), ``checker`` (``"math"``, ``"ifeval:<json>"`` or the world's
``"instruction:<rule>"``).

A dataset adapter (config ``datasets.<name>``, see schemas/config.schema.yaml) says where each
column comes from. Field paths are dotted and may index lists: ``conversations.0.value`` is the
``value`` of the first element of the ``conversations`` column. The staged parquet is already the
slice ``[start:stop]`` of the (filtered) source -- :func:`rocktokens.data.hub.stage_dataset` cuts
it -- so :func:`normalise` never slices; it re-applies ``filter`` (idempotent on staged data) and
numbers rows from ``start`` so that ids without an ``id_field`` are source positions.
"""
from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rocktokens.checking.checker import last_boxed  # the one \boxed{} reader, shared with answer checking

COLUMNS = ["id", "prompt", "answer", "checker"]
#: Datasets that are training prompts (no gold answer needed); every other name is a benchmark.
PROMPT_SETS = ("stage1_prompts", "stage2_prompts")
#: The IFEval fields the "ifeval" checker is built from (google/IFEval's column names).
IFEVAL_FIELDS = ("instruction_id_list", "kwargs")

_MISSING = object()


class DataError(ValueError):
    """A dataset cannot be normalised or fails validation; the message names the dataset."""


# --------------------------------------------------------------------------------------------
# field access


def _is_sequence(x: Any) -> bool:
    return isinstance(x, (np.ndarray, list, tuple)) or (
        isinstance(x, Sequence) and not isinstance(x, (str, bytes))
    )


def get_field(record: Mapping, path: str) -> Any:
    """Value at a dotted ``path`` of one record; integer segments index lists (``-1`` = last).

    A top-level key that itself contains dots is matched whole first. Raises :class:`KeyError`
    naming the path and the failing segment.
    """
    if path in record:
        return record[path]
    cur: Any = record
    parts = path.split(".")
    for k, part in enumerate(parts):
        where = ".".join(parts[: k + 1])
        if isinstance(cur, Mapping):
            if part not in cur:
                raise KeyError(f"field {path!r}: no key {part!r} at {where!r} (keys: {sorted(map(str, cur))})")
            cur = cur[part]
        elif _is_sequence(cur):
            try:
                idx = int(part)
            except ValueError:
                raise KeyError(f"field {path!r}: {where!r} indexes a list, but {part!r} is not an integer") from None
            if not -len(cur) <= idx < len(cur):
                raise KeyError(f"field {path!r}: index {idx} out of range at {where!r} (length {len(cur)})")
            cur = cur[idx]
        else:
            raise KeyError(f"field {path!r}: cannot descend into a {type(cur).__name__} at {where!r}")
    return cur


# --------------------------------------------------------------------------------------------
# answers


def _is_missing(value: Any) -> bool:
    """None, pd.NA or a float NaN (how pandas' string columns hold a missing value)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _answer_str(value: Any) -> str:
    """A gold answer as a string: integers (also integral floats, e.g. ``204.0``) without a
    decimal point, strings stripped, missing values as ``""``."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return ""
        return str(int(f)) if f.is_integer() else repr(f)
    return str(value).strip()


def _plain(x: Any) -> Any:
    """numpy/pandas values -> JSON-able Python; ``None`` entries of dicts dropped (the hub stores
    IFEval kwargs as one struct with every key, unused ones null); integral floats -> int."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items() if v is not None and not _isnan(v)}
    if _is_sequence(x):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, numbers.Real):
        f = float(x)
        return int(f) if f.is_integer() else f
    return x


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def ifeval_checker(instruction_id_list: Any, kwargs: Any) -> str:
    """The checker string of an IFEval row: ``"ifeval:" + JSON`` of its instructions and kwargs."""
    ids = [str(i) for i in _plain(instruction_id_list)]
    kw = _plain(kwargs) if kwargs is not None else [{} for _ in ids]
    if len(ids) != len(kw):
        raise ValueError(f"{len(ids)} instruction ids but {len(kw)} kwargs entries")
    if not ids:
        raise ValueError("empty instruction_id_list")
    return "ifeval:" + json.dumps({"instruction_id_list": ids, "kwargs": kw}, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# normalise (hub data) and validate (both scales)


def matches(value: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)):
        return any(matches(value, w) for w in want)
    if isinstance(value, np.generic):
        value = value.item()
    return value == want


def read_dataset_file(path) -> pd.DataFrame:
    """A local dataset file (``datasets.<name>.path`` of ``source: checkpoints``): .parquet, .jsonl or .json."""
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".jsonl":
        return pd.read_json(p, lines=True, dtype=False)
    if p.suffix == ".json":
        return pd.read_json(p, dtype=False)
    raise DataError(f"dataset file {p}: expected .parquet, .jsonl or .json")


def prepare(raw: pd.DataFrame, spec: dict, name: str) -> pd.DataFrame:
    """The workflow's schema from a raw dataset: through its adapter (``prompt_field`` … of ``spec``), or -- a
    local file without adapter fields -- validated as already being in the schema."""
    if "prompt_field" in spec:
        return normalise(raw, spec, name)
    return validate_prepared(raw, name)


def normalise(raw: pd.DataFrame, spec: dict, name: str) -> pd.DataFrame:
    """Map one staged hub dataset onto :data:`COLUMNS` following its adapter ``spec``.

    ``spec`` keys (config ``datasets.<name>``): ``prompt_field`` and ``checker`` (``"math"`` |
    ``"ifeval"``) required; ``id_field`` (else ids are ``f"{name}-{start + row:05d}"``),
    ``answer_field`` (else ``""``), ``answer_from_boxed`` (the answer is the last ``\\boxed{}`` of
    the answer field, e.g. MATH-500's ``solution``), ``filter`` (``{field: value | [values]}``,
    rows kept when every field matches), ``start``. The result is validated.
    """
    checker = spec.get("checker")
    if checker not in ("math", "ifeval"):
        raise DataError(f"dataset {name!r}: unknown checker {checker!r} (use 'math' or 'ifeval')")
    if "prompt_field" not in spec:
        raise DataError(f"dataset {name!r}: the adapter needs a 'prompt_field'")

    records = raw.to_dict("records")
    available = list(raw.columns)
    paths = [spec["prompt_field"], *(spec[k] for k in ("id_field", "answer_field") if spec.get(k))]
    paths += list((spec.get("filter") or {}).keys())
    if checker == "ifeval":
        paths += list(IFEVAL_FIELDS)
    for p in paths:
        if p not in available and p.split(".")[0] not in available:
            raise DataError(f"dataset {name!r}: field {p!r} is not in the staged data (columns: {available})")

    def field(rec: Mapping, path: str, row: int) -> Any:
        try:
            return get_field(rec, path)
        except KeyError as e:
            raise DataError(f"dataset {name!r}, row {row}: {e.args[0]}") from None

    flt = spec.get("filter") or {}
    if flt:
        records = [r for i, r in enumerate(records) if all(matches(field(r, k, i), v) for k, v in flt.items())]

    start = int(spec.get("start", 0))
    out, unboxed = [], []
    for i, rec in enumerate(records):
        if spec.get("id_field"):
            key = _answer_str(field(rec, spec["id_field"], i))
            if not key:
                raise DataError(f"dataset {name!r}, row {i}: id field {spec['id_field']!r} is missing")
            rid = f"{name}-{key}"
        else:
            rid = f"{name}-{start + i:05d}"
        prompt = field(rec, spec["prompt_field"], i)
        prompt = "" if _is_missing(prompt) else str(prompt).strip()
        answer = ""
        if spec.get("answer_field"):
            value = field(rec, spec["answer_field"], i)
            if spec.get("answer_from_boxed"):
                boxed = last_boxed(None if value is None else str(value))
                if boxed is None:
                    unboxed.append(rid)
                answer = boxed or ""
            else:
                answer = _answer_str(value)
        if checker == "ifeval":
            try:
                chk = ifeval_checker(field(rec, "instruction_id_list", i), field(rec, "kwargs", i))
            except (TypeError, ValueError) as e:
                raise DataError(f"dataset {name!r}, row {i} ({rid}): bad IFEval instructions: {e}") from None
        else:
            chk = "math"
        out.append((rid, prompt, answer, chk))
    if unboxed:
        raise DataError(
            f"dataset {name!r}: {len(unboxed)} row(s) have no \\boxed{{}} in field {spec['answer_field']!r} "
            f"(answer_from_boxed), e.g. {unboxed[:5]}"
        )
    df = pd.DataFrame(out, columns=COLUMNS, dtype=object)
    return validate_prepared(df, name)


def _checker_error(chk: Any) -> str | None:
    if not isinstance(chk, str) or not chk:
        return "empty checker"
    if chk == "math" or (chk.startswith("instruction:") and len(chk) > len("instruction:")):
        return None
    if chk.startswith("ifeval:"):
        try:
            obj = json.loads(chk[len("ifeval:") :])
        except json.JSONDecodeError as e:
            return f"ifeval checker is not JSON ({e})"
        if not isinstance(obj, dict) or set(obj) != set(IFEVAL_FIELDS):
            return f"ifeval checker must hold exactly {list(IFEVAL_FIELDS)}"
        ids, kw = obj["instruction_id_list"], obj["kwargs"]
        if not isinstance(ids, list) or not isinstance(kw, list) or len(ids) != len(kw) or not ids:
            return "ifeval checker needs equally long, non-empty instruction_id_list and kwargs lists"
        return None
    return f"unknown checker {chk[:40]!r} (expected 'math', 'ifeval:<json>' or 'instruction:<rule>')"


def validate_prepared(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Check a prepared dataset and return its :data:`COLUMNS` (in order, as str objects).

    Fails with one :class:`DataError` naming the dataset when a column is missing, the dataset is
    empty, an id is empty or repeated, a prompt is empty, a value is not a string, a checker is
    malformed, or a math benchmark row has no gold answer.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"dataset {name!r}: missing column(s) {missing} (has {list(df.columns)})")
    if len(df) == 0:
        raise DataError(
            f"dataset {name!r} is empty: no rows after preparation "
            "(check its hub split, start/stop slice and filter, or the world split sizes)"
        )
    df = df[COLUMNS].reset_index(drop=True)
    for c in COLUMNS:
        bad = [i for i, v in enumerate(df[c]) if not isinstance(v, str)]
        if bad:
            raise DataError(f"dataset {name!r}: column {c!r} must hold strings; rows {bad[:5]} do not")
    empty_ids = [i for i, v in enumerate(df["id"]) if not v.strip()]
    if empty_ids:
        raise DataError(f"dataset {name!r}: empty id in rows {empty_ids[:5]}")
    dup = df["id"][df["id"].duplicated(keep=False)]
    if len(dup):
        raise DataError(f"dataset {name!r}: {dup.nunique()} id(s) are not unique, e.g. {sorted(set(dup))[:5]}")
    empty = df["id"][[not p.strip() for p in df["prompt"]]].tolist()
    if empty:
        raise DataError(f"dataset {name!r}: {len(empty)} empty prompt(s), e.g. {empty[:5]}")
    for rid, chk in zip(df["id"], df["checker"]):
        err = _checker_error(chk)
        if err:
            raise DataError(f"dataset {name!r}, id {rid!r}: {err}")
    if name not in PROMPT_SETS:
        no_gold = df["id"][(df["checker"] == "math") & (df["answer"].str.strip() == "")].tolist()
        if no_gold:
            raise DataError(f"dataset {name!r}: {len(no_gold)} math benchmark row(s) without a gold answer, e.g. {no_gold[:5]}")
    return df.astype(object)
