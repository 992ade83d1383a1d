"""Rule token_kl: teacher-force the scorers and the teacher on the post-OPD trajectories (thin wrapper)."""
import torch

from rocktokens.core.io import read_parquet, setup_logging
from rocktokens.tokens.kl import score_many, scoring_options
from rocktokens.models import check_same_vocab, load_model, load_tokenizer, scoring_devices
from rocktokens.tokenizer import id_map_of
from rocktokens.tokens.trajectories import trajectories, write_token_table

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.cfg
tok = load_tokenizer(snakemake.input.tokenizer)
dev_t, dev_s = scoring_devices(len(snakemake.params.scorers))  # the rule's GPUs (CPU in the embedded world)
teacher = load_model(snakemake.input.teacher, snakemake.params.dtype, dev_t)
students = {s: load_model(snakemake.input[s], snakemake.params.dtype, d) for s, d in zip(snakemake.params.scorers, dev_s)}
for s, m in students.items():
    check_same_vocab(tok, load_tokenizer(snakemake.input[s]), teacher, m)
ro = read_parquet(snakemake.input.rollouts, "rollouts")
scored = score_many(students, teacher, trajectories(ro), max_len=int(teacher.config.max_position_embeddings),
                    **scoring_options(cfg))
id_map = id_map_of(snakemake.input.tokenizer)
write_token_table(ro, scored, tok, id_map, snakemake.output[0])
