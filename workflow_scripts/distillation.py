"""Rule distillation: does the distillation work? Per-checkpoint pass@1, paired gains, the OPD KL curve (thin)."""
import pandas as pd

from rocktokens.evaluate.distillation import distillation_table, kl_curve
from rocktokens.evaluate.figures import figure_distillation
from rocktokens.core.io import read_parquet, setup_logging, write_json, write_tsv

setup_logging(snakemake.log[0])
p = snakemake.params
evals = pd.concat([read_parquet(f, "evaluation") for f in snakemake.input.evals], ignore_index=True)
history = read_parquet(snakemake.input.history, "stage-2 history") if "history" in snakemake.input.keys() else None
table, gains, summary = distillation_table(evals, p.benchmark, p.n_resamples, p.seed)
if history is not None:  # source: checkpoints has no stage-2 history
    summary["kl_curve"] = kl_curve(history)
figure_distillation(table, history, snakemake.output.figure, dpi=p.dpi, benchmark=p.benchmark)
write_tsv(table, snakemake.output.checkpoints, float_format="%.4f")
write_tsv(gains, snakemake.output.gains, float_format="%.4f")
write_json(summary, snakemake.output.summary)
