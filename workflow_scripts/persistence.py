"""Rule persistence: per-token KL at the early and late checkpoint, Wilcoxon per group (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_json, write_parquet
from rocktokens.geometry.persistence import run_persistence

setup_logging(snakemake.log[0])
p = snakemake.params
table, summary = run_persistence(snakemake.input.tokens, read_parquet(snakemake.input.groups),
                                 read_parquet(snakemake.input.split), p.early, p.late, p.rocks)
write_parquet(table, snakemake.output.table)
write_json(summary, snakemake.output.summary)
