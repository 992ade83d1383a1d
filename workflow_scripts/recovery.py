"""Rule recovery: planted roles vs the knockout census, confusion matrix, target and figure (thin wrapper)."""
import pandas as pd

from rocktokens.core.io import setup_logging, write_json, write_parquet, write_tsv
from rocktokens.recovery.planted import plot_recovery, run

log = setup_logging(snakemake.log[0])
inp, out = snakemake.input, snakemake.output
accuracy = pd.read_parquet(inp.freeze_accuracy)
res = run(pd.read_parquet(inp.planted), pd.read_parquet(inp.candidates), pd.read_parquet(inp.effects),
          pd.read_parquet(inp.categories), dict(snakemake.params.ko), pd.read_csv(inp.freeze_arms, sep="\t"), accuracy)
write_parquet(res["table"], out.parquet)
write_tsv(res["table"], out.table)
write_tsv(res["confusion"], out.confusion)
write_tsv(res["target"], out.target)
write_tsv(res["freeze"], out.freeze, float_format="%.4g")
plot_recovery(res["table"], res["confusion"], out.figure, dpi=snakemake.params.dpi, freeze=res["freeze"],
              accuracy=accuracy)
write_json(res["summary"], out.summary)
for r in res["target"].itertuples():
    log.info("%s %s: %s — %s", r.benchmark, r.check, "met" if r.met else "NOT met", r.detail)
