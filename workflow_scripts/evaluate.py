"""Rules evaluate / evaluate_arm / evaluate_arm_start: pass@1 samples of one checkpoint on one benchmark (thin)."""
import torch

from rocktokens.checking.ifeval import use_nltk_data
from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.models import load_tokenizer
from rocktokens.generation.sampling import evaluate, open_backend

setup_logging(snakemake.log[0])
use_nltk_data(getattr(snakemake.input, "nltk_data", None))  # hub IFEval: staged punkt_tab
torch.set_num_threads(snakemake.threads)
bench = snakemake.wildcards.bench
problems = read_parquet(snakemake.input.bench, f"benchmark {bench}")
tok = load_tokenizer(snakemake.input.tokenizer)
backend = open_backend(snakemake.input.model, tok, snakemake.params.generation, snakemake.params.seed)
df = evaluate(backend, tok, problems, snakemake.params.eval, snakemake.params.seed, snakemake.params.name, bench)
write_parquet(df, snakemake.output[0])
