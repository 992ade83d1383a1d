"""Rule rock_set_R: the study's one rock set R (the chosen K's), its controls, densities and R.json (thin wrapper)."""
from rocktokens.core.io import read_json, read_parquet, setup_logging, write_json, write_parquet
from rocktokens.rocks.analysis import definitional_set

setup_logging(snakemake.log[0])
chosen = read_json(snakemake.input.chosen)
i = snakemake.params.Ks.index(int(chosen["K"]))
out = definitional_set(snakemake.input.tokens, read_parquet(snakemake.input.stats, "token stats"),
                       read_parquet(snakemake.input.occurrences, "occurrences"),
                       read_parquet(snakemake.input.sets[i], "rock set"),
                       read_parquet(snakemake.input.controls[i], "rock controls"), chosen,
                       read_json(snakemake.input.info), snakemake.params.cfg)
write_parquet(out["rocks"], snakemake.output.rocks)
write_parquet(out["controls"], snakemake.output.controls)
write_parquet(out["density"], snakemake.output.density)
write_json(out["record"], snakemake.output.record)
