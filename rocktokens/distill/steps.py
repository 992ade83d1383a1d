"""How many OPD steps a stage-2 run can have, as the config alone determines it (checked at parse time)."""
from __future__ import annotations

from typing import Mapping


def opd_steps_bound(config: Mapping) -> tuple[int, str] | None:
    """The most OPD steps one stage-2 run can have as the config determines it, with how it follows:
    ⌊epochs · n_prompts⌋ // prompts_per_step (as ``training.stages.opd_total_steps``), n_prompts the stage-2 prompt
    count the config sets (``world.n_stage2_prompts``; ``datasets.stage2_prompts`` stop − start) — an upper bound,
    as prompts longer than ``stage2.prompt_max_len`` are dropped at run time. ``None`` where the config sets no count
    (a hub slice without ``stop``; source checkpoints)."""
    if config["source"] == "world":
        from rocktokens.world import validate_world_config

        n, key = validate_world_config(config.get("world") or {})["n_stage2_prompts"], "world.n_stage2_prompts"
    elif config["source"] == "hub" and config.get("datasets", {}).get("stage2_prompts", {}).get("stop") is not None:
        d = config["datasets"]["stage2_prompts"]
        n, key = int(d["stop"]) - int(d.get("start", 0)), "datasets.stage2_prompts stop − start"
    else:
        return None
    s2 = config["stage2"]
    steps = int(s2["epochs"] * n) // s2["prompts_per_step"]
    return steps, f"{key} = {n} prompts × stage2.epochs {s2['epochs']} // stage2.prompts_per_step {s2['prompts_per_step']}"
