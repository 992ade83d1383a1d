# Inference-time knockout (§3, Appendix D): token, global-window and local-window knockout (knockout.policies) of the
# top-K_screen Rock-Token candidates, paired bootstrap, Eq. 22 categories, census per policy and the paper's "token
# or window" census (Table 2), multiple testing, sign tests, predictors (Table 1), Figures 4 and 6. Shards are file
# targets per benchmark: shard_size (candidate, policy) slots each, a failed one reruns alone (--keep-going lets the
# others finish); a shard job loads the post-OPD student once and mixes its arms' masks in one generation batch. At
# paper scale (shard_size 1) every knockout policy × candidate × benchmark is a GPU job.
from rocktokens.knockout.experiment import BASELINE_SHARD, check_knockout_config, shard_names

check_knockout_config(config)
KO = config["knockout"]
KO_SHARDS = [BASELINE_SHARD, *shard_names(KO["k_screen"], KO["shard_size"], KO["policies"])]
# what a shard job reads: only generation settings, so a statistics-only setting never reruns generation
KO_GENERATION = {k: KO[k] for k in ("n_problems", "samples", "temperature", "top_p", "max_new_tokens",
                                    "arms_per_chunk", "batch_size")}


# The screening pool (top K_screen by R, the score that defines the frozen rock sets; K_screen >= the chosen K),
# W(v), the local bans (v's stored left contexts) and the arms of each shard; candidate ids are checked against the
# tokenizer's vocabulary.
rule knockout_plan:
    input:
        stats=rules.rock_scores.output.stats,
        windows=rules.rock_scores.output.windows,
        info=rules.rock_scores.output.info,
        tokenizer=tokenizer_dir(),
    output:
        candidates=f"{R}/knockout/candidates.parquet",
        plan=f"{R}/knockout/plan.parquet",
    params:
        k_screen=KO["k_screen"],
        shard_size=KO["shard_size"],
        window_min_share=KO["window_min_share"],
        policies=KO["policies"],
    priority: CRITICAL_PATH
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
        ko=KO_GENERATION,
        generation=config["generation"],
        seed=config["seed"],
        state=lambda w: f"{R}/knockout/state/{w.kbench}/{w.shard}",
    priority: CRITICAL_PATH
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


# Δ(v), Δ(W(v)) and the local-window Δ with paired-bootstrap p-values (Eq. 20-21) and every candidate's Eq. 22
# category per census (each policy alone, token or window = the paper's, token or local).
rule knockout_effects:
    input:
        shards=expand(f"{R}/knockout/shards/{{kbench}}/{{shard}}.parquet", kbench=KO["benchmarks"], shard=KO_SHARDS),
        plan=rules.knockout_plan.output.plan,
        candidates=rules.knockout_plan.output.candidates,
        # the core is knockout.core_K, or the rock set R's K (rocks/R.json) when it is null
        **({"rocks": rules.rock_set_R.output.record} if KO["core_K"] is None else {}),
    output:
        effects=f"{R}/knockout/effects.parquet",
        categories=f"{R}/knockout/categories.parquet",
    params:
        bootstrap_resamples=KO["bootstrap_resamples"],
        epsilon=KO["epsilon"],
        alpha=KO["alpha"],
        core_K=KO["core_K"],
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
        stats=rules.rock_scores.output.stats,
        candidates=rules.knockout_plan.output.candidates,
    output:
        f"{R}/knockout/predictors.parquet",
    params:
        pre=SCORERS[0],
        rocks=AGGREGATION,
    log:
        f"{R}/logs/knockout/predictors.log",
    benchmark:
        f"{R}/benchmarks/knockout/predictors.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_predictors.py"


# Table 1 (correlations of Δ(v)); per census, token only first and the paper's "token or window" labelled: Table 2
# (census + cross-task agreement) and the global sign tests; multiple testing per family; power per policy.
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
        benchmarks=KO["benchmarks"],
        alpha=KO["alpha"],
        fdr_q=KO["fdr_q"],
    log:
        f"{R}/logs/knockout/tables.log",
    benchmark:
        f"{R}/benchmarks/knockout/tables.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/knockout_tables.py"


# Figure 4: sorted Δ(v) bars per benchmark with the ε band, token-census colours and the window/local Δ as dots.
rule figure4:
    input:
        categories=rules.knockout_effects.output.categories,
    output:
        report(f"{R}/figures/figure4.png", caption="../report/figure4.rst", category="Knockout"),
    params:
        dpi=config["figures"]["dpi"],
        ko={"epsilon": KO["epsilon"], "benchmarks": KO["benchmarks"]},
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
        dpi=config["figures"]["dpi"],
        benchmark=KO["benchmarks"][0],
    log:
        f"{R}/logs/figure6.log",
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/figure6.py"
