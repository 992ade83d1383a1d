"""Rules evaluate_arm / evaluate_arm_start: pass@1 samples of one arm checkpoint on the hard benchmarks (thin)."""
import pandas as pd
import torch

from rocktokens.io import read_parquet, setup_logging, write_parquet
from rocktokens.models import load_tokenizer
from rocktokens.sampling import evaluate, open_backend

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
tok = load_tokenizer(snakemake.input.tokenizer)
backend = open_backend(snakemake.input.model, tok, snakemake.params.generation, snakemake.params.seed)
frames = [evaluate(backend, tok, read_parquet(snakemake.input[b], f"benchmark {b}"), snakemake.params.eval,
                   snakemake.params.seed, snakemake.params.name, b)
          for b in snakemake.params.eval["benchmarks"]]
write_parquet(pd.concat(frames, ignore_index=True), snakemake.output[0])
