"""Tests for rocktokens.generation (HF backend on tiny random Qwen3 models; vLLM pure parts)."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch

from rocktokens.generation import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    make_backend,
)
from rocktokens.generation.base import PAD, LocalBan
from rocktokens.generation.hf import HFBackend, select_tokens
from rocktokens.generation.vllm_backend import (
    BANNED_KEY,
    LOCAL_KEY,
    LOGITS_PROCESSOR,
    VLLM_MISSING_MESSAGE,
    sampling_kwargs,
)

VOCAB = 96
STOP = 3


def _tiny_model(seed: int = 0, *, peak: float = 1.0):
    """Tiny random Qwen3; ``peak`` scales the LM head so the next-token
    distribution is peaked (then a broken ban/top-p would show up)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        intermediate_size=128,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(peak)
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP spin-waits
    make 2-thread runs 5-10x slower when the CPU is shared; restore afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model():
    return _tiny_model(0)


@pytest.fixture(scope="module")
def peaked_model():
    return _tiny_model(1, peak=25.0)


def _backend(model, batch_size=8, stop_ids=(STOP,)):
    return HFBackend(model=model, stop_ids=stop_ids, batch_size=batch_size, progress=False)


def _prompts(n, seed=123, lo=3, hi=17):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi, (1,), generator=g))
        # avoid the stop id in prompts (irrelevant, but keeps things readable)
        ids = torch.randint(4, VOCAB, (k,), generator=g).tolist()
        out.append(tuple(ids))
    return out


@torch.inference_mode()
def _forward_logits(model, ids):
    return model(input_ids=torch.tensor([list(ids)])).logits[0].float()


# --------------------------------------------------------------- determinism


def test_same_request_same_output_across_calls_batches_and_companions(model):
    target = GenerationRequest(_prompts(1, seed=7)[0], seed=42)
    companions = [GenerationRequest(p, seed=i) for i, p in enumerate(_prompts(12, seed=8, lo=1, hi=30))]
    params = SamplingParams(temperature=1.0, max_new_tokens=20)

    alone = _backend(model, batch_size=1).generate([target], params)[0]
    again = _backend(model, batch_size=1).generate([target], params)[0]
    assert alone == again

    b7 = _backend(model, batch_size=7)
    in_batch = b7.generate(companions[:3] + [target] + companions[3:6], params)[3]  # batch of 7, middle
    other_companions = b7.generate([target] + companions[6:], params)[0]  # different companions / padding
    reordered = b7.generate(companions[::-1] + [target], params)[-1]
    for res in (in_batch, other_companions, reordered):
        assert res.token_ids == alone.token_ids
        assert res.finish_reason == alone.finish_reason
        assert res.logprobs == pytest.approx(alone.logprobs, abs=1e-5)
    assert len(alone.token_ids) > 5


def test_results_keep_request_order(model):
    # prompts of decreasing length: the backend sorts internally and must restore order
    reqs = [GenerationRequest(p, seed=i) for i, p in enumerate(sorted(_prompts(9, seed=3), key=len, reverse=True))]
    params = SamplingParams(max_new_tokens=6)
    batched = _backend(model, batch_size=4).generate(reqs, params)
    single = [_backend(model, batch_size=1).generate([r], params)[0] for r in reqs]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]


def test_different_seeds_give_different_outputs(model):
    prompt = _prompts(1, seed=11)[0]
    reqs = [GenerationRequest(prompt, seed=s) for s in range(6)]
    res = _backend(model).generate(reqs, SamplingParams(temperature=1.0, max_new_tokens=12, top_p=1.0))
    seqs = {tuple(r.token_ids) for r in res}
    assert len(seqs) == len(reqs)


def test_shorter_max_new_tokens_is_prefix(model):
    req = GenerationRequest(_prompts(1, seed=5)[0], seed=9)
    be = _backend(model, stop_ids=())
    short = be.generate([req], SamplingParams(max_new_tokens=5))[0]
    long = be.generate([req], SamplingParams(max_new_tokens=25))[0]
    assert long.token_ids[:5] == short.token_ids


# --------------------------------------------------------------- banned ids


def test_banned_ids_never_appear(peaked_model):
    model = peaked_model
    prompts = _prompts(6, seed=21)
    params = SamplingParams(temperature=1.0, max_new_tokens=15)
    be = _backend(model, stop_ids=())
    free = be.generate([GenerationRequest(p, seed=i) for i, p in enumerate(prompts)], params)
    # ban what the unconstrained model actually produced, plus the top-5 next tokens of every prompt
    banned = set()
    for p, r in zip(prompts, free):
        banned.update(r.token_ids)
        banned.update(_forward_logits(model, p)[-1].topk(5).indices.tolist())
    banned = tuple(sorted(banned))
    assert len(banned) < VOCAB - 10
    reqs = [GenerationRequest(p, seed=i, banned_ids=banned) for i, p in enumerate(prompts)]
    for temp in (1.0, 0.0):
        res = be.generate(reqs, SamplingParams(temperature=temp, max_new_tokens=15))
        for r, f in zip(res, free):
            assert not set(r.token_ids) & set(banned)
            assert r.token_ids != f.token_ids
    # banning is per request: an unbanned companion in the same batch is unaffected
    mixed = be.generate([reqs[0], GenerationRequest(prompts[1], seed=1)], params)
    assert mixed[1].token_ids == free[1].token_ids


def test_banned_logprobs_are_raw(peaked_model):
    """With bans, logprobs stay under the raw (unmasked) distribution."""
    model = peaked_model
    prompt = _prompts(1, seed=31)[0]
    top = _forward_logits(model, prompt)[-1].topk(3).indices.tolist()
    res = _backend(model).generate(
        [GenerationRequest(prompt, seed=0, banned_ids=tuple(top))], SamplingParams(temperature=0.0, max_new_tokens=4)
    )[0]
    logits = _forward_logits(model, prompt + tuple(res.token_ids))
    raw = torch.log_softmax(logits[len(prompt) - 1], -1)[res.token_ids[0]].item()
    assert res.logprobs[0] == pytest.approx(raw, abs=1e-4)
    # a masked distribution would have renormalised (higher) logprobs
    masked = logits[len(prompt) - 1].clone()
    masked[top] = float("-inf")
    assert torch.log_softmax(masked, -1)[res.token_ids[0]].item() > raw + 1e-3


# --------------------------------------------------------------- local bans


def test_local_ban_rule():
    """LocalBan.active: a step matches when its live left context (the prompt excluded, PAD before the response)
    agrees with a stored one on >= m elements; the ban holds from a matching step through `reach` steps after it."""
    from rocktokens.rocks.context import PAD as CONTEXT_PAD

    assert PAD == CONTEXT_PAD
    b = LocalBan(ids=(5, 3, 5), contexts=((1, 2), (PAD, 7)), min_matches=1)
    assert b.ids == (3, 5) and b.w == 2
    assert not b.active([]) and not b.active([9])      # (PAD, PAD), (PAD, 9): PAD agrees with nothing
    assert b.active([9, 7]) and b.active([1, 9])       # offset -1 = 7 / offset -2 = 1
    assert not b.active([7, 1]) and not b.active([2, 1])  # positional: the ids must sit at the same offsets
    assert b.active_steps([9, 1, 4, 4]) == [False, False, False, True]
    reach = LocalBan(ids=(5,), contexts=((1, 2),), min_matches=1, reach=2)
    assert reach.active_steps([9, 1, 4, 4, 4, 4]) == [False, False, False, True, True, True]
    exact = LocalBan(ids=(5,), contexts=((1, 2),), min_matches=2)
    assert exact.active([8, 1, 2]) and not exact.active([8, 1, 3]) and not exact.active([2, 1])
    bag = LocalBan(ids=(5,), contexts=((1, 2),), min_matches=2, similarity="bag")
    assert bag.active([2, 1]) and bag.active([1, 2]) and not bag.active([1, 1])
    start = LocalBan(ids=(5,), contexts=((PAD, PAD),), min_matches=2, pad_policy="equal")
    assert start.active([]) and not start.active([1]) and not start.active([1, 2])  # the response's first step only
    assert LocalBan(ids=(5,), contexts=((1, 2),), min_matches=0).active([])  # m = 0: always active
    assert not LocalBan(ids=(5,), contexts=(), min_matches=1).active([1, 2])  # no stored context: never
    assert LocalBan.from_dict(json.loads(json.dumps(reach.to_dict()))) == reach
    for kw, match in [({"ids": ()}, "ids is empty"), ({"contexts": ((1, 2), (3,))}, "same w"),
                      ({"min_matches": 3}, "min_matches"), ({"reach": -1}, "reach"), ({"ids": (-2,)}, "ids"),
                      ({"similarity": "cosine"}, "similarity"), ({"pad_policy": "maybe"}, "pad_policy"),
                      ({"contexts": ((1, -3),)}, "context ids")]:
        with pytest.raises(ValueError, match=match):
            LocalBan(**{"ids": (5,), "contexts": ((1, 2),), "min_matches": 1, **kw})


def _left(seq, t, w=2):
    return tuple(seq[j] if j >= 0 else PAD for j in range(t - w, t))


def _local_case(seqs, w=2):
    """(v, stored context, sequence, step): in ``seqs[i]``, v occurs at some step before the first step s whose
    left context is `ctx`, and v is the token at s -- so an exact local ban of v in `ctx` bites at s, after v has
    appeared outside the context."""
    for i, seq in enumerate(seqs):
        for t, v in enumerate(seq):
            ctx = _left(seq, t, w)
            if PAD in ctx:
                continue
            s = next(u for u in range(len(seq)) if _left(seq, u, w) == ctx)
            if seq[s] == v and v in seq[:s]:
                return v, ctx, i, s
    raise AssertionError("no occurrence with an earlier occurrence elsewhere: lengthen the test generations")


def test_local_ban_never_bans_outside_a_matching_context(model):
    """The local knockout bans v only where the generated left context matches a stored one: v still appears
    outside such contexts, never inside, and a sequence is unchanged up to the first step where the ban bites."""
    prompts = _prompts(16, seed=61)
    params = SamplingParams(temperature=1.0, max_new_tokens=40)
    be = _backend(model, stop_ids=())
    free = [r.token_ids for r in be.generate([GenerationRequest(p, seed=i) for i, p in enumerate(prompts)], params)]
    v, ctx, i, s = _local_case(free)
    ban = LocalBan(ids=(v,), contexts=(ctx,), min_matches=2)
    reqs = [GenerationRequest(p, seed=j, local_ban=ban) for j, p in enumerate(prompts)]
    companions = [GenerationRequest(prompts[0], seed=0), GenerationRequest(prompts[1], seed=1, banned_ids=(v,))]
    res = be.generate(reqs + companions, params)
    local = [r.token_ids for r in res[: len(prompts)]]
    inside = outside = 0
    for seq in local:
        for t, (tok, on) in enumerate(zip(seq, ban.active_steps(seq))):
            assert on == (_left(seq, t) == ctx)  # active exactly where the live left context is the stored one
            inside += on and tok == v
            outside += (not on) and tok == v
    assert inside == 0 and outside >= 1  # never inside a matching context; still generated outside
    assert local[i][:s] == free[i][:s] and local[i][s] != v  # same sample until the ban bites, where v was sampled
    assert res[-2].token_ids == free[0] and v not in res[-1].token_ids  # batch mates keep their own (static) bans
    greedy = be.generate(reqs[i:i + 1], SamplingParams(temperature=0.0, max_new_tokens=40))[0].token_ids
    assert not any(on and tok == v for tok, on in zip(greedy, ban.active_steps(greedy)))


def test_local_ban_is_validated_against_the_vocabulary(model):
    for ban, match in [(LocalBan(ids=(VOCAB,), contexts=((1, 2),), min_matches=1), "local ban id"),
                       (LocalBan(ids=(5,), contexts=((1, VOCAB + 1),), min_matches=1), "local ban id"),
                       (LocalBan(ids=tuple(range(1, VOCAB)), contexts=((1, 2),), min_matches=1), "whole vocabulary")]:
        with pytest.raises(ValueError, match=match):
            _backend(model).generate([GenerationRequest((5,), seed=0, banned_ids=(0,), local_ban=ban)],
                                     SamplingParams())
    with pytest.raises(TypeError, match="local_ban must be a LocalBan"):
        _backend(model).generate([GenerationRequest((5,), seed=0, local_ban={"ids": [1]})], SamplingParams())


# --------------------------------------------------------------- greedy / logprobs


def test_greedy_equals_manual_argmax(model):
    prompts = _prompts(5, seed=41)
    n_new = 12
    res = _backend(model, stop_ids=()).generate(
        [GenerationRequest(p, seed=i) for i, p in enumerate(prompts)], SamplingParams(temperature=0.0, max_new_tokens=n_new)
    )
    for p, r in zip(prompts, res):
        ids = list(p)
        for _ in range(n_new):
            ids.append(int(_forward_logits(model, ids)[-1].argmax()))
        assert r.token_ids == ids[len(p) :]
        assert r.finish_reason == "length"


def test_greedy_ignores_seed(model):
    p = _prompts(1, seed=42)[0]
    res = _backend(model).generate(
        [GenerationRequest(p, seed=s) for s in (0, 1, 2)], SamplingParams(temperature=0.0, max_new_tokens=10)
    )
    assert res[0] == res[1] == res[2]


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.5, 1.0), (0.0, 1.0)])
def test_logprobs_equal_teacher_forced_log_softmax(model, temperature, top_p):
    prompts = _prompts(4, seed=51)
    res = _backend(model).generate(
        [GenerationRequest(p, seed=10 + i) for i, p in enumerate(prompts)],
        SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=16),
    )
    for p, r in zip(prompts, res):
        assert len(r.logprobs) == len(r.token_ids) > 0
        logits = _forward_logits(model, p + tuple(r.token_ids))
        lsm = torch.log_softmax(logits[len(p) - 1 : -1], dim=-1)
        expected = lsm.gather(1, torch.tensor(r.token_ids).unsqueeze(1)).squeeze(1)
        assert r.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_tiny_top_p_equals_greedy(peaked_model):
    prompts = _prompts(4, seed=61)
    be = _backend(peaked_model)
    greedy = be.generate([GenerationRequest(p, seed=0) for p in prompts], SamplingParams(temperature=0.0, max_new_tokens=12))
    nucleus = be.generate(
        [GenerationRequest(p, seed=100 + i) for i, p in enumerate(prompts)],
        SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=12),
    )
    assert [r.token_ids for r in nucleus] == [r.token_ids for r in greedy]


def test_top_p_restricts_to_nucleus():
    """select_tokens keeps exactly the smallest top set with mass >= top_p."""
    probs = torch.tensor([[0.05, 0.5, 0.1, 0.3, 0.05]], dtype=torch.float64)
    logits = probs.log().float()
    seen = set()
    for i in range(400):
        u = torch.rand(1, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
        seen.add(int(select_tokens(logits, u, temperature=1.0, top_p=0.75)[0]))
    assert seen == {1, 3}  # 0.5 + 0.3 >= 0.75


# --------------------------------------------------------------- stops / lengths


def test_stop_ids_end_generation(model):
    prompt = _prompts(1, seed=71)[0]
    params = SamplingParams(temperature=0.0, max_new_tokens=15)
    free = _backend(model, stop_ids=()).generate([GenerationRequest(prompt, seed=0)], params)[0]
    assert free.finish_reason == "length" and len(free.token_ids) == 15
    stop = free.token_ids[4]
    first = free.token_ids.index(stop)
    res = _backend(model, stop_ids=(stop, VOCAB - 1)).generate([GenerationRequest(prompt, seed=0)], params)[0]
    assert res.finish_reason == "stop"
    assert res.token_ids == free.token_ids[: first + 1]
    assert res.token_ids[-1] == stop
    assert len(res.logprobs) == len(res.token_ids)
    assert res.logprobs == pytest.approx(free.logprobs[: first + 1], abs=1e-6)


def test_stopped_and_running_rows_in_one_batch(model):
    """Rows that stop early get padded inside generate; results strip that."""
    prompts = _prompts(6, seed=72)
    params = SamplingParams(temperature=1.0, max_new_tokens=20)
    reqs = [GenerationRequest(p, seed=i) for i, p in enumerate(prompts)]
    free = _backend(model, stop_ids=()).generate(reqs, params)
    stop = free[0].token_ids[2]
    res = _backend(model, stop_ids=(stop,)).generate(reqs, params)
    for r, f in zip(res, free):
        if stop in f.token_ids:
            k = f.token_ids.index(stop) + 1
            assert (r.token_ids, r.finish_reason) == (f.token_ids[:k], "stop")
        else:
            assert (r.token_ids, r.finish_reason) == (f.token_ids, "length")
    assert res[0].finish_reason == "stop"


def test_max_new_tokens_gives_length(model):
    res = _backend(model, stop_ids=()).generate(
        [GenerationRequest(p, seed=1) for p in _prompts(3, seed=81)], SamplingParams(max_new_tokens=7)
    )
    for r in res:
        assert r.finish_reason == "length" and len(r.token_ids) == 7 == len(r.logprobs)


# --------------------------------------------------------------- loading / robustness


def test_make_backend_from_checkpoint_ignores_checkpoint_generation_config(model, tmp_path):
    """A checkpoint's generation_config.json (top_k, temperature, penalties,
    suppress_tokens, eos) must not change what we sample."""
    model.save_pretrained(tmp_path)
    gen_cfg = {
        "do_sample": True,
        "temperature": 0.3,
        "top_k": 2,
        "top_p": 0.5,
        "repetition_penalty": 3.0,
        "no_repeat_ngram_size": 1,
        "suppress_tokens": list(range(4, 40)),
        "eos_token_id": [5, 6, 7],
        "min_new_tokens": 10,
    }
    (tmp_path / "generation_config.json").write_text(json.dumps(gen_cfg))
    reqs = [GenerationRequest(p, seed=i) for i, p in enumerate(_prompts(4, seed=91))]
    params = SamplingParams(temperature=1.0, max_new_tokens=12)
    loaded = make_backend("hf", str(tmp_path), stop_ids=[STOP], batch_size=3, progress=False)
    assert loaded.model.generation_config.top_k == 2  # the checkpoint config was loaded ...
    got = loaded.generate(reqs, params)
    want = _backend(model).generate(reqs, params)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]  # ... and had no effect
    assert loaded.model.generation_config.top_k == 2  # and is restored afterwards
    loaded.close()


def test_training_mode_is_restored(model):
    m = copy.deepcopy(model).train()
    _backend(m).generate([GenerationRequest((5, 6, 7), seed=0)], SamplingParams(max_new_tokens=3))
    assert m.training


def test_nan_logits_raise_floating_point_error(model):
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.lm_head.weight.fill_(float("nan"))
    reqs = [GenerationRequest((5, 6), seed=0), GenerationRequest((7, 8, 9), seed=1)]
    with pytest.raises(FloatingPointError, match=r"request [01]"):
        _backend(m).generate(reqs, SamplingParams(max_new_tokens=3))


def test_empty_request_list(model):
    assert _backend(model).generate([], SamplingParams()) == []


@pytest.mark.parametrize(
    "reqs,params,match",
    [
        ([GenerationRequest((), seed=0)], SamplingParams(), "empty prompt"),
        ([GenerationRequest((5,), seed=0, banned_ids=(VOCAB,))], SamplingParams(), "banned id"),
        ([GenerationRequest((5,), seed=0, banned_ids=(-1,))], SamplingParams(), "banned id"),
        ([GenerationRequest((5, VOCAB + 3), seed=0)], SamplingParams(), "prompt id"),
        ([GenerationRequest((5,), seed=-1)], SamplingParams(), "seed"),
        ([GenerationRequest((5,), seed=0, banned_ids=tuple(range(VOCAB)))], SamplingParams(), "whole vocabulary"),
        ([GenerationRequest((5,), seed=0)], SamplingParams(temperature=-0.1), "temperature"),
        ([GenerationRequest((5,), seed=0)], SamplingParams(temperature=float("nan")), "temperature"),
        ([GenerationRequest((5,), seed=0)], SamplingParams(top_p=0.0), "top_p"),
        ([GenerationRequest((5,), seed=0)], SamplingParams(top_p=1.5), "top_p"),
        ([GenerationRequest((5,), seed=0)], SamplingParams(max_new_tokens=0), "max_new_tokens"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, reqs, params, match):
    with pytest.raises(ValueError, match=match):
        _backend(model).generate(reqs, params)


def test_bad_request_is_named(model):
    reqs = [GenerationRequest((5,), seed=0), GenerationRequest((), seed=1)]
    with pytest.raises(ValueError, match=r"request 1: empty prompt"):
        _backend(model).generate(reqs, SamplingParams())


def test_bad_backend_construction(model):
    with pytest.raises(ValueError, match="unknown generation backend 'tgi'"):
        make_backend("tgi", "/nowhere", stop_ids=[1])
    with pytest.raises(ValueError, match="stop id"):
        HFBackend(model=model, stop_ids=[VOCAB])
    with pytest.raises(ValueError, match="batch_size"):
        HFBackend(model=model, stop_ids=[1], batch_size=0)


def test_result_validation():
    with pytest.raises(ValueError, match="finish_reason"):
        GenerationResult([1], [0.0], "abort")
    with pytest.raises(ValueError, match="logprobs"):
        GenerationResult([1, 2], [0.0], "stop")


# --------------------------------------------------------------- vLLM (pure parts)


def test_vllm_sampling_kwargs():
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=33)
    kw = sampling_kwargs(GenerationRequest((1, 2), seed=17), params, stop_ids=[3, 9])
    assert kw["seed"] == 17 and kw["temperature"] == 0.8 and kw["top_p"] == 0.95
    assert kw["max_tokens"] == 33 and kw["logprobs"] == 0
    assert kw["stop_token_ids"] == [3, 9] and kw["ignore_eos"] is True
    assert "extra_args" not in kw and "allowed_token_ids" not in kw  # no ban, no mask

    kw = sampling_kwargs(GenerationRequest((1,), seed=0, banned_ids=(7, 2, 7)), params, stop_ids=[3])
    assert kw["extra_args"] == {BANNED_KEY: [2, 7]}  # read by the -inf logits processor, per request
    assert "allowed_token_ids" not in kw

    kw = sampling_kwargs(GenerationRequest((1,), seed=0), SamplingParams(temperature=0.0, top_p=0.5), stop_ids=[])
    assert kw["temperature"] == 0.0 and kw["top_p"] == 1.0

    ban = LocalBan(ids=(4, 2), contexts=((1, 2),), min_matches=1, reach=2)
    kw = sampling_kwargs(GenerationRequest((1,), seed=0, banned_ids=(7,), local_ban=ban), params, stop_ids=[3])
    assert kw["extra_args"] == {BANNED_KEY: [7], LOCAL_KEY: ban.to_dict()}  # plain lists: msgspec-serialisable
    assert LocalBan.from_dict(json.loads(json.dumps(kw["extra_args"][LOCAL_KEY]))) == ban


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_raises_clear_import_error(tmp_path):
    with pytest.raises(ImportError, match="envs/gpu.yaml") as info:
        make_backend("vllm", str(tmp_path), stop_ids=[1])
    assert str(info.value) == VLLM_MISSING_MESSAGE


class _FakeVLLM:
    """Stand-in for the external ``vllm`` package (not our logic): records the
    engine / sampling arguments and answers with canned completions, so the
    backend's plumbing (engine options, per-request params, output mapping)
    runs without a GPU."""

    def __init__(self, vocab_size=10):
        import types

        fake = self
        self.vocab_size = vocab_size
        self.llm_kwargs = None

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw

        class Logprob:
            def __init__(self, logprob):
                self.logprob = logprob

        class LLM:
            def __init__(self, **kw):
                fake.llm_kwargs = kw
                model_config = types.SimpleNamespace(get_vocab_size=lambda: fake.vocab_size)
                self.llm_engine = types.SimpleNamespace(model_config=model_config)

            def generate(self, prompts, sampling_params, use_tqdm=True):
                fake.calls = list(zip(prompts, sampling_params))
                outs = []
                for prompt, sp in fake.calls:
                    n = sp.kw["max_tokens"]
                    toks = [(prompt["prompt_token_ids"][-1] + i + 1) % fake.vocab_size for i in range(n)]
                    stop = [i for i, t in enumerate(toks) if t in sp.kw["stop_token_ids"]]
                    if stop:
                        toks, reason = toks[: stop[0] + 1], "stop"
                    else:
                        reason = "length"
                    lps = [{t: Logprob(-0.5 * (i + 1))} for i, t in enumerate(toks)]
                    comp = types.SimpleNamespace(token_ids=toks, logprobs=lps, finish_reason=reason)
                    outs.append(types.SimpleNamespace(outputs=[comp]))
                return outs

        self.module = types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams)


def test_vllm_backend_plumbing_with_stand_in_module(monkeypatch, tmp_path):
    import sys

    fake = _FakeVLLM(vocab_size=10)
    monkeypatch.setitem(sys.modules, "vllm", fake.module)
    be = make_backend("vllm", str(tmp_path), stop_ids=[7], batch_size=32, dtype="bfloat16", seed=5)
    kw = fake.llm_kwargs
    assert kw["model"] == str(tmp_path) and kw["dtype"] == "bfloat16" and kw["seed"] == 5
    assert kw["tensor_parallel_size"] == 1 and kw["max_num_seqs"] == 32
    assert kw["logprobs_mode"] == "raw_logprobs" and kw["generation_config"] == "vllm"

    reqs = [GenerationRequest((1, 2), seed=3), GenerationRequest((4,), seed=4, banned_ids=(0, 9))]
    res = be.generate(reqs, SamplingParams(temperature=0.5, max_new_tokens=4))
    assert res[0] == GenerationResult([3, 4, 5, 6], [-0.5, -1.0, -1.5, -2.0], "length")
    assert res[1] == GenerationResult([5, 6, 7], [-0.5, -1.0, -1.5], "stop")
    (p0, sp0), (p1, sp1) = fake.calls
    assert p0 == {"prompt_token_ids": [1, 2]} and sp0.kw["seed"] == 3 and "extra_args" not in sp0.kw
    assert sp1.kw["extra_args"] == {BANNED_KEY: [0, 9]}
    assert kw["logits_processors"] == [LOGITS_PROCESSOR]
    with pytest.raises(ValueError, match="banned id"):
        be.generate([GenerationRequest((1,), seed=0, banned_ids=(10,))], SamplingParams())
    with pytest.raises(ValueError, match="unknown vllm backend option"):
        make_backend("vllm", str(tmp_path), stop_ids=[7], temprature=1.0)
    be.close()
    assert be.llm is None


def test_rows_beyond_the_tokenizer_are_never_sampled():
    """Embedding padding (model vocab > tokenizer size) holds no token: it must never be emitted."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(5)
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=128)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight[40:] *= 50  # make the padding rows the most likely ones
    reqs = [GenerationRequest(prompt_ids=(1, 2, 3), seed=s) for s in range(8)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=20)
    free = HFBackend(model=model, stop_ids=(), batch_size=8).generate(reqs, params)
    assert any(t >= 40 for r in free for t in r.token_ids)  # the test can fail
    masked = HFBackend(model=model, stop_ids=(), batch_size=8, n_tokens=40).generate(reqs, params)
    assert all(t < 40 for r in masked for t in r.token_ids)
