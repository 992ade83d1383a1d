"""Rule figure2: the paper's Figure 2 from the rock artifacts and the rock set R as written (thin wrapper)."""
from rocktokens.core.io import read_json, read_parquet, setup_logging
from rocktokens.rocks.figures import figure2

setup_logging(snakemake.log[0])
record = read_json(snakemake.input.record)
figure2(read_parquet(snakemake.input.stats, "token stats"), read_parquet(snakemake.input.rocks, "rock set R"),
        read_parquet(snakemake.input.density), read_parquet(snakemake.input.coverage),
        read_parquet(snakemake.input.summary), snakemake.output[0], dpi=snakemake.params.dpi,
        min_jaccard=record["evidence"]["min_jaccard"], score=record["score"])
