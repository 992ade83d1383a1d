"""Rule geometry_groups: selection/measurement split and the three §2.6 groups (thin wrapper)."""
from rocktokens.geometry.gradients import build_groups
from rocktokens.core.io import read_json, setup_logging, write_json, write_parquet

setup_logging(snakemake.log[0])
K = int(read_json(snakemake.input.record)["K"])  # the rock set R as written (rocks/R.json)
p = snakemake.params
split, groups, info = build_groups(snakemake.input.tokens, K, p.cfg, p.rocks, p.post, p.seed,
                                   high_kl_scorer=p.high_kl_scorer, pre=p.pre)
write_parquet(split, snakemake.output.split)
write_parquet(groups, snakemake.output.groups)
write_json(info, snakemake.output.info)
