"""Prompt sets → generations: teacher samples (stage-1 data) and benchmark evaluation (pass@1).

Seeds are a pure function of (config seed, purpose, dataset, problem id, sample index), so every checkpoint
is evaluated with the same seeds per problem (paired comparisons) and a rerun reproduces its outputs.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from rocktokens.generation import GenerationRequest, SamplingParams, make_backend
from rocktokens.core.seeding import derive_seed
from rocktokens.core.prompts import encode_prompt, stop_ids

log = logging.getLogger("rocktokens.generation.sampling")


def sampling_params(cfg: dict) -> SamplingParams:
    return SamplingParams(temperature=cfg["temperature"], top_p=cfg["top_p"], max_new_tokens=cfg["max_new_tokens"])


def open_backend(model_dir, tokenizer, generation: dict, seed: int):
    """The configured generation backend for a checkpoint directory (config section ``generation``)."""
    import torch

    if generation["backend"] == "hf":
        opts = {"pad_id": tokenizer.pad_token_id, "dtype": getattr(torch, generation.get("dtype", "float32")),
                "n_tokens": len(tokenizer)}
    else:
        keys = ("tensor_parallel_size", "dtype", "gpu_memory_utilization", "max_model_len")
        opts = {k: generation[k] for k in keys if k in generation} | {"seed": seed, "n_tokens": len(tokenizer)}
    return make_backend(generation["backend"], str(model_dir), stop_ids=stop_ids(tokenizer),
                        batch_size=generation["batch_size"], **opts)


def generate_for_prompts(backend, tokenizer, df: pd.DataFrame, n: int, params: SamplingParams, seed: int,
                         purpose: str, dataset: str) -> pd.DataFrame:
    """``n`` samples for each row of ``df`` (columns id, prompt): one output row per (problem, sample)."""
    if df.empty:
        raise ValueError(f"{dataset}: no problems to generate for (empty prompt set)")
    if n < 1:
        raise ValueError(f"number of samples per problem must be >= 1, got {n}")
    prompt_ids = [encode_prompt(tokenizer, p) for p in df["prompt"]]
    reqs, keys = [], []
    for pid, ids in zip(df["id"], prompt_ids):
        for s in range(n):
            reqs.append(GenerationRequest(prompt_ids=tuple(ids), seed=derive_seed(seed, purpose, dataset, pid, s)))
            keys.append((pid, s))
    results = backend.generate(reqs, params)
    rows = []
    for (pid, s), q, r in zip(keys, reqs, results):
        rows.append({
            "id": pid, "sample": s, "prompt_ids": list(q.prompt_ids), "token_ids": list(r.token_ids),
            "logprobs": list(r.logprobs), "finish_reason": r.finish_reason,
            "response": tokenizer.decode(r.token_ids, skip_special_tokens=True),
            "n_tokens": len(r.token_ids),
        })
    return pd.DataFrame(rows)


def teacher_samples(backend, tokenizer, prompts: pd.DataFrame, cfg: dict, seed: int) -> pd.DataFrame:
    """The teacher answers each stage-1 prompt once (paper: T=0.6, top_p=0.95)."""
    out = generate_for_prompts(backend, tokenizer, prompts, 1, sampling_params(cfg), seed, "teacher-samples", "stage1")
    out = out.merge(prompts[["id", "prompt"]], on="id").drop(columns=["sample"])
    empty = int((out["n_tokens"] == 0).sum())
    if empty == len(out):
        raise ValueError("every teacher sample is empty")
    log.info("teacher samples: %d, mean length %.1f, stopped %.1f%%", len(out), out["n_tokens"].mean(),
             100 * (out["finish_reason"] == "stop").mean())
    return out[["id", "prompt", "response", "prompt_ids", "token_ids", "finish_reason", "n_tokens"]]


def prompt_block(prompts: pd.DataFrame, part: int, n_parts: int) -> pd.DataFrame:
    """Rows of the ``part``-th of ``n_parts`` contiguous blocks of ``prompts`` (sizes differ by at most one): the
    prompts one teacher-sampling job answers. Seeds depend on the prompt id, not on the block."""
    if not 0 <= int(part) < int(n_parts):
        raise ValueError(f"part {part} is not in [0, {n_parts})")
    bounds = np.arange(int(n_parts) + 1) * len(prompts) // int(n_parts)
    block = prompts.iloc[bounds[part]: bounds[part + 1]]
    if block.empty:
        raise ValueError(f"teacher-sample block {part} of {n_parts} is empty ({len(prompts)} prompts): "
                         f"lower teacher_samples.shards")
    return block


def merge_blocks(blocks: Sequence[pd.DataFrame], prompts: pd.DataFrame) -> pd.DataFrame:
    """The teacher samples of every block in prompt order; every prompt answered exactly once, else one error."""
    df = pd.concat(blocks, ignore_index=True)
    dup = df.loc[df["id"].duplicated(), "id"].tolist()
    missing = sorted(set(prompts["id"]) - set(df["id"]))
    if dup or missing or len(df) != len(prompts):
        raise ValueError(f"teacher-sample blocks do not cover the prompts once: {len(dup)} duplicated "
                         f"(e.g. {dup[:3]}), {len(missing)} missing (e.g. {missing[:3]}), {len(df)} rows for "
                         f"{len(prompts)} prompts")
    order = {pid: i for i, pid in enumerate(prompts["id"])}
    return df.sort_values("id", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


def evaluate(backend, tokenizer, bench: pd.DataFrame, cfg: dict, seed: int, checkpoint: str, benchmark: str
             ) -> pd.DataFrame:
    """Per-(problem, sample) correctness of one checkpoint on one benchmark; ``check_timeout`` marks a sample whose
    answer check ran out of time (scored incorrect, :func:`rocktokens.checking.checker.grade`)."""
    from rocktokens.checking.checker import grade

    out = generate_for_prompts(backend, tokenizer, bench, cfg["k"], sampling_params(cfg), seed, "eval", benchmark)
    meta = bench.set_index("id")
    verdicts = [grade(resp, meta.at[pid, "checker"], meta.at[pid, "answer"])
                for pid, resp in zip(out["id"], out["response"])]
    out["correct"] = [bool(v.correct) for v in verdicts]
    out["check_timeout"] = [bool(v.timed_out) for v in verdicts]
    if out["check_timeout"].any():
        log.warning("%s on %s: %d answer check(s) timed out (scored incorrect)", checkpoint, benchmark,
                    int(out["check_timeout"].sum()))
    out.insert(0, "benchmark", benchmark)
    out.insert(0, "checkpoint", checkpoint)
    return out[["checkpoint", "benchmark", "id", "sample", "correct", "check_timeout", "response", "n_tokens",
                "finish_reason"]]


def accuracy_table(evals: Sequence[pd.DataFrame], hard: Sequence[str]) -> pd.DataFrame:
    """pass@1 = mean correctness over problems and k samples, per checkpoint × benchmark, plus the hard average.

    The hard average follows the paper (§5.2): the mean over the pooled problems of AIME24, AIME25 and HMMT25.
    ``n_check_timeouts`` counts the samples whose answer check timed out (column ``check_timeout``; 0 for
    evaluations written before it existed).
    """
    df = pd.concat(evals, ignore_index=True)
    df["check_timeout"] = df["check_timeout"].fillna(False) if "check_timeout" in df else False
    per_problem = df.groupby(["checkpoint", "benchmark", "id"], sort=False).agg(
        correct=("correct", "mean"), n_check_timeouts=("check_timeout", "sum")).reset_index()
    stats = {"pass@1": ("correct", "mean"), "n_problems": ("correct", "count"),
             "n_check_timeouts": ("n_check_timeouts", "sum")}
    table = per_problem.groupby(["checkpoint", "benchmark"], sort=False).agg(**stats).reset_index()
    if hard:
        h = per_problem[per_problem["benchmark"].isin(hard)]
        if not h.empty:
            avg = h.groupby("checkpoint", sort=False).agg(**stats).reset_index()
            avg.insert(1, "benchmark", "hard_avg")
            table = pd.concat([table, avg], ignore_index=True)
    table["n_check_timeouts"] = table["n_check_timeouts"].astype("int64")
    return table


def rollouts(backend, tokenizer, bench: pd.DataFrame, cfg: dict, seed: int, checkpoint: str, benchmark: str) -> pd.DataFrame:
    """Trajectories of one checkpoint on the analysis benchmark: the first ``n_problems`` problems,
    ``samples_per_problem`` samples each at the configured temperature (the paper: N=500 MATH-500 rollouts)."""
    n = cfg["n_problems"]
    if len(bench) < n:
        log.warning("%s has %d problems, fewer than n_problems=%d: using all", benchmark, len(bench), n)
    sub = bench.iloc[:n]
    out = generate_for_prompts(backend, tokenizer, sub, cfg["samples_per_problem"], sampling_params(cfg), seed,
                               "rollouts", benchmark)
    out = out.rename(columns={"id": "problem_id"})
    out.insert(0, "benchmark", benchmark)
    out.insert(0, "checkpoint", checkpoint)
    return out
