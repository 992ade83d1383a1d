"""Distillation losses against direct small computations (autograd on full logits)."""
import pytest
import torch
import torch.nn.functional as F

from rocktokens.core.losses import (
    LossSpec,
    chunked_head_loss,
    entropy,
    forward_kl,
    log_ratio,
    reverse_kl,
    reverse_kl_grad,
)

torch.manual_seed(0)


def _direct(spec, h_s, w_s, labels, weights, z, h_t=None, w_t=None):
    """The same loss from full logits with autograd (what the chunked version must equal)."""
    zs = h_s @ w_s.T
    lps = F.log_softmax(zs / spec.temperature, -1)
    per = torch.zeros(h_s.shape[0])
    if spec.kd_ratio > 0:
        lpt = F.log_softmax((h_t @ w_t.T) / spec.temperature, -1)
        p_s, p_t = lps.exp(), lpt.exp()
        if spec.divergence == "rkl":
            per = per + spec.kd_ratio * (p_s * (lps - lpt)).sum(-1)
        else:
            per = per + spec.kd_ratio * (p_t * (lpt - lps)).sum(-1)
    if spec.kd_ratio < 1:
        per = per + (1 - spec.kd_ratio) * F.cross_entropy(zs, labels, reduction="none")
    return (weights * per).sum() / z


@pytest.mark.parametrize("div,kd,tau,chunk", [("rkl", 1.0, 1.0, 3), ("fkl", 0.5, 1.0, 4), ("fkl", 0.5, 2.0, 100),
                                               ("rkl", 1.0, 1.0, 1), ("fkl", 0.0, 1.0, 5)])
def test_chunked_equals_direct(div, kd, tau, chunk):
    n, h, ht, v = 11, 8, 6, 17
    h_s = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    w_s = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    h_t, w_t = torch.randn(n, ht, dtype=torch.float64), torch.randn(v, ht, dtype=torch.float64)
    labels = torch.randint(0, v, (n,))
    weights = torch.rand(n, dtype=torch.float64)
    weights[[2, 5]] = 0.0
    spec = LossSpec(divergence=div, kd_ratio=kd, chunk=chunk, temperature=tau)
    loss = chunked_head_loss(spec, h_s, w_s, labels, weights.float(), 13.0, h_t, w_t)
    loss.backward()
    g_h, g_w = h_s.grad.clone(), w_s.grad.clone()
    h_s.grad = w_s.grad = None
    ref = _direct(spec, h_s, w_s, labels, weights, 13.0, h_t, w_t)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(g_h.double(), h_s.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_w.double(), w_s.grad, rtol=1e-4, atol=1e-6)
    # weight-0 positions contribute no gradient at all
    assert torch.all(g_h[[2, 5]] == 0)


def test_reverse_kl_matches_definition_and_grad():
    z_s, z_t = torch.randn(4, 9, requires_grad=True), torch.randn(4, 9)
    lps, lpt = F.log_softmax(z_s, -1), F.log_softmax(z_t, -1)
    direct = torch.stack([sum(lps[i].exp()[j] * (lps[i][j] - lpt[i][j]) for j in range(9)) for i in range(4)])
    torch.testing.assert_close(reverse_kl(lps, lpt), direct)
    kl = reverse_kl(lps, lpt).sum()
    (g,) = torch.autograd.grad(kl, z_s)
    torch.testing.assert_close(reverse_kl_grad(lps.detach(), lpt), g, rtol=1e-5, atol=1e-6)
    g2, kl = reverse_kl_grad(lps.detach(), lpt, return_kl=True)
    torch.testing.assert_close(g2, g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl, reverse_kl(lps.detach(), lpt))
    # KL(p||p) = 0, KL >= 0, forward != reverse in general
    assert torch.allclose(reverse_kl(lpt, lpt), torch.zeros(4), atol=1e-6)
    assert (reverse_kl(lps, lpt) >= 0).all() and (forward_kl(lps, lpt) >= 0).all()
    assert not torch.allclose(forward_kl(lps, lpt), reverse_kl(lps, lpt))


def test_log_ratio_and_entropy():
    assert log_ratio(torch.tensor([-1.0]), torch.tensor([-3.0])).item() == pytest.approx(2.0)
    uniform = torch.full((1, 8), -torch.log(torch.tensor(8.0)))
    assert entropy(uniform).item() == pytest.approx(float(torch.log(torch.tensor(8.0))), rel=1e-6)


def test_nan_logits_raise():
    h_s = torch.randn(3, 4, requires_grad=True)
    w_s = torch.randn(5, 4)
    w_s[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="student logits"):
        chunked_head_loss(LossSpec(kd_ratio=0.0), h_s, w_s, torch.zeros(3, dtype=torch.long))


def test_bad_spec():
    with pytest.raises(ValueError, match="unknown divergence"):
        LossSpec(divergence="jsd-typo")
    with pytest.raises(ValueError, match="kd_ratio"):
        LossSpec(kd_ratio=1.5)
