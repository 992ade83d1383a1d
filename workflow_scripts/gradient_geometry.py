"""Rule gradient_geometry: ḡ_t, cos with G_balanced, Eq. 16 on the measurement split (thin wrapper)."""
import torch

from rocktokens.geometry.gradients import run_gradient_geometry
from rocktokens.models import scoring_devices
from rocktokens.core.io import read_json, read_parquet, setup_logging, write_json, write_parquet
from rocktokens.models import load_model

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
dev_t, (dev_s,) = scoring_devices(1)  # teacher on the first GPU, student on the second (if any)
student = load_model(snakemake.input.student, p.dtype, dev_s)
teacher = load_model(snakemake.input.teacher, p.dtype, dev_t)
table, summary = run_gradient_geometry(
    student, teacher, read_parquet(snakemake.input.rollouts, "rollouts"), read_parquet(snakemake.input.split),
    read_parquet(snakemake.input.groups), chunk=p.tokens["chunk"], batch_size=p.tokens["batch_size"],
    temperature=p.temperature, checkpoint=p.checkpoint, token_dir=snakemake.input.tokens, rocks_cfg=p.rocks)
summary.update(read_json(snakemake.input.info))
write_parquet(table, snakemake.output.table)
write_json(summary, snakemake.output.summary)
