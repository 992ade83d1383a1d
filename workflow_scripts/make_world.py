"""Rule make_world: the synthetic world, one parquet per split, plus every text (thin wrapper)."""
import logging

import pandas as pd

from rocktokens.core.io import setup_logging, write_parquet
from rocktokens.world import SPLITS, all_texts, make_world

setup_logging(snakemake.log[0])
world = make_world(dict(snakemake.params.world), int(snakemake.params.seed))
for split in SPLITS:
    write_parquet(world[split], getattr(snakemake.output, split))
    logging.getLogger("rocktokens").info("%s: %d rows", split, len(world[split]))
write_parquet(pd.DataFrame({"text": all_texts(world)}), snakemake.output.texts)
