# The study's report: "this run vs the paper" — one table of every headline number, read from the artifacts of
# the rock analysis, gradient geometry, knockout, freeze arms and evaluation, beside the paper's values.
# `snakemake --report results/<run>/report.html` collects it with every figure and table (captions in report/).


# summary.md / .tsv / .parquet / .html (the html is the report's rendering); rocktokens/report/summary.py holds the logic.
rule summary:
    input:
        rocks=rules.rock_set_R.output.record,
        gradients=rules.gradient_geometry.output.summary,
        persistence=rules.persistence.output.summary,
        table1=rules.knockout_tables.output.table1,
        table2=rules.knockout_tables.output.table2,
        sign_test=rules.knockout_tables.output.sign_test,
        multiple_testing=rules.knockout_tables.output.multiple_testing,
        knockout_power=rules.knockout_tables.output.power,
        **({"freeze_arms": rules.freeze_table.output.arms, "freeze_accuracy": rules.freeze_table.output.accuracy}
           if FREEZE_ON else {}),
        accuracy=rules.accuracy_table.output.tsv,
        distillation=rules.distillation.output.summary,
        **({"recovery": rules.recovery.output.summary} if WORLD else {}),
        **({"probe": rules.optimizer_probe.output.summary} if PROBE_ON else {}),
    output:
        md=f"{R}/summary.md",
        tsv=f"{R}/summary.tsv",
        parquet=f"{R}/summary.parquet",
        html=report(f"{R}/summary.html", caption="../report/summary.rst", category="Summary"),
    params:
        run=config["run"],
    log:
        f"{R}/logs/summary.log",
    benchmark:
        f"{R}/benchmarks/summary.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/summary.py"
