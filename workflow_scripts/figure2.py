"""Rule figure2: the paper's Figure 2 from the rock-analysis artifacts (thin wrapper)."""
from rocktokens.rocks.figures import figure2
from rocktokens.core.io import read_json, read_parquet, setup_logging
from rocktokens.rocks.sets import rock_set

setup_logging(snakemake.log[0])
stats = read_parquet(snakemake.input.stats, "token stats")
chosen = read_json(snakemake.input.chosen)
figure2(stats, rock_set(stats, chosen["K"]), read_parquet(snakemake.input.density),  # ranked by stats.rock_score
        read_parquet(snakemake.input.coverage), read_parquet(snakemake.input.summary), snakemake.output[0],
        min_jaccard=chosen["evidence"]["min_jaccard"], score=chosen["score"])
