"""Rule accuracy_table: pass@1 per checkpoint × benchmark from the evaluate artifacts (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_parquet, write_tsv
from rocktokens.generation.sampling import accuracy_table

setup_logging(snakemake.log[0])
table = accuracy_table([read_parquet(p, "evaluation") for p in snakemake.input], snakemake.params.hard)
write_parquet(table, snakemake.output.parquet)
write_tsv(table, snakemake.output.tsv, float_format="%.4f")
