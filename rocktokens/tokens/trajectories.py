"""The per-token KL table: trajectories of the post-OPD student teacher-forced under every scoring checkpoint.

Which trajectories are scored, and why: the paper estimates ℓ̄_v at the final checkpoint on that checkpoint's
own rollouts (Eq. 4, §2.3), and Eq. 5 pairs ℓ^pre and ℓ^post *per occurrence*. So the post-OPD student's
rollouts on the analysis benchmark are the one corpus, and each scorer (pre-OPD = stage-1, every OPD
checkpoint, post-OPD = the last) is teacher-forced on exactly those tokens. Rows are then aligned one-to-one
across scorers by (benchmark, problem_id, sample, position).

Layout: ``<dir>/scorer=<name>/part-0.parquet`` (hive-partitioned, zstd), columns in :data:`TOKEN_COLUMNS`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rocktokens.core.io import atomic_dir
from rocktokens.core.sequences import TokenSequence

log = logging.getLogger("rocktokens.tokens.trajectories")

TOKEN_COLUMNS = [
    "traj_ckpt", "benchmark", "problem_id", "sample", "position", "token_id", "qwen3_id", "token",
    "logp_student", "logp_teacher", "log_ratio", "rkl", "fkl", "entropy_student", "entropy_teacher",
]


def trajectories(rollouts: pd.DataFrame) -> list[TokenSequence]:
    """Prompt + response ids of every rollout; an empty response is an error (nothing to score)."""
    if rollouts.empty:
        raise ValueError("no rollouts to score (empty trajectory table)")
    empty = rollouts.index[rollouts["n_tokens"] == 0]
    if len(empty):
        r = rollouts.loc[empty[0]]
        raise ValueError(f"empty rollout: problem {r['problem_id']} sample {r['sample']} has no response tokens")
    return [TokenSequence(ids=list(p) + list(t), prompt_len=len(p))
            for p, t in zip(rollouts["prompt_ids"], rollouts["token_ids"])]


def token_strings(tokenizer, ids: np.ndarray) -> np.ndarray:
    """Decoded string of each single token id (looked up once per distinct id)."""
    uniq = np.unique(ids)
    table = {int(i): tokenizer.decode([int(i)]) for i in uniq}
    return np.array([table[int(i)] for i in ids], dtype=object)


def write_token_table(rollouts: pd.DataFrame, scored: dict[str, dict[str, np.ndarray]], tokenizer,
                      id_map: np.ndarray | None, out_dir) -> None:
    """One partition per scorer; identifiers joined from the rollouts, Qwen3 ids through ``id_map``."""
    first = next(iter(scored.values()))
    seq = first["seq"]
    ro = rollouts.reset_index(drop=True)
    ids = first["token_id"]
    qwen3 = id_map[ids] if id_map is not None else ids
    base = {
        "traj_ckpt": ro["checkpoint"].to_numpy()[seq], "benchmark": ro["benchmark"].to_numpy()[seq],
        "problem_id": ro["problem_id"].to_numpy()[seq], "sample": ro["sample"].to_numpy()[seq].astype(np.int32),
        "position": first["position"], "token_id": ids, "qwen3_id": np.asarray(qwen3, dtype=np.int32),
        "token": token_strings(tokenizer, ids),
    }
    with atomic_dir(out_dir) as tmp:
        for name, cols in scored.items():
            assert np.array_equal(cols["seq"], seq) and np.array_equal(cols["position"], base["position"])
            data = {**base, **{k: cols[k] for k in TOKEN_COLUMNS if k in cols and k not in base}}
            part = Path(tmp) / f"scorer={name}"
            part.mkdir()
            pq.write_table(pa.table({k: data[k] for k in TOKEN_COLUMNS}), part / "part-0.parquet", compression="zstd")
            log.info("scorer %s: %d token rows", name, len(seq))
