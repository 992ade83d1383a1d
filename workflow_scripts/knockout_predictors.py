"""Rule knockout_predictors: Table 1's nine predictors of each candidate (DuckDB over the token table; thin wrapper)."""
from rocktokens.tokens.aggregate import Aggregator
from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.knockout.experiment import predictors

setup_logging(snakemake.log[0])
rocks = snakemake.params.rocks
with Aggregator.from_config(snakemake.input.tokens, rocks) as agg:
    pre = agg.token_stats(snakemake.params.pre, rocks["loss"])
cands = read_parquet(snakemake.input.candidates, "knockout candidates")
write_parquet(predictors(read_parquet(snakemake.input.stats, "token stats"), pre, cands["token_id"]), snakemake.output[0])
