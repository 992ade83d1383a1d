"""Rule rock_stability: stability of the top-K under resampled problems and the chosen K (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_json, write_parquet
from rocktokens.rocks.analysis import choose_rock_K

setup_logging(snakemake.log[0])
p = snakemake.params
out = choose_rock_K(snakemake.input.tokens, read_parquet(snakemake.input.coverage, "coverage"), p.cfg, p.pre, p.post,
                    p.seed)
write_parquet(out["stability"], snakemake.output.stability)
write_parquet(out["summary"], snakemake.output.summary)
write_json(out["chosen"], snakemake.output.chosen)
