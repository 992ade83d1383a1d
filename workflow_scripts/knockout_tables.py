"""Rule knockout_tables: Table 1, Table 2, cross-task agreement, multiple testing, sign tests (thin wrapper)."""
from rocktokens.io import read_parquet, setup_logging, write_parquet, write_tsv
from rocktokens.knockout import tables

setup_logging(snakemake.log[0])
out = tables(read_parquet(snakemake.input.categories), read_parquet(snakemake.input.effects),
             read_parquet(snakemake.input.predictors), read_parquet(snakemake.input.candidates), snakemake.params.ko)
for key in ("table1", "table2"):
    write_tsv(out[key], snakemake.output[key])
    write_parquet(out[key], snakemake.output[f"{key}_parquet"])
for key in ("agreement", "multiple_testing", "sign_test", "power"):
    write_tsv(out[key], snakemake.output[key])
