"""Rule planted_tokens: the world's planted token types with their compact and Qwen3 ids (thin wrapper)."""
import pandas as pd

from rocktokens.core.io import setup_logging, write_parquet
from rocktokens.recovery.planted import planted_table
from rocktokens.tokenizer import ID_MAP_FILE
from rocktokens.world.generator import planted_words

log = setup_logging(snakemake.log[0])
answers = pd.read_parquet(snakemake.input.bench, columns=["answer"])["answer"]
words = planted_words(dict(snakemake.params.world), answers)
table = planted_table(words, pd.read_parquet(f"{snakemake.input.tokenizer}/{ID_MAP_FILE}"))
write_parquet(table, snakemake.output[0])
log.info("planted types: %s", table.groupby("role").size().to_dict())
