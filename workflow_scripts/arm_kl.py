"""Rule arm_kl: the arms' final checkpoints teacher-forced on the measurement split (thin wrapper)."""
import torch

from rocktokens.geometry.gradients import measurement_rollouts
from rocktokens.core.io import read_parquet, setup_logging
from rocktokens.tokens.kl import score_many, scoring_options
from rocktokens.models import check_same_vocab, load_model, load_tokenizer, scoring_devices
from rocktokens.tokenizer import id_map_of
from rocktokens.tokens.trajectories import trajectories, write_token_table

setup_logging(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
dev_t, dev_s = scoring_devices(len(p.arms))  # the rule's GPUs (CPU in the embedded world), as token_kl
tok = load_tokenizer(snakemake.input.tokenizer)
teacher = load_model(snakemake.input.teacher, p.dtype, dev_t)
arms = {a: load_model(snakemake.input[a], p.dtype, d) for a, d in zip(p.arms, dev_s)}
for a, m in arms.items():
    check_same_vocab(tok, load_tokenizer(snakemake.input[a]), teacher, m)
ro = measurement_rollouts(read_parquet(snakemake.input.rollouts, "rollouts"), read_parquet(snakemake.input.split))
scored = score_many(arms, teacher, trajectories(ro), max_len=int(teacher.config.max_position_embeddings),
                    **scoring_options(p.tokens))
id_map = id_map_of(snakemake.input.tokenizer)
write_token_table(ro, scored, tok, id_map, snakemake.output[0])
