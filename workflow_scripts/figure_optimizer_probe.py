"""Rule figure_optimizer_probe: the optimizer-probe figure from the arms' artifacts (thin wrapper)."""
from rocktokens.geometry.figures import figure_optimizer_probe
from rocktokens.core.io import read_parquet, setup_logging

setup_logging(snakemake.log[0])
arms = snakemake.params.arms
figure_optimizer_probe({a: read_parquet(snakemake.input[f"probe_{a}"]) for a in arms},
                       {a: read_parquet(snakemake.input[f"history_{a}"]) for a in arms},
                       read_parquet(snakemake.input.table), snakemake.output[0],
                       dpi=snakemake.params.dpi)
