"""Rule compact_tokenizer: the world's compact Qwen3 tokenizer (thin wrapper)."""
import pyarrow.parquet as pq

from rocktokens.core.io import setup_logging
from rocktokens.tokenizer import build_compact_tokenizer
from rocktokens.tokenizer.compact import chat_wrapped

setup_logging(snakemake.log[0])
texts = pq.read_table(snakemake.input.texts, columns=["text"]).column("text").to_pylist()
build_compact_tokenizer(snakemake.input.full, chat_wrapped(snakemake.input.full, texts), snakemake.output.dir)
