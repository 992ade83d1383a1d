"""Teacher-forced per-token scoring against direct computations from full ``model(ids).logits``."""
import math

import numpy as np
import pytest
import torch

from rocktokens.tokens import kl as klmod
from rocktokens.tokens.kl import COLUMNS, score_many, score_sequences, to_frame
from rocktokens.models import VocabMismatchError
from rocktokens.core.sequences import TokenSequence

V = 300


def _dense(seed, vocab=V, tie=True):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=128,
                      tie_word_embeddings=tie, initializer_range=0.3, pad_token_id=0)
    return Qwen3ForCausalLM(cfg).eval()


def _moe(seed, vocab=V):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3MoeConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, intermediate_size=64, max_position_embeddings=128,
                         tie_word_embeddings=True, initializer_range=0.3, num_experts=4, num_experts_per_tok=2,
                         moe_intermediate_size=32, decoder_sparse_step=1, norm_topk_prob=True, pad_token_id=0)
    return Qwen3MoeForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def models():
    return {"teacher": _moe(1), "s1": _dense(2), "s2": _dense(3)}


def _seqs(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        total = int(torch.randint(4, 30, (1,), generator=g))
        prompt = int(torch.randint(1, total, (1,), generator=g))
        ids = torch.randint(0, V, (total,), generator=g).tolist()
        out.append(TokenSequence(ids=ids, prompt_len=prompt))
    return out


def _direct(student, teacher, seqs):
    """One unpadded full forward per sequence; formulas written out here independently of losses.py."""
    rows = {k: [] for k in COLUMNS}
    with torch.no_grad():
        for i, s in enumerate(seqs):
            ids = torch.tensor([s.ids])
            zs = student(ids).logits[0].double()
            zt = teacher(ids).logits[0].double()
            P, L = s.prompt_len, len(s.ids)
            lps = torch.log_softmax(zs, -1)[P - 1 : L - 1]  # logit at t-1 scores token t
            lpt = torch.log_softmax(zt, -1)[P - 1 : L - 1]
            tok = torch.tensor(s.ids[P:])
            ps, pt = lps.exp(), lpt.exp()
            a = lps.gather(1, tok[:, None])[:, 0]
            b = lpt.gather(1, tok[:, None])[:, 0]
            cols = {"seq": [i] * (L - P), "position": list(range(L - P)), "token_id": tok.tolist(),
                    "logp_student": a, "logp_teacher": b, "log_ratio": a - b,
                    "rkl": (ps * (lps - lpt)).sum(-1), "fkl": (pt * (lpt - lps)).sum(-1),
                    "entropy_student": -(ps * lps).sum(-1), "entropy_teacher": -(pt * lpt).sum(-1)}
            for k, v in cols.items():
                rows[k].extend(v.tolist() if torch.is_tensor(v) else v)
    return {k: np.asarray(v) for k, v in rows.items()}


def _assert_columns_close(got, ref, tol=1e-5):
    assert set(got) == set(COLUMNS)
    for k in COLUMNS:
        assert got[k].shape == ref[k].shape, k
        if k in klmod.INT_COLUMNS:
            assert got[k].dtype == np.int32, k
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        else:
            assert got[k].dtype == np.float32, k
            np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol, err_msg=k)


def test_columns_match_full_logits(models):
    seqs = _seqs(0)
    got = score_sequences(models["s1"], models["teacher"], seqs, chunk=7, batch_size=4, progress=False)
    ref = _direct(models["s1"], models["teacher"], seqs)
    _assert_columns_close(got, ref)
    # the comparison is not vacuous: distributions are far from uniform and student ≠ teacher
    assert got["rkl"].mean() > 0.1 and got["fkl"].mean() > 0.1
    assert got["entropy_student"].max() < math.log(V) - 0.1
    assert np.all(got["rkl"] >= -1e-6) and np.all(got["fkl"] >= -1e-6)


def test_alignment_and_order(models):
    seqs = _seqs(1, n=7)
    got = score_sequences(models["s1"], models["teacher"], seqs, chunk=5, batch_size=3, progress=False)
    assert len(got["seq"]) == sum(s.n_response for s in seqs)
    for j in range(len(got["seq"])):
        s = seqs[got["seq"][j]]
        assert got["token_id"][j] == s.ids[s.prompt_len + got["position"][j]]
    assert list(to_frame(got).columns) == list(COLUMNS)
    # input order: seq non-decreasing, positions 0..n-1 within each sequence
    assert np.all(np.diff(got["seq"]) >= 0)
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(got["position"][got["seq"] == i], np.arange(s.n_response))
    # the logit of position t-1 (not t) scores token t: compare against the off-by-one alternative
    s = seqs[0]
    with torch.no_grad():
        lp = torch.log_softmax(models["s1"](torch.tensor([s.ids])).logits[0].double(), -1)
    P, L = s.prompt_len, len(s.ids)
    right = lp[torch.arange(P - 1, L - 1), torch.tensor(s.ids[P:])].numpy()
    shifted = lp[torch.arange(P, L), torch.tensor(s.ids[P:])].numpy()
    mine = got["logp_student"][got["seq"] == 0]
    np.testing.assert_allclose(mine, right, atol=1e-5)
    assert np.abs(mine[:-1] - shifted[:-1]).max() > 1e-2


def test_chunk_size_invariance(models):
    seqs = _seqs(2)
    res = [score_sequences(models["s1"], models["teacher"], seqs, chunk=c, batch_size=2, progress=False)
           for c in (1, 3, 10_000)]
    for other in res[1:]:
        for k in COLUMNS:
            np.testing.assert_allclose(other[k], res[0][k], rtol=2e-6, atol=1e-6, err_msg=k)


def test_batch_size_invariance(models):
    seqs = _seqs(3)
    a = score_sequences(models["s1"], models["teacher"], seqs, batch_size=1, progress=False)
    b = score_sequences(models["s1"], models["teacher"], seqs, batch_size=16, progress=False)
    for k in COLUMNS:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_score_many_equals_separate_calls(models):
    seqs = _seqs(4)
    students = {"pre": models["s1"], "post": models["s2"]}
    many = score_many(students, models["teacher"], seqs, chunk=4, batch_size=3, progress=False)
    assert list(many) == ["pre", "post"]
    for name, m in students.items():
        one = score_sequences(m, models["teacher"], seqs, chunk=4, batch_size=3, progress=False)
        for k in COLUMNS:
            np.testing.assert_allclose(many[name][k], one[k], rtol=0, atol=1e-6, err_msg=f"{name}/{k}")
    # same rows, different students: teacher columns agree, student columns do not
    np.testing.assert_array_equal(many["pre"]["logp_teacher"], many["post"]["logp_teacher"])
    assert not np.allclose(many["pre"]["logp_student"], many["post"]["logp_student"])


def test_output_layer_bias_is_used(models):
    student = _dense(9, tie=False)
    with torch.no_grad():
        head = torch.nn.Linear(32, V, bias=True)
        head.weight.copy_(student.lm_head.weight)
        head.bias.normal_(0, 2.0)
    student.lm_head = head
    seqs = _seqs(7, n=3)
    got = score_sequences(student, models["teacher"], seqs, chunk=4, batch_size=2, progress=False)
    _assert_columns_close(got, _direct(student, models["teacher"], seqs))


@pytest.mark.slow
def test_compiled_matches_eager(models):
    """compiled=True (torch.compile of the same reductions) agrees with the direct computation."""
    seqs = _seqs(8)
    got = score_sequences(models["s1"], models["teacher"], seqs, chunk=7, batch_size=4, progress=False,
                          compiled=True)
    _assert_columns_close(got, _direct(models["s1"], models["teacher"], seqs))


def test_never_forms_full_logits(models, monkeypatch):
    """The output layer is applied to at most ``chunk`` positions at a time; lm_head.forward never runs."""
    rows_seen = []
    real_project, real_base2 = klmod.project, klmod._project_base2

    def spy(h, head, out):
        rows_seen.append((h.shape[0], tuple(out.shape)))
        return real_project(h, head, out)

    def spy2(h, head, m, out):
        rows_seen.append((h.shape[0], tuple(out.shape)))
        return real_base2(h, head, m, out)

    monkeypatch.setattr(klmod, "project", spy)
    monkeypatch.setattr(klmod, "_project_base2", spy2)
    calls = []
    hooks = [m.get_output_embeddings().register_forward_hook(lambda *a: calls.append(1))
             for m in (models["s1"], models["teacher"])]
    try:
        score_sequences(models["s1"], models["teacher"], _seqs(5), chunk=3, progress=False)
    finally:
        for h in hooks:
            h.remove()
    assert rows_seen and max(r for r, _ in rows_seen) <= 3
    assert all(shape[0] == r and shape[1] <= V for r, shape in rows_seen)
    assert not calls
    rows_seen.clear()
    score_sequences(models["s1"], models["teacher"], _seqs(5), chunk=3, vocab_block=64, progress=False)
    assert max(shape[1] for _, shape in rows_seen) == 64  # the vocabulary is streamed in blocks


def test_large_logit_range_across_blocks_is_stable():
    """A later block whose logits exceed the first block's by far (forcing a re-shift) stays exact."""
    g = torch.Generator().manual_seed(5)
    h = torch.randn(4, 3, generator=g)
    w = torch.randn(40, 3, generator=g)
    w[35:] *= 80.0  # the last block's logits are ~80x larger: base-2 exponents far above 64
    labels = torch.tensor([0, 36, 39, 10])
    got = klmod._streamed_columns(h, (w, None), h * 0.5, (w, None), labels, klmod.Workspace(4, 8))
    lps, lpt = torch.log_softmax((h @ w.t()).double(), -1), torch.log_softmax((0.5 * h @ w.t()).double(), -1)
    from rocktokens.core.losses import entropy, reverse_kl

    torch.testing.assert_close(got[3].double(), reverse_kl(lps, lpt), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[5].double(), entropy(lps), rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(x).all() for x in got)


@pytest.mark.parametrize("block", [1, 64, 77, 299, 4096])
def test_vocab_blocks_give_the_same_columns(models, block):
    """The online (blocked) reductions agree with the direct computation for any block size, including blocks
    that do not divide V and a first block whose max is far below a later block's."""
    seqs = _seqs(11)
    got = score_sequences(models["s1"], models["teacher"], seqs, chunk=5, batch_size=3, progress=False,
                          vocab_block=block)
    _assert_columns_close(got, _direct(models["s1"], models["teacher"], seqs))


def test_streamed_identities_equal_the_loss_functions():
    """The entropy/KL identities used when streaming give the values of rocktokens.core.losses on the same logits."""
    from rocktokens.core.losses import entropy, forward_kl, log_ratio, reverse_kl

    g = torch.Generator().manual_seed(3)
    hs, ht = torch.randn(6, 8, generator=g), torch.randn(6, 5, generator=g)
    ws_, wt = torch.randn(50, 8, generator=g) * 2, torch.randn(50, 5, generator=g) * 2
    bias = torch.randn(50, generator=g)
    labels = torch.randint(0, 50, (6,), generator=g)
    ws = klmod.Workspace(6, 16)
    got = klmod._streamed_columns(hs, (ws_, bias), ht, (wt, None), labels, ws)
    lps, lpt = torch.log_softmax(hs @ ws_.t() + bias, -1), torch.log_softmax(ht @ wt.t(), -1)
    a, b = lps.gather(1, labels[:, None])[:, 0], lpt.gather(1, labels[:, None])[:, 0]
    want = (a, b, log_ratio(a, b), reverse_kl(lps, lpt), forward_kl(lps, lpt), entropy(lps), entropy(lpt))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_mode_and_grad_untouched(models):
    s = models["s1"]
    s.train()
    try:
        got = score_sequences(s, models["teacher"], _seqs(6, n=2), progress=False)
        assert s.training and not models["teacher"].training
        assert all(p.grad is None for p in s.parameters())
        assert len(got["seq"]) > 0
    finally:
        s.eval()


# ----------------------------------------------------------------------------- errors
def test_empty_input(models):
    with pytest.raises(ValueError, match="empty"):
        score_sequences(models["s1"], models["teacher"], [], progress=False)


def test_vocab_mismatch(models):
    with pytest.raises(VocabMismatchError, match="300 vs 320|320 vs 300"):
        score_sequences(_dense(5, vocab=320), models["teacher"], _seqs(0, n=2), progress=False)


def test_too_long(models):
    seqs = _seqs(0, n=4)
    seqs[2] = TokenSequence(ids=list(range(1, 41)), prompt_len=5)
    with pytest.raises(ValueError, match=r"sequence 2 has length 40 > max_len 32"):
        score_sequences(models["s1"], models["teacher"], seqs, max_len=32, progress=False)


def test_token_out_of_vocab(models):
    seqs = [TokenSequence(ids=[1, 2, V + 5], prompt_len=1)]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        score_sequences(models["s1"], models["teacher"], seqs, progress=False)


def test_nan_logits_name_the_sequence(models):
    """A NaN input embedding of a token found only in sequence 3 poisons that sequence alone."""
    student = _dense(7, tie=False)
    seqs = [TokenSequence(ids=[1, 2, 3, 4, 5, 6], prompt_len=2) for _ in range(5)]
    seqs[3] = TokenSequence(ids=[1, 2, 299, 4, 5, 6], prompt_len=2)
    with torch.no_grad():
        student.model.embed_tokens.weight[299] = float("nan")
    with pytest.raises(FloatingPointError, match=r"student 'student' for sequence 3"):
        score_sequences(student, models["teacher"], seqs, batch_size=2, progress=False)


def test_inf_logits_in_teacher(models):
    teacher = _dense(8, tie=False)
    with torch.no_grad():
        teacher.lm_head.weight[17] = float("inf")
    with pytest.raises(FloatingPointError, match=r"teacher for sequence \d"):
        score_sequences(models["s1"], teacher, _seqs(0, n=3), progress=False)
