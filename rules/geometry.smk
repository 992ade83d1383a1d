# Gradient geometry (Eq. 16), persistence across checkpoints, Figure 3 (§2.6), and the optimizer-suppression
# probe (is Adam the cause?). Groups are selected on one split of the analysis problems and measured on the other.
from rocktokens.workflow.config import geometry_settings

GEO = geometry_settings(config)  # resolved checkpoint names; fails at parse time naming the bad key
GEO_CFG = config["geometry"]
PROBE_ARMS = [GEO_CFG["probe"]["arms"]["adaptive"], GEO_CFG["probe"]["arms"]["plain"]]
# The probe analysis needs the AdamW and SGD OPD arms (rules/freeze.smk, config `arms:`).
PROBE_ON = FREEZE_ON and all(a in ARMS for a in PROBE_ARMS)  # the probe runs inside the freeze arms
# The final checkpoint of each arm (rule opd_arm, rules/freeze.smk).
ARM_FINAL = {a: f"{R}/arms/{a}/{ARM_CKPTS[-1]}" for a in PROBE_ARMS}


# Split the analysis problems (selection | measurement) and select rocks / rare high-KL / random groups on
# the selection split only (FACTS mistake 5); the high-KL types by their KL at geometry.high_kl.select_on.
rule geometry_groups:
    input:
        tokens=rules.token_kl.output[0],
        record=rules.rock_set_R.output.record,
    output:
        split=f"{R}/geometry/split.parquet",
        groups=f"{R}/geometry/groups.parquet",
        info=f"{R}/geometry/groups.json",
    params:
        cfg={"selection_fraction": GEO_CFG["selection_fraction"], "high_kl": GEO_CFG["high_kl"]},
        rocks=pick("rocks", "loss", "score", "control_tol", "duckdb",
                   *(["context"] if config["rocks"]["score"] == "R_ctx" else [])),
        high_kl_scorer=GEO["high_kl_scorer"],
        pre=SCORERS[0],
        post=POST_OPD,
        seed=config["seed"],
    log:
        f"{R}/logs/geometry_groups.log",
    benchmark:
        f"{R}/benchmarks/geometry_groups.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/geometry_groups.py"


# Per-type mean logit gradient ḡ_t of the reverse KL for the group tokens, G_balanced, cosines, Eq. 16,
# Mann–Whitney between groups — streamed over the measurement split (no [types × V] tensor).
rule gradient_geometry:
    input:
        rollouts=rules.token_kl.input.rollouts,
        tokens=rules.token_kl.output[0],
        teacher=model_dir("teacher"),
        student=ckpt_dir(GEO["checkpoint"]),
        split=rules.geometry_groups.output.split,
        groups=rules.geometry_groups.output.groups,
        info=rules.geometry_groups.output.info,
    output:
        table=f"{R}/geometry/gradients.parquet",
        summary=f"{R}/geometry/gradients.json",
    params:
        checkpoint=GEO["checkpoint"],
        tokens=SCORING,
        rocks=AGGREGATION,
        temperature=config["stage2"]["temperature"],
        dtype=config["training"].get("dtype", "float32"),
    log:
        f"{R}/logs/gradient_geometry.log",
    benchmark:
        f"{R}/benchmarks/gradient_geometry.tsv"
    threads: config["threads"]
    resources:
        **res("gradient_geometry"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/gradient_geometry.py"


# Per-token mean KL at the early and the late OPD checkpoint (pair fixed in config), Wilcoxon per group.
rule persistence:
    input:
        tokens=rules.token_kl.output[0],
        split=rules.geometry_groups.output.split,
        groups=rules.geometry_groups.output.groups,
    output:
        table=f"{R}/geometry/persistence.parquet",
        summary=f"{R}/geometry/persistence.json",
    params:
        early=GEO["early"],
        late=GEO["late"],
        rocks=AGGREGATION,
    log:
        f"{R}/logs/persistence.log",
    benchmark:
        f"{R}/benchmarks/persistence.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/persistence.py"


# Figure 3 (a: ‖ḡ_t‖; b: cos with G_balanced; c: KL early vs late; d: ΔKL by group).
rule figure3:
    input:
        gradients=rules.gradient_geometry.output.table,
        persistence=rules.persistence.output.table,
    output:
        report(f"{R}/figures/figure3.png", caption="../report/figure3.rst", category="Gradient geometry"),
    params:
        dpi=config["figures"]["dpi"],
        early=GEO["early"],
        late=GEO["late"],
    log:
        f"{R}/logs/figure3.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure3.py"


# The AdamW and SGD arms' final checkpoints teacher-forced on the measurement split (token-table layout).
rule arm_kl:
    input:
        rollouts=rules.token_kl.input.rollouts,
        split=rules.geometry_groups.output.split,
        teacher=model_dir("teacher"),
        tokenizer=tokenizer_dir(),
        **ARM_FINAL,
    output:
        directory(f"{R}/geometry/arm_tokens"),
    params:
        arms=PROBE_ARMS,
        tokens=SCORING,
        dtype=config["training"].get("dtype", "float32"),
    log:
        f"{R}/logs/arm_kl.log",
    benchmark:
        f"{R}/benchmarks/arm_kl.tsv"
    threads: config["threads"]
    resources:
        **res("arm_kl"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/arm_kl.py"


# Is Adam the cause? Mechanism (probe records of the AdamW arm) + outcome (rock ΔKL, SGD vs AdamW) → verdict.
rule optimizer_probe:
    input:
        arm_tokens=rules.arm_kl.output[0],
        tokens=rules.token_kl.output[0],
        split=rules.geometry_groups.output.split,
        groups=rules.geometry_groups.output.groups,
        **{f"probe_{a}": f"{R}/arms/{a}/probe.parquet" for a in PROBE_ARMS},
    output:
        table=f"{R}/geometry/optimizer_probe.parquet",
        summary=f"{R}/geometry/optimizer_probe.json",
    params:
        arms=PROBE_ARMS,
        start=SCORERS[0],
        reference=GEO_CFG["probe"]["reference"],
        alpha=GEO_CFG["alpha"],
        rocks=AGGREGATION,
    log:
        f"{R}/logs/optimizer_probe.log",
    benchmark:
        f"{R}/benchmarks/optimizer_probe.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/optimizer_probe.py"


# The optimizer-probe figure (effective step size, gain, loss per arm, relative KL reduction per arm).
rule figure_optimizer_probe:
    input:
        table=rules.optimizer_probe.output.table,
        **{f"probe_{a}": f"{R}/arms/{a}/probe.parquet" for a in PROBE_ARMS},
        **{f"history_{a}": f"{R}/arms/{a}/history.parquet" for a in PROBE_ARMS},
    output:
        report(f"{R}/figures/optimizer_probe.png", caption="../report/optimizer_probe.rst",
               category="Gradient geometry"),
    params:
        dpi=config["figures"]["dpi"],
        arms=PROBE_ARMS,
    log:
        f"{R}/logs/figure_optimizer_probe.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure_optimizer_probe.py"


# The written finding (markdown): §2.6 claims checked on this run and the optimizer-suppression verdict.
rule geometry_finding:
    input:
        gradients=rules.gradient_geometry.output.summary,
        persistence=rules.persistence.output.summary,
        **({"probe": rules.optimizer_probe.output.summary} if PROBE_ON else {}),
    output:
        report(f"{R}/geometry/finding.md", caption="../report/geometry_finding.rst", category="Gradient geometry"),
    params:
        alpha=GEO_CFG["alpha"],
    log:
        f"{R}/logs/geometry_finding.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/geometry_finding.py"


GEOMETRY_TARGETS = [rules.figure3.output[0], rules.geometry_finding.output[0]] + (
    [rules.figure_optimizer_probe.output[0]] if PROBE_ON else []
)
