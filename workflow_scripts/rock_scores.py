"""Rule rock_scores: token stats with context consistency and the rock score, coverage, occurrences, windows
(thin wrapper)."""
from rocktokens.core.io import setup_logging, write_json, write_parquet
from rocktokens.rocks.analysis import score_tokens

setup_logging(snakemake.log[0])
p = snakemake.params
out = score_tokens(snakemake.input.tokens, p.cfg, p.pre, p.post, p.n_candidates)
for key in ("stats", "coverage", "occurrences", "windows"):
    write_parquet(out[key], snakemake.output[key])
write_json(out["info"], snakemake.output.info)
