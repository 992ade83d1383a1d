"""Rule freeze_table: pass@1 vs step per arm (hard benchmarks pooled, 95 % intervals) and per-arm shares (thin)."""
import pandas as pd

from rocktokens.freeze.arms import freeze_tables
from rocktokens.core.io import read_parquet, setup_logging, write_parquet, write_tsv

setup_logging(snakemake.log[0])
start = pd.concat([read_parquet(p, "stage-1 evaluation") for p in snakemake.input.start], ignore_index=True)
acc, arms = freeze_tables(start,
                          [read_parquet(p, "arm evaluation") for p in snakemake.input.evals],
                          list(snakemake.input.arms), [read_parquet(p, "arm history") for p in snakemake.input.histories],
                          snakemake.params.arms, snakemake.params.hard)
write_parquet(acc, snakemake.output.accuracy_parquet)
for df, path in ((acc, snakemake.output.accuracy), (arms, snakemake.output.arms)):
    write_tsv(df, path, float_format="%.4g")
