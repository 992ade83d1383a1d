"""Rule knockout_effects: Δ per policy with paired-bootstrap p-values and the Eq. 22 categories of every census
(thin wrapper)."""
import pandas as pd

from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.knockout.experiment import categorize, effects

setup_logging(snakemake.log[0])
p = snakemake.params
indicators = pd.concat([read_parquet(f, "knockout shard") for f in snakemake.input.shards], ignore_index=True)
eff = effects(read_parquet(snakemake.input.plan), indicators, p.bootstrap_resamples, p.seed)
write_parquet(eff, snakemake.output.effects)
write_parquet(categorize(eff, read_parquet(snakemake.input.candidates), p.epsilon, p.alpha), snakemake.output.categories)
