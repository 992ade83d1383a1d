"""Rule knockout_shard: every arm of one candidate shard (or the baseline) on the knockout benchmarks (thin wrapper).

The post-OPD student is loaded once; the shard's arms are generated chunk by chunk, each chunk one batch stream with a
different banned set per sequence. Finished chunks are kept under params.state, so a killed shard resumes.
"""
import contextlib
import os
import shutil

import torch

from rocktokens.generation import SamplingParams
from rocktokens.io import fingerprint, read_parquet, setup_logging, write_parquet
from rocktokens.knockout import run_shard, select_problems, shard_arms
from rocktokens.models import load_tokenizer
from rocktokens.sampling import open_backend

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
ko, seed = snakemake.params.ko, snakemake.params.seed
arms = shard_arms(read_parquet(snakemake.input.plan, "knockout plan"), snakemake.wildcards.shard)
benches = {b: select_problems(read_parquet(snakemake.input[b], f"benchmark {b}"), ko["n_problems"], b)
           for b in ko["benchmarks"]}
tok = load_tokenizer(snakemake.input.tokenizer)
generation = dict(snakemake.params.generation)
if ko["batch_size"] is not None:
    generation["batch_size"] = ko["batch_size"]
backend = open_backend(snakemake.input.model, tok, generation, seed)
spec = {"fingerprint": fingerprint({"ko": ko, "generation": generation, "seed": seed},
                                   [snakemake.input.model, *(snakemake.input[b] for b in ko["benchmarks"])])}
df = run_shard(backend, tok, benches, arms, ko["samples"],
               SamplingParams(ko["temperature"], ko["top_p"], ko["max_new_tokens"]), seed,
               arms_per_chunk=ko["arms_per_chunk"], state_dir=snakemake.params.state, spec=spec)
write_parquet(df, snakemake.output[0])
shutil.rmtree(snakemake.params.state, ignore_errors=True)
with contextlib.suppress(OSError):  # the state folder of all shards, once empty
    os.rmdir(os.path.dirname(snakemake.params.state))
