"""Rule teacher_samples: the teacher answers one block of the stage-1 prompts (thin wrapper)."""
import torch

from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.models import load_tokenizer
from rocktokens.generation.sampling import open_backend, prompt_block, teacher_samples

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.sampling
prompts = prompt_block(read_parquet(snakemake.input.prompts, "stage-1 prompts"), snakemake.params.part, cfg["shards"])
tok = load_tokenizer(snakemake.input.tokenizer)
backend = open_backend(snakemake.input.model, tok, snakemake.params.generation, snakemake.params.seed)
write_parquet(teacher_samples(backend, tok, prompts, cfg, snakemake.params.seed), snakemake.output[0])
