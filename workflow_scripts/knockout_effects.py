"""Rule knockout_effects: Δ(v), Δ(W(v)) with paired-bootstrap p-values and Eq. 22 categories (thin wrapper)."""
import pandas as pd

from rocktokens.io import read_parquet, setup_logging, write_parquet
from rocktokens.knockout import categorize, effects

setup_logging(snakemake.log[0])
ko = snakemake.params.ko
indicators = pd.concat([read_parquet(p, "knockout shard") for p in snakemake.input.shards], ignore_index=True)
eff = effects(read_parquet(snakemake.input.plan), indicators, ko["bootstrap_resamples"], snakemake.params.seed)
write_parquet(eff, snakemake.output.effects)
write_parquet(categorize(eff, read_parquet(snakemake.input.candidates), ko["epsilon"], ko["alpha"]),
              snakemake.output.categories)
