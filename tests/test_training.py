"""Trainer and stage drivers on tiny models: learning happens, NaN stops, bad inputs fail clearly."""
import pytest
import torch

from rocktokens.generation.base import GenerationBackend, GenerationResult
from rocktokens.core.losses import LossSpec
from rocktokens.models import load_model
from rocktokens.training.stages import (
    OPDConfig,
    Schedule,
    checkpoint_schedule,
    offline_batch,
    rollout_step,
    run_offline,
)
from rocktokens.core.prompts import encode_pair
from rocktokens.training.trainer import OptimConfig, Trainer


def _seqs(tiny_world, tok, n=32):
    c = tiny_world["world"]["teacher_corpus"].iloc[:n]
    return [encode_pair(tok, p, r) for p, r in zip(c["prompt"], c["response"])]


def test_encode_pair_masks_prompt_and_ends_with_eos(tiny_world, tiny_models):
    tok = tiny_models["tokenizer"]
    s = _seqs(tiny_world, tok, 1)[0]
    assert s.ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(s.ids[: s.prompt_len]).endswith("<|im_start|>assistant\n")


def test_offline_training_reduces_loss_and_exports(tiny_world, tiny_models, tmp_path):
    torch.set_num_threads(1)
    tok = tiny_models["tokenizer"]
    model = load_model(tiny_models["student"])
    seqs = _seqs(tiny_world, tok)
    optim = OptimConfig(lr=3e-3, global_batch=8, micro_batch=4, warmup_ratio=0.0)
    tr = Trainer(model, tok, LossSpec(kd_ratio=0.0), optim, 30, tmp_path / "state")
    hist = run_offline(tr, seqs, Schedule(30, 10, {30: tmp_path / "out"}), seed=0, desc="t")
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_offline_batches_are_epoch_permutations(tiny_world, tiny_models):
    seqs = _seqs(tiny_world, tiny_models["tokenizer"], 10)
    first_epoch = [id(s) for u in range(5) for s in offline_batch(seqs, u, 2, 7)]
    assert sorted(first_epoch) == sorted(id(s) for s in seqs)  # each sequence exactly once per epoch
    assert [id(s) for s in offline_batch(seqs, 3, 2, 7)] == [id(s) for s in offline_batch(seqs, 3, 2, 7)]


def test_nan_loss_stops_training(tiny_world, tiny_models, tmp_path):
    tok = tiny_models["tokenizer"]
    model = load_model(tiny_models["student"])
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    tr = Trainer(model, tok, LossSpec(kd_ratio=0.0), OptimConfig(lr=1e-3, global_batch=4), 5, tmp_path / "s")
    with pytest.raises(FloatingPointError, match="non-finite"):
        run_offline(tr, _seqs(tiny_world, tok, 8), Schedule(5, 1, {5: tmp_path / "out"}), 0, "t")
    assert not (tmp_path / "out").exists()


def test_kd_training_needs_teacher(tiny_models, tmp_path):
    model = load_model(tiny_models["student"])
    with pytest.raises(ValueError, match="needs a teacher"):
        Trainer(model, tiny_models["tokenizer"], LossSpec("fkl", 0.5), OptimConfig(lr=1e-3, global_batch=4), 5, tmp_path)


class _EmptyBackend(GenerationBackend):
    """A backend that returns no tokens: what the trainer must refuse to train on."""

    vocab_size = 64

    def _generate(self, requests, params):
        return [GenerationResult(token_ids=[], logprobs=[], finish_reason="length") for _ in requests]


def test_empty_rollout_is_one_clear_error(tiny_models, tmp_path):
    model = load_model(tiny_models["student"])
    tr = Trainer(model, tiny_models["tokenizer"], LossSpec(kd_ratio=0.0), OptimConfig(lr=1e-3, global_batch=2), 5, tmp_path)
    with pytest.raises(ValueError, match="empty rollout at OPD step 0"):
        rollout_step(tr, _EmptyBackend(), [[1, 2, 3]], 0, 0, OPDConfig(prompts_per_step=1, rollouts_per_prompt=2))


def test_checkpoint_schedule():
    assert checkpoint_schedule(250, 7) == [36, 71, 107, 143, 179, 214, 250]
    assert checkpoint_schedule(8, 2) == [4, 8]
    with pytest.raises(ValueError):
        checkpoint_schedule(3, 5)


def _lr_multiplier_before_transformers(optim: OptimConfig, total_updates: int):
    """The schedule as the trainer computed it by hand before it took it from transformers.get_scheduler (kept
    verbatim): linear warmup (update s of the first W = round(warmup_ratio · T) uses (s + 1) / W), then
    constant, or linear / cosine decay from 1 at update W to min_lr_ratio at update T."""
    import math

    warm = max(0, int(round(optim.warmup_ratio * total_updates)))

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if optim.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, total_updates - warm)
        frac = min(max(frac, 0.0), 1.0)
        if optim.schedule == "linear":
            decay = 1.0 - frac
        elif optim.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * frac))
        else:
            raise ValueError(f"unknown lr schedule {optim.schedule!r}")
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * decay

    return f


# every schedule the config schema allows (schemas/config.schema.yaml: schedule, warmup_ratio and min_lr_ratio in
# [0, 1]), at the values the shipped configs use (config.yaml, configs/*.yaml) and at the edges
LR_CASES = [(schedule, warmup, min_lr) for schedule in ("cosine", "linear", "constant")
            for warmup in (0.0, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0) for min_lr in (0, 0.0, 0.1, 0.25, 1 / 3, 0.9, 1.0)]
LR_TOTALS = (1, 2, 3, 4, 7, 8, 10, 33, 100, 250, 300, 560, 1000)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_lr_multipliers_are_bit_identical_to_the_hand_written_schedule(schedule):
    """Every update's multiplier (and the one after the last update, which the history reports as the next lr)
    equals the former hand-written formula exactly (==, not approx), for every allowed schedule."""
    n = 0
    for sched, warmup, min_lr in LR_CASES:
        if sched != schedule:
            continue
        for total in LR_TOTALS:
            optim = OptimConfig(lr=2e-5, global_batch=1, warmup_ratio=warmup, schedule=schedule, min_lr_ratio=min_lr)
            new, old = optim.lr_lambda(total), _lr_multiplier_before_transformers(optim, total)
            for step in range(total + 2):
                assert new(step) == old(step), (schedule, warmup, min_lr, total, step, new(step), old(step))
                assert optim.lr * new(step) == optim.lr * old(step)
                n += 1
    assert n > 10_000


def _lr_trainer(tiny_models, optim, total, state):
    return Trainer(load_model(tiny_models["student"]), tiny_models["tokenizer"], LossSpec(kd_ratio=0.0), optim,
                   total, state)


@pytest.mark.parametrize("schedule,warmup,min_lr",
                         [("cosine", 0.25, 0.1), ("linear", 0.1, 0.0), ("constant", 0.5, 0.1)])
def test_trainer_lrs_are_the_pinned_sequence_and_resume_continues_it(tiny_world, tiny_models, tmp_path, schedule,
                                                                      warmup, min_lr):
    """The lr each update applies (lr_used) and the lr reported after it (lr) through the real Trainer (accelerate,
    LambdaLR) are lr · multiplier of the hand-written schedule, bit for bit; a run stopped after 4 updates and
    resumed from its saved state (a new Trainer) continues the very same sequence."""
    torch.set_num_threads(1)
    total = 10
    optim = OptimConfig(lr=3e-3, global_batch=2, micro_batch=2, warmup_ratio=warmup, schedule=schedule,
                        min_lr_ratio=min_lr)
    old = _lr_multiplier_before_transformers(optim, total)
    want = [(optim.lr * old(u), optim.lr * old(u + 1)) for u in range(total)]
    seqs = _seqs(tiny_world, tiny_models["tokenizer"], 4)
    tr = _lr_trainer(tiny_models, optim, total, tmp_path / "state")
    got = []
    for u in range(4):
        out = tr.update(offline_batch(seqs, u, 2, 0))
        got.append((out["lr_used"], out["lr"]))
    tr.save_state({"step": 4, "history": []})
    del tr
    tr = _lr_trainer(tiny_models, optim, total, tmp_path / "state")
    assert tr.resume()["step"] == 4 and tr.updates == 4
    assert tr.sched.get_last_lr()[0] == want[3][1]  # the restored scheduler stands where the first run stopped
    for u in range(4, total):
        out = tr.update(offline_batch(seqs, u, 2, 0))
        got.append((out["lr_used"], out["lr"]))
    assert got == want
    if schedule == "cosine":  # the pinned values themselves: warmup 2 updates, then cosine to 0.1 · lr at update 10
        assert [g[0] / optim.lr for g in got[:3]] == [0.5, 1.0, 1.0] and got[-1][1] == pytest.approx(0.1 * optim.lr)


def test_lr_schedule_warmup_then_cosine():
    f = OptimConfig(lr=1.0, global_batch=1, warmup_ratio=0.1, schedule="cosine", min_lr_ratio=0.1).lr_lambda(100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert f(55) == pytest.approx(0.55, abs=0.01)


def test_state_of_other_inputs_is_never_resumed(tiny_world, tiny_models, tmp_path):
    tok = tiny_models["tokenizer"]
    seqs = _seqs(tiny_world, tok, 8)

    def trainer(fp):
        return Trainer(load_model(tiny_models["student"]), tok, LossSpec(kd_ratio=0.0),
                       OptimConfig(lr=1e-3, global_batch=4), 4, tmp_path / "state", fingerprint=fp)

    run_offline(trainer("inputs-a"), seqs, Schedule(4, 2, {}), 0, "t")
    assert trainer("inputs-a").resume()["step"] == 4
    assert trainer("inputs-b").resume() is None  # other inputs: the old state is discarded
    assert not (tmp_path / "state").exists()
