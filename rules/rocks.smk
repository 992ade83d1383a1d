# Rock Tokens: DuckDB aggregation, context consistency (Eq. 5–14), stability, K, rock sets, Figure 2.
# Four rules, each with only the settings it reads, so that a change stops where its effect stops: the scores do not
# see the stability settings, a K's set does not see which K is chosen, and only rock_set_R (the study's one set R,
# read by every later stage) depends on the choice.


# Per-type Freq, ℓ̄_v, R (Eq. 3–4) and the context-consistency columns (Eq. 5–14) ranked by rocks.score (R or R_ctx,
# recorded as token_stats.rock_score for every later reader); coverage by K; the occurrences with their Eq. 5/9 flags
# and the stored high-divergence contexts from which W(v) is built.
rule rock_scores:
    input:
        tokens=rules.token_kl.output[0],
    output:
        stats=f"{R}/rocks/token_stats.parquet",
        coverage=f"{R}/rocks/coverage.parquet",
        occurrences=f"{R}/rocks/occurrences.parquet",
        windows=f"{R}/rocks/windows.parquet",
        info=f"{R}/rocks/scores.json",
    params:
        cfg=pick("rocks", "loss", "score", "context", "duckdb"),
        n_candidates=max(config["rocks"]["Ks"]),
        pre=SCORERS[0],
        post=POST_OPD,
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/rocks/scores.log",
    benchmark:
        f"{R}/benchmarks/rocks/scores.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/rock_scores.py"


# Jaccard stability of the top-K over resamples of n problems (Appendix E) and the chosen K.
rule rock_stability:
    input:
        tokens=rules.token_kl.output[0],
        coverage=rules.rock_scores.output.coverage,
    output:
        stability=f"{R}/rocks/stability.parquet",
        summary=f"{R}/rocks/stability_summary.parquet",
        chosen=f"{R}/rocks/chosen_K.json",
    params:
        cfg=pick("rocks", "loss", "score", "Ks", "stability", "duckdb",
                 *(["context"] if config["rocks"]["score"] == "R_ctx" else [])),
        pre=SCORERS[0],
        post=POST_OPD,
        seed=config["seed"],
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/rocks/stability.log",
    benchmark:
        f"{R}/benchmarks/rocks/stability.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/rock_stability.py"


# The top-K set for one K of rocks.Ks (functional clusters) and its frequency-matched controls.
rule rock_set:
    input:
        stats=rules.rock_scores.output.stats,
    output:
        rocks=f"{R}/rocks/K{{k}}.parquet",
        controls=f"{R}/rocks/K{{k}}_controls.parquet",
    params:
        cfg=pick("rocks", "control_tol", "control_strict"),
        seed=config["seed"],
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/rocks/K{{k}}.log",
    benchmark:
        f"{R}/benchmarks/rocks/K{{k}}.tsv"
    wildcard_constraints:
        k="|".join(str(k) for k in config["rocks"]["Ks"]),
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/rock_set.py"


# The rock set R: the chosen K's set and controls, written once and read by every later stage (figure 2, geometry,
# knockout core, freeze arms, summary); per-sequence densities; R.json (K, evidence, Eq. 14 filter, densities).
rule rock_set_R:
    input:
        tokens=rules.token_kl.output[0],
        stats=rules.rock_scores.output.stats,
        occurrences=rules.rock_scores.output.occurrences,
        info=rules.rock_scores.output.info,
        chosen=rules.rock_stability.output.chosen,
        sets=expand(f"{R}/rocks/K{{k}}.parquet", k=config["rocks"]["Ks"]),
        controls=expand(f"{R}/rocks/K{{k}}_controls.parquet", k=config["rocks"]["Ks"]),
    output:
        rocks=f"{R}/rocks/R.parquet",
        controls=f"{R}/rocks/R_controls.parquet",
        density=f"{R}/rocks/density.parquet",
        record=f"{R}/rocks/R.json",
    params:
        cfg=pick("rocks", "duckdb"),
        Ks=config["rocks"]["Ks"],
    priority: CRITICAL_PATH
    log:
        f"{R}/logs/rocks/R.log",
    benchmark:
        f"{R}/benchmarks/rocks/R.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/rock_set_R.py"


# Figure 2 (a: KL vs frequency with rocks; b: rock density; c: coverage and stability vs K; d: Jaccard vs n).
rule figure2:
    input:
        stats=rules.rock_scores.output.stats,
        coverage=rules.rock_scores.output.coverage,
        summary=rules.rock_stability.output.summary,
        rocks=rules.rock_set_R.output.rocks,
        density=rules.rock_set_R.output.density,
        record=rules.rock_set_R.output.record,
    output:
        report(f"{R}/figures/figure2.png", caption="../report/figure2.rst", category="Rock Tokens"),
    params:
        dpi=config["figures"]["dpi"],
    log:
        f"{R}/logs/figure2.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure2.py"
