# Rock Tokens: DuckDB aggregation, context consistency (Eq. 5–14), stability, K, rock sets, Figure 2.


# Everything the rock analysis decides, from the token table: stats, coverage, stability, chosen K, sets — all
# ranked by rocks.score (R, Eq. 4, or R_ctx, Eq. 13), recorded as token_stats.rock_score for every later reader.
rule rock_analysis:
    input:
        tokens=rules.token_kl.output[0],
    output:
        stats=f"{R}/rocks/token_stats.parquet",
        coverage=f"{R}/rocks/coverage.parquet",
        occurrences=f"{R}/rocks/occurrences.parquet",
        stability=f"{R}/rocks/stability.parquet",
        summary=f"{R}/rocks/stability_summary.parquet",
        density=f"{R}/rocks/density.parquet",
        windows=f"{R}/rocks/windows.parquet",
        chosen=f"{R}/rocks/chosen_K.json",
        **{f"K{k}": f"{R}/rocks/K{k}.parquet" for k in config["rocks"]["Ks"]},
        **{f"controls{k}": f"{R}/rocks/K{k}_controls.parquet" for k in config["rocks"]["Ks"]},
    params:
        cfg=config["rocks"],
        pre=SCORERS[0],
        post=POST_OPD,
        seed=config["seed"],
    log:
        f"{R}/logs/rock_analysis.log",
    benchmark:
        f"{R}/benchmarks/rock_analysis.tsv"
    threads: config["threads"]
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/rock_analysis.py"


# Figure 2 (a: KL vs frequency with rocks; b: rock density; c: coverage and stability vs K; d: Jaccard vs n).
rule figure2:
    input:
        stats=rules.rock_analysis.output.stats,
        coverage=rules.rock_analysis.output.coverage,
        summary=rules.rock_analysis.output.summary,
        density=rules.rock_analysis.output.density,
        chosen=rules.rock_analysis.output.chosen,
    output:
        report(f"{R}/figures/figure2.png", caption="../report/figure2.rst", category="Rock Tokens"),
    log:
        f"{R}/logs/figure2.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure2.py"
