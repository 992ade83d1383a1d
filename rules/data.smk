# Prompts and benchmarks → one normalised parquet each (id, prompt, answer, checker), at both scales.


# Normalise a prompt set or benchmark (world split or staged hub dataset) into the workflow's schema.
rule prepare_data:
    input:
        data_source,
    output:
        f"{R}/data/{{dataset}}.parquet",
    params:
        spec=dataset_spec,
        source=config["source"],
    log:
        f"{R}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{R}/benchmarks/prepare_data/{{dataset}}.tsv"
    conda:
        CPU_ENV
    script:
        "../workflow_scripts/prepare_data.py"
