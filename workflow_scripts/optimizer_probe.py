"""Rule optimizer_probe: mechanism + outcome checks of the optimizer-suppression hypothesis (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_json, write_parquet
from rocktokens.geometry.probe import run_probe_analysis

setup_logging(snakemake.log[0])
p = snakemake.params
adaptive, plain = p.arms
probes = {a: read_parquet(snakemake.input[f"probe_{a}"], f"probe records of arm {a}") for a in p.arms}
table, summary = run_probe_analysis(snakemake.input.arm_tokens, snakemake.input.tokens,
                                    read_parquet(snakemake.input.groups), read_parquet(snakemake.input.split), probes,
                                    start=p.start, adaptive=adaptive, plain=plain, reference=p.reference,
                                    alpha=p.alpha, rocks_cfg=p.rocks)
write_parquet(table, snakemake.output.table)
write_json(summary, snakemake.output.summary)
