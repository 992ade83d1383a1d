"""Rule figure3: the paper's Figure 3 from the geometry and persistence tables (thin wrapper)."""
from rocktokens.geometry.figures import figure3
from rocktokens.core.io import read_parquet, setup_logging

setup_logging(snakemake.log[0])
figure3(read_parquet(snakemake.input.gradients), read_parquet(snakemake.input.persistence), snakemake.output[0],
        early=snakemake.params.early, late=snakemake.params.late, dpi=snakemake.params.dpi)
