"""Rule figure5: accuracy vs step per arm with intervals, masked share and update time (thin)."""
import pandas as pd

from rocktokens.freeze.figures import figure5
from rocktokens.core.io import read_parquet, setup_logging

setup_logging(snakemake.log[0])
figure5(read_parquet(snakemake.input.accuracy, "freeze accuracy"), pd.read_csv(snakemake.input.arms, sep="\t"),
        dict(zip(snakemake.params.arms, (read_parquet(p, "arm history") for p in snakemake.input.histories))),
        snakemake.output[0], dpi=snakemake.params.dpi)
