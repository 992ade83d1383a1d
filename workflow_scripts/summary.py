"""Rule summary: "this run vs the paper" — every headline number read from the artifacts (thin wrapper)."""
from rocktokens.core.io import setup_logging
from rocktokens.report.summary import write_summary

log = setup_logging(snakemake.log[0])
table = write_summary(dict(snakemake.input.items()), dict(snakemake.output.items()), snakemake.params.run)
log.info("summary: %d rows -> %s", len(table), snakemake.output.md)
