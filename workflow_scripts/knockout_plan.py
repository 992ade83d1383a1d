"""Rule knockout_plan: the screening pool (top K_screen by the rock score), W(v), the local bans and the arms of each
shard (thin wrapper)."""
from rocktokens.core.io import read_json, read_parquet, setup_logging, write_parquet
from rocktokens.knockout.experiment import make_plan
from rocktokens.models import load_tokenizer

setup_logging(snakemake.log[0])
p = snakemake.params
cands, plan = make_plan(read_parquet(snakemake.input.stats, "token stats"),
                        read_parquet(snakemake.input.windows, "high-divergence windows"),
                        read_json(snakemake.input.info), k_screen=p.k_screen, shard_size=p.shard_size,
                        window_min_share=p.window_min_share, policies=p.policies,
                        vocab_size=len(load_tokenizer(snakemake.input.tokenizer)))
write_parquet(cands, snakemake.output.candidates)
write_parquet(plan, snakemake.output.plan)
