"""Rule knockout_tables: Table 1, and per census Table 2, cross-task agreement, sign tests; multiple testing per
family; power (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_parquet, write_tsv
from rocktokens.knockout.experiment import tables

setup_logging(snakemake.log[0])
p = snakemake.params
out = tables(read_parquet(snakemake.input.categories), read_parquet(snakemake.input.effects),
             read_parquet(snakemake.input.predictors), read_parquet(snakemake.input.candidates),
             benchmarks=p.benchmarks, alpha=p.alpha, fdr_q=p.fdr_q)
for key in ("table1", "table2"):
    write_tsv(out[key], snakemake.output[key])
    write_parquet(out[key], snakemake.output[f"{key}_parquet"])
for key in ("agreement", "multiple_testing", "sign_test", "power"):
    write_tsv(out[key], snakemake.output[key])
