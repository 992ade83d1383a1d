# Inference-time knockout (§3, Appendix D): token and window knockout of the top-K_screen Rock-Token candidates,
# paired bootstrap, Eq. 22 categories, census (Table 2), multiple testing, sign test, predictors (Table 1),
# Figures 4 and 6. Shards are file targets per benchmark: shard_size (candidate, policy) slots each, a failed one
# reruns alone (--keep-going lets the others finish); a shard job loads the post-OPD student once and mixes its
# arms' masks in one generation batch. At paper scale (shard_size 1) every knockout policy × benchmark is a GPU job.
from rocktokens.knockout import BASELINE_SHARD, check_knockout_config, shard_names

check_knockout_config(config)
KO = config["knockout"]
KO_SHARDS = [BASELINE_SHARD, *shard_names(KO["k_screen"], KO["shard_size"])]


# The screening pool (top K_screen by R, the score that defines the frozen rock sets), W(v) and the arms of each
# shard; candidate ids are checked against the tokenizer's vocabulary.
rule knockout_plan:
    input:
        stats=rules.rock_analysis.output.stats,
        windows=rules.rock_analysis.output.windows,
        chosen=rules.rock_analysis.output.chosen,
        tokenizer=tokenizer_dir(),
    output:
        candidates=f"{R}/knockout/candidates.parquet",
        plan=f"{R}/knockout/plan.parquet",
    params:
        ko=KO,
    log:
        f"{R}/logs/knockout/plan.log",
    benchmark:
        f"{R}/benchmarks/knockout/plan.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_plan.py"


# One shard on one benchmark: its (candidate, policy) slots' arms (or the baseline) × the benchmark's problems ×
# m samples, per-sample indicators. Resumes chunk by chunk from params.state when killed.
rule knockout_shard:
    input:
        unpack(lambda w: nltk_input(w.kbench)),
        model=ckpt_dir(POST_OPD),
        tokenizer=tokenizer_dir(),
        plan=rules.knockout_plan.output.plan,
        bench=f"{R}/data/{{kbench}}.parquet",
    output:
        f"{R}/knockout/shards/{{kbench}}/{{shard}}.parquet",
    params:
        ko=KO,
        generation=config["generation"],
        seed=config["seed"],
        state=lambda w: f"{R}/knockout/state/{w.kbench}/{w.shard}",
    log:
        f"{R}/logs/knockout/{{kbench}}/shard-{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/knockout/{{kbench}}/shard-{{shard}}.tsv"
    wildcard_constraints:
        kbench="|".join(KO["benchmarks"]),
        shard="|".join(KO_SHARDS),
    threads: config["threads"]
    resources:
        **res("knockout_shard"),
    conda:
        GPU_ENV
    script:
        "../workflow_scripts/knockout_shard.py"


# Δ(v), Δ(W(v)) with paired-bootstrap p-values (Eq. 20-21) and the Eq. 22 category of every candidate.
rule knockout_effects:
    input:
        shards=expand(f"{R}/knockout/shards/{{kbench}}/{{shard}}.parquet", kbench=KO["benchmarks"], shard=KO_SHARDS),
        plan=rules.knockout_plan.output.plan,
        candidates=rules.knockout_plan.output.candidates,
    output:
        effects=f"{R}/knockout/effects.parquet",
        categories=f"{R}/knockout/categories.parquet",
    params:
        ko=KO,
        seed=config["seed"],
    log:
        f"{R}/logs/knockout/effects.log",
    benchmark:
        f"{R}/benchmarks/knockout/effects.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_effects.py"


# The nine per-token predictors of Table 1 (DuckDB over the token table for the pre-OPD scorer).
rule knockout_predictors:
    input:
        tokens=rules.token_kl.output[0],
        stats=rules.rock_analysis.output.stats,
        candidates=rules.knockout_plan.output.candidates,
    output:
        f"{R}/knockout/predictors.parquet",
    params:
        pre=SCORERS[0],
        rocks=config["rocks"],
    log:
        f"{R}/logs/knockout/predictors.log",
    benchmark:
        f"{R}/benchmarks/knockout/predictors.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_predictors.py"


# Table 1 (correlations), Table 2 (census + cross-task agreement), multiple testing and the global sign test.
rule knockout_tables:
    input:
        categories=rules.knockout_effects.output.categories,
        effects=rules.knockout_effects.output.effects,
        predictors=rules.knockout_predictors.output[0],
        candidates=rules.knockout_plan.output.candidates,
    output:
        table1=report(f"{R}/knockout/table1.tsv", caption="../report/table1.rst", category="Knockout"),
        table1_parquet=f"{R}/knockout/table1.parquet",
        table2=report(f"{R}/knockout/table2.tsv", caption="../report/table2.rst", category="Knockout"),
        table2_parquet=f"{R}/knockout/table2.parquet",
        agreement=report(f"{R}/knockout/table2_agreement.tsv", caption="../report/agreement.rst", category="Knockout"),
        multiple_testing=report(f"{R}/knockout/multiple_testing.tsv", caption="../report/multiple_testing.rst",
                                category="Knockout"),
        sign_test=report(f"{R}/knockout/sign_test.tsv", caption="../report/sign_test.rst", category="Knockout"),
        power=report(f"{R}/knockout/power.tsv", caption="../report/power.rst", category="Knockout"),
    params:
        ko=KO,
    log:
        f"{R}/logs/knockout/tables.log",
    benchmark:
        f"{R}/benchmarks/knockout/tables.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_tables.py"


# Figure 4: sorted Δ(v) bars per benchmark with the ε band and Eq. 22 category colours.
rule figure4:
    input:
        categories=rules.knockout_effects.output.categories,
    output:
        report(f"{R}/figures/figure4.png", caption="../report/figure4.rst", category="Knockout"),
    params:
        ko=KO,
    log:
        f"{R}/logs/figure4.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure4.py"


# Figure 6: Δ(v) on the first knockout benchmark vs six predictors, with Pearson r and p.
rule figure6:
    input:
        categories=rules.knockout_effects.output.categories,
        predictors=rules.knockout_predictors.output[0],
    output:
        report(f"{R}/figures/figure6.png", caption="../report/figure6.rst", category="Knockout"),
    params:
        benchmark=KO["benchmarks"][0],
    log:
        f"{R}/logs/figure6.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure6.py"
