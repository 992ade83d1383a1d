"""Rule rock_analysis: rock scores, context consistency, stability, K, rock sets and controls (thin wrapper)."""
from rocktokens.core.io import setup_logging, write_json, write_parquet
from rocktokens.rocks.analysis import analyse

setup_logging(snakemake.log[0])
out = analyse(snakemake.input.tokens, snakemake.params.cfg, snakemake.params.pre, snakemake.params.post,
              snakemake.params.seed)
for key in ("stats", "coverage", "occurrences", "stability", "summary", "density", "windows"):
    write_parquet(out[key], snakemake.output[key])
write_json(out["chosen"], snakemake.output.chosen)
for k, df in out["sets"].items():
    write_parquet(df, snakemake.output[f"K{k}"])
    write_parquet(out["controls"][k], snakemake.output[f"controls{k}"])
