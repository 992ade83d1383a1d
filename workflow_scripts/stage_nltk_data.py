"""Rule stage_nltk_data: NLTK punkt_tab into resources/nltk_data for the IFEval checks (a localrule: needs
network; one clear message without it). Thin wrapper over :func:`rocktokens.checking.ifeval.stage_nltk_data`."""
from rocktokens.checking.ifeval import stage_nltk_data
from rocktokens.core.io import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821
stage_nltk_data(snakemake.output[0])  # noqa: F821
