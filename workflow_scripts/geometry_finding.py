"""Rule geometry_finding: the written finding (markdown) generated from the summaries (thin wrapper)."""
from rocktokens.core.io import read_json, setup_logging, write_text
from rocktokens.geometry.probe import finding_markdown

setup_logging(snakemake.log[0])
probe = read_json(snakemake.input.probe) if "probe" in snakemake.input.keys() else None
write_text(finding_markdown(read_json(snakemake.input.gradients), read_json(snakemake.input.persistence), probe,
                            snakemake.params.alpha), snakemake.output[0])
