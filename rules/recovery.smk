# Recovery of the planted causal roles (embedded world only: other sources have no planted truth). Every planted
# type beside what the knockout census called it, per policy, with Δ, interval, p and BH; the confusion matrix with
# sensitivity and FDR per role; the issue's target checks; the freeze arms restricted to planted roles (λ = 0 on the
# planted pillars' or neutral types' windows) beside the baseline; a figure. Logic: rocktokens/recovery/planted.py.
if WORLD:

    rule recovery:
        input:
            planted=rules.planted_tokens.output[0],
            candidates=rules.knockout_plan.output.candidates,
            effects=rules.knockout_effects.output.effects,
            categories=rules.knockout_effects.output.categories,
            freeze_arms=rules.freeze_table.output.arms,
            freeze_accuracy=rules.freeze_table.output.accuracy_parquet,
        output:
            table=report(f"{R}/recovery/recovery.tsv", caption="../report/recovery.rst", category="Planted roles"),
            parquet=f"{R}/recovery/recovery.parquet",
            confusion=report(f"{R}/recovery/confusion.tsv", caption="../report/recovery.rst", category="Planted roles"),
            target=report(f"{R}/recovery/target.tsv", caption="../report/recovery.rst", category="Planted roles"),
            freeze=report(f"{R}/recovery/freeze.tsv", caption="../report/recovery.rst", category="Planted roles"),
            summary=f"{R}/recovery/summary.json",
            figure=report(f"{R}/figures/recovery.png", caption="../report/recovery.rst", category="Planted roles"),
        params:
            dpi=config["figures"]["dpi"],
            ko={k: KO[k] for k in ("benchmarks", "epsilon", "alpha", "fdr_q")},
        log:
            f"{R}/logs/recovery.log",
        benchmark:
            f"{R}/benchmarks/recovery.tsv"
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/recovery.py"
