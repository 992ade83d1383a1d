"""Rule rock_set: the top-K rock set for one K and its frequency-matched controls (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.rocks.analysis import rock_set_with_controls

setup_logging(snakemake.log[0])
rocks, controls = rock_set_with_controls(read_parquet(snakemake.input.stats, "token stats"),
                                         int(snakemake.wildcards.k), snakemake.params.cfg, snakemake.params.seed)
write_parquet(rocks, snakemake.output.rocks)
write_parquet(controls, snakemake.output.controls)
