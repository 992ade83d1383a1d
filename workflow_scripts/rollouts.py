"""Rule rollouts: one checkpoint's trajectories on the analysis benchmark (thin wrapper)."""
import torch

from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.models import load_tokenizer
from rocktokens.generation.sampling import open_backend, rollouts

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
tok = load_tokenizer(snakemake.input.tokenizer)
cfg = snakemake.params.cfg
backend = open_backend(snakemake.input.model, tok, snakemake.params.generation, snakemake.params.seed)
df = rollouts(backend, tok, read_parquet(snakemake.input.bench, "analysis benchmark"), cfg, snakemake.params.seed,
              snakemake.wildcards.ckpt, cfg["benchmark"])
write_parquet(df, snakemake.output[0])
