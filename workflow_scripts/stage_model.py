"""Rule stage_model: snapshot a base model (weights, config, tokenizer) from the HF hub at a pinned
revision into resources/models/<role>. Needs network (a localrule); fails with one clear message
without it. Thin wrapper over :func:`rocktokens.data.hub.stage_model`.
"""
from rocktokens.data.hub import stage_model
from rocktokens.core.io import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
stage_model(snakemake.params.hub_id, snakemake.params.revision, snakemake.output[0])  # noqa: F821
