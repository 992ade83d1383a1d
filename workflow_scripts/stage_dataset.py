"""Rule stage_dataset: rows [start:stop] of a (filtered) HF hub dataset split, as on the hub, into
resources/datasets/<name>.parquet (normalised later by prepare_data). Needs network (a localrule);
fails with one clear message without it. Thin wrapper over :func:`rocktokens.data.hub.stage_dataset`.
"""
from rocktokens.data.hub import stage_dataset
from rocktokens.core.io import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
stage_dataset(dict(snakemake.params.spec), snakemake.output[0], name=snakemake.wildcards.dataset)  # noqa: F821
