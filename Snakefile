# Rock Tokens in On-Policy Distillation (arXiv 2605.09253) — the study as a Snakemake workflow.
# One rules/<stage>.smk per stage; logic lives in the `rocktokens` package; see README.md.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default; `--configfile X.yaml` is merged on top (configs/smoke.yaml, configs/paper.yaml).
configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report results/<run>/report.html`: this page, then every output wrapped in report() (report/*.rst).
report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    role="teacher|student_base",
    dataset="|".join(DATASETS),
    ckpt="|".join(["teacher", "student_base", "stage1", *OPD_CKPTS]),


include: "rules/world.smk"
include: "rules/staging.smk"
include: "rules/data.smk"
include: "rules/distill.smk"
include: "rules/evaluate.smk"
include: "rules/tokens.smk"
include: "rules/rocks.smk"
include: "rules/freeze.smk"
include: "rules/geometry.smk"
include: "rules/knockout.smk"
include: "rules/recovery.smk"
include: "rules/report.smk"


rule all:
    input:
        rules.accuracy_table.output,
        rules.distillation.output,
        rules.figure2.output,
        rules.rock_scores.output, rules.rock_stability.output, rules.rock_set_R.output,
        GEOMETRY_TARGETS,
        *([rules.figure5.output, rules.freeze_table.output] if FREEZE_ON else []),
        rules.knockout_tables.output, rules.figure4.output, rules.figure6.output,
        *([rules.recovery.output] if WORLD else []),  # planted roles vs the census (world only)
        rules.summary.output,
    default_target: True


# Keep last: places every rule above on the cluster (partition/account) and checks jobs before they start.
include: "rules/cluster.smk"
