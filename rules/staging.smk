# Paper scale (config `source: hub`): the base models and the datasets, staged once from the Hugging Face
# hub into resources/ (shared by every run; a changed hub_id/revision/adapter re-stages via the params
# rerun trigger): one job per model role (resources/models/<role>/, a snapshot) and one per dataset
# (resources/datasets/<name>.parquet). They are the only rules that need network access, so they are local
# rules: even with the SLURM executor they run where Snakemake runs (the login node), e.g.
# `snakemake --workflow-profile profiles/slurm-h100 --configfile configs/paper.yaml --until stage_model stage_dataset stage_nltk_data`,
# and no compute job ever downloads (NLTK data for the IFEval checks included). Without network they fail at once with one message saying so; outputs are
# written atomically.

if not WORLD:

    # A base model (teacher or student_base): weights, config, tokenizer and chat template at a pinned
    # revision (resolved to its commit; STAGED.json in the directory records it).
    rule stage_model:
        output:
            directory("resources/models/{role}"),
        params:
            hub_id=lambda w: config["models"][w.role]["hub_id"],
            revision=lambda w: config["models"][w.role].get("revision", "main"),
        log:
            "resources/logs/stage_model/{role}.log",
        benchmark:
            "resources/benchmarks/stage_model/{role}.tsv"
        localrule: True
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/stage_model.py"

    # A prompt set or benchmark: rows [start:stop] of the (filtered) hub split, columns as on the hub;
    # prepare_data maps them onto (id, prompt, answer, checker).
    rule stage_dataset:
        output:
            "resources/datasets/{dataset}.parquet",
        params:
            spec=lambda w: config["datasets"][w.dataset],
        log:
            "resources/logs/stage_dataset/{dataset}.log",
        benchmark:
            "resources/benchmarks/stage_dataset/{dataset}.tsv"
        localrule: True
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/stage_dataset.py"

    # NLTK's punkt_tab sentence-tokenizer data, which the real IFEval checks need for sentence counts
    # (rocktokens/checking/ifeval.py); evaluation jobs on hub IFEval benchmarks read it from here (no download there).
    rule stage_nltk_data:
        output:
            directory("resources/nltk_data"),
        log:
            "resources/logs/stage_nltk_data.log",
        localrule: True
        conda:
            CPU_ENV
        script:
            "../workflow_scripts/stage_nltk_data.py"
