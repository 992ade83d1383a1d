"""Cross-field checks of a config that a JSON schema cannot express (the schema handles keys and types)."""
from __future__ import annotations

from typing import Mapping, Sequence

from rocktokens.distill.steps import opd_steps_bound
from rocktokens.core.naming import opd_index, opd_name, opd_names


class ConfigError(ValueError):
    pass


def expand_checkpoints(config: dict, names) -> list[str]:
    """``opd-*`` expands to every OPD checkpoint ``opd-1..opd-C``; duplicates dropped, order kept."""
    out: list[str] = []
    n = config["stage2"]["n_checkpoints"]
    for c in names:
        names = opd_names(n) if c == "opd-*" else [c]
        out.extend(x for x in names if x not in out)
    return out


def eval_checkpoints(config: dict) -> list[str]:
    """The checkpoints to evaluate."""
    return expand_checkpoints(config, config["evaluate"]["checkpoints"])


def scorer_checkpoints(config: dict) -> list[str]:
    """Students teacher-forced on the post-OPD trajectories; the first is the pre-OPD reference of Eq. 5."""
    return expand_checkpoints(config, config["tokens"]["scorers"])


def check_config(config: dict) -> None:
    """Raise :class:`ConfigError` naming the offending key(s)."""
    def fail(key, msg):
        raise ConfigError(f"config key '{key}': {msg}")

    n = config["stage2"]["n_checkpoints"]
    for key, names in (("evaluate.checkpoints", eval_checkpoints(config)), ("tokens.scorers", scorer_checkpoints(config))):
        for c in names:
            if (opd_index(c) or 0) > n:
                fail(key, f"{c} does not exist (stage2.n_checkpoints = {n})")
    scorers = scorer_checkpoints(config)
    if len(scorers) < 2:
        fail("tokens.scorers", "needs the pre-OPD scorer and at least the post-OPD one (Eq. 5 pairs them)")
    if scorers[0] != "stage1":
        fail("tokens.scorers", f"the first scorer is the pre-OPD reference of Eq. 5 and must be 'stage1' (the "
                               f"stage-1 checkpoint OPD starts from), got {scorers[0]!r}")
    if opd_name(n) not in scorers:
        fail("tokens.scorers", f"must include the post-OPD checkpoint opd-{n} ('opd-*' does): the rock scores are "
                               "its losses (Eq. 4)")
    for b in config["evaluate"]["benchmarks"] + config["evaluate"]["hard_average"]:
        if b not in config["benchmarks"]:
            fail("evaluate.benchmarks", f"benchmark {b!r} is not in the top-level 'benchmarks' list")
    d = config["distillation"]["benchmark"]
    if d not in config["evaluate"]["benchmarks"]:
        fail("distillation.benchmark", f"{d!r} is not one of evaluate.benchmarks {config['evaluate']['benchmarks']}")
    for stage in ("stage1", "stage2"):
        s = config[stage]
        if s["global_batch"] % s["micro_batch"]:
            fail(f"{stage}.micro_batch", f"{s['micro_batch']} does not divide global_batch {s['global_batch']}")
    s2 = config["stage2"]
    if (s2["prompts_per_step"] * s2["rollouts_per_prompt"]) % s2["global_batch"]:
        fail("stage2.global_batch", "must divide prompts_per_step * rollouts_per_prompt")
    if s2["kd_ratio"] != 1.0 and s2["divergence"] == "rkl":
        # OPD trains on the student's own samples: a CE term there would imitate the student itself.
        fail("stage2.kd_ratio", "on-policy distillation is pure reverse KL (kd_ratio 1.0)")
    if config["source"] == "world":
        from rocktokens.world import validate_world_config

        validate_world_config(config.get("world", {}))
        for role in ("teacher", "student_base"):
            m = config["models"][role]
            if "arch" not in m or "pretrain" not in m:
                fail(f"models.{role}", "the world source trains models in the DAG: 'arch' and 'pretrain' are required")
    elif config["source"] == "hub":
        for role in ("teacher", "student_base"):
            if "hub_id" not in config["models"][role]:
                fail(f"models.{role}.hub_id", "required when source is 'hub'")
        missing = [d for d in ["stage1_prompts", "stage2_prompts", *config["benchmarks"]] if d not in config.get("datasets", {})]
        if missing:
            fail("datasets", f"source 'hub' needs an adapter for {missing}")
    bound = opd_steps_bound(config)  # checked here, not when stage 2 starts after stage 1 has run
    if bound is not None and n > bound[0]:
        fail("stage2.n_checkpoints", f"{n} checkpoints cannot be placed in stage 2's at most {bound[0]} OPD steps "
                                     f"({bound[1]})")


class GeometryConfigError(ConfigError):
    """A ``geometry:`` config value that cannot be resolved (names the key)."""


def resolve_checkpoint(name: str, opd_ckpts: Sequence[str], key: str) -> str:
    """``post`` → the last OPD checkpoint; ``stage1`` / ``opd-k`` are kept if they exist."""
    if name == "post":
        return opd_ckpts[-1]
    if name == "stage1" or name in opd_ckpts:
        return name
    raise GeometryConfigError(f"config key 'geometry.{key}': checkpoint {name!r} does not exist "
                              f"(known: stage1, {', '.join(opd_ckpts)}, post)")


def geometry_settings(config: Mapping) -> dict:
    """Resolved ``geometry:`` settings: checkpoint names, the early/late pair (fixed in config before any run,
    FACTS mistake 5) and ``high_kl_scorer`` (the checkpoint ``geometry.high_kl.select_on`` names), checked
    against the token table's scorers. Raises :class:`GeometryConfigError`."""
    g = config["geometry"]
    C = int(config["stage2"]["n_checkpoints"])
    opd = opd_names(C)
    scorers = scorer_checkpoints(config)
    order = ["stage1", *opd]
    out = {"checkpoint": resolve_checkpoint(g["checkpoint"], opd, "checkpoint"),
           "early": resolve_checkpoint(g["persistence"]["early"], opd, "persistence.early"),
           "late": resolve_checkpoint(g["persistence"]["late"], opd, "persistence.late")}
    # the scorer whose KL picks the rare high-KL types (on the selection split): early = the start of the
    # early → late test, never the checkpoint it ends at; post = the final OPD checkpoint (the authors' order)
    select_on = g["high_kl"].get("select_on", "early")
    if select_on not in ("early", "post"):
        raise GeometryConfigError(f"config key 'geometry.high_kl.select_on': {select_on!r} is not early or post")
    out["high_kl_scorer"] = out["early"] if select_on == "early" else opd[-1]
    if order.index(out["early"]) >= order.index(out["late"]):
        raise GeometryConfigError(f"config key 'geometry.persistence': early {out['early']!r} must come before "
                                  f"late {out['late']!r} in training")
    for key, name in (("persistence.early", "early"), ("persistence.late", "late"),
                      ("high_kl.select_on", "high_kl_scorer")):
        if out[name] not in scorers:
            raise GeometryConfigError(f"config key 'geometry.{key}': {out[name]!r} is not a token-table "
                                      f"scorer (tokens.scorers = {scorers})")
    if not 0 < g["selection_fraction"] < 1:
        raise GeometryConfigError("config key 'geometry.selection_fraction': must lie strictly between 0 and 1")
    return out
