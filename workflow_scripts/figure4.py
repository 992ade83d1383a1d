"""Rule figure4: sorted knockout effects per benchmark with the ε band and categories (thin wrapper)."""
from rocktokens.knockout.figures import figure4
from rocktokens.core.io import read_parquet, setup_logging

setup_logging(snakemake.log[0])
ko = snakemake.params.ko
figure4(read_parquet(snakemake.input.categories, "knockout categories"), ko["epsilon"], ko["benchmarks"],
        snakemake.output[0], dpi=snakemake.params.dpi)
