"""Rule knockout_effects: Δ per policy with paired-bootstrap p-values and the Eq. 22 categories of every census, the
core (knockout.core_K, or the rock set R's K) marked (thin wrapper)."""
import pandas as pd

from rocktokens.core.io import read_json, read_parquet, setup_logging, write_parquet
from rocktokens.knockout.experiment import categorize, effects, mark_core

setup_logging(snakemake.log[0])
p = snakemake.params
core_k = p.core_K if p.core_K is not None else int(read_json(snakemake.input.rocks)["K"])
indicators = pd.concat([read_parquet(f, "knockout shard") for f in snakemake.input.shards], ignore_index=True)
eff = effects(read_parquet(snakemake.input.plan), indicators, p.bootstrap_resamples, p.seed)
write_parquet(eff, snakemake.output.effects)
candidates = mark_core(read_parquet(snakemake.input.candidates), core_k)
write_parquet(categorize(eff, candidates, p.epsilon, p.alpha), snakemake.output.categories)
