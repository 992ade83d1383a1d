"""Rule teacher_samples_merge: the teacher-sample blocks in prompt order, each prompt once (thin wrapper)."""
from rocktokens.core.io import read_parquet, setup_logging, write_parquet
from rocktokens.generation.sampling import merge_blocks

setup_logging(snakemake.log[0])
blocks = [read_parquet(p, "teacher-sample block") for p in snakemake.input.parts]
write_parquet(merge_blocks(blocks, read_parquet(snakemake.input.prompts, "stage-1 prompts")), snakemake.output[0])
