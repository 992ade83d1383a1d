"""Rule geometry_finding: the written finding (markdown) generated from the summaries (thin wrapper)."""
import json

from rocktokens.io import setup_logging, write_text
from rocktokens.probe import finding_markdown

setup_logging(snakemake.log[0])
load = lambda path: json.loads(open(path).read())  # noqa: E731
probe = load(snakemake.input.probe) if "probe" in snakemake.input.keys() else None
write_text(finding_markdown(load(snakemake.input.gradients), load(snakemake.input.persistence), probe,
                            snakemake.params.alpha), snakemake.output[0])
