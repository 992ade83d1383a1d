"""Rule figure6: knockout Δ vs six predictors with Pearson r and p (thin wrapper)."""
from rocktokens.knockout.figures import figure6
from rocktokens.core.io import read_parquet, setup_logging

setup_logging(snakemake.log[0])
figure6(read_parquet(snakemake.input.categories, "knockout categories"),
        read_parquet(snakemake.input.predictors, "knockout predictors"), snakemake.params.benchmark, snakemake.output[0],
        dpi=snakemake.params.dpi)
