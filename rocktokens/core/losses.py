"""Token-level distillation losses, computed in chunks over positions.

Every divergence is one small pair of functions in :data:`DIVERGENCES` (value per position, gradient
with respect to the student logits), picked by name from the config — adding a loss touches this file only.

Memory: :class:`ChunkedHeadLoss` never materialises ``[T, V]`` logits of student and teacher beyond
``chunk`` positions. It computes the loss *and* its gradient with respect to the student's hidden states
and output-layer weight chunk by chunk in the forward pass (the analytic gradients below), so the
backward pass is a scaling and no logits are saved for it.

Normaliser (documented once, used by every stage and every arm): the loss of an optimizer step is

    L = (1 / Z) * sum_{positions n} w_n * D_n

where ``Z`` is the number of response-token positions in the step's *global* batch (all micro-batches,
all processes), independent of the weights ``w``. Changing weights (Eq. 19) therefore changes nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- per-position quantities
def log_ratio(logp_student_tok: torch.Tensor, logp_teacher_tok: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ℓ_t = log πθ(x_t | x_<t) − log π_T(x_t | x_<t), on the sampled token x_t."""
    return logp_student_tok - logp_teacher_tok


def reverse_kl(logp_s: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary reverse KL D_KL(πθ(·|x_<t) ‖ π_T(·|x_<t)) per position.

    The summand of Eq. 1 (OPD objective) and the quantity averaged per token type in Eq. 15.
    ``logp_*``: ``[N, V]`` log-probabilities; returns ``[N]``.
    """
    p_s = logp_s.exp()
    return (p_s * (logp_s - logp_t)).sum(-1)


def reverse_kl_grad(logp_s: torch.Tensor, logp_t: torch.Tensor, return_kl: bool = False):
    """∂ D_KL(πθ‖π_T) / ∂ z_student = p_s ⊙ (A − E_{p_s}[A]) with A = log p_s − log p_t (per position).

    ``return_kl``: also return E_{p_s}[A] = D_KL(πθ‖π_T) ``[N]``, which the gradient computes anyway."""
    p_s = logp_s.exp()
    a = logp_s - logp_t
    kl = (p_s * a).sum(-1, keepdim=True)
    grad = p_s * (a - kl)
    return (grad, kl.squeeze(-1)) if return_kl else grad


def forward_kl(logp_s: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary forward KL D_KL(π_T ‖ πθ) per position (stage-1 off-policy KD)."""
    p_t = logp_t.exp()
    return (p_t * (logp_t - logp_s)).sum(-1)


def forward_kl_grad(logp_s: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """∂ D_KL(π_T‖πθ) / ∂ z_student = p_s − p_t."""
    return logp_s.exp() - logp_t.exp()


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Shannon entropy per position, ``[N, V]`` → ``[N]``."""
    return -(logp.exp() * logp).sum(-1)


def cross_entropy(logp_s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``labels`` per position."""
    return -logp_s.gather(-1, labels[:, None]).squeeze(-1)


def cross_entropy_grad(logp_s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """∂ CE / ∂ z_student = p_s − onehot(label)."""
    g = logp_s.exp()
    g[torch.arange(g.shape[0]), labels] -= 1.0
    return g


@dataclass(frozen=True)
class Divergence:
    value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


DIVERGENCES: Mapping[str, Divergence] = {
    "rkl": Divergence(reverse_kl, reverse_kl_grad),
    "fkl": Divergence(forward_kl, forward_kl_grad),
}


def get_divergence(name: str) -> Divergence:
    try:
        return DIVERGENCES[name]
    except KeyError:
        raise ValueError(f"unknown divergence {name!r}; known: {sorted(DIVERGENCES)}") from None


# ----------------------------------------------------------------------------- the chunked head + loss
@dataclass(frozen=True)
class LossSpec:
    """What the student is trained on at each response position.

    loss = kd_ratio * D(divergence) + (1 − kd_ratio) * CE(label)   (KDFlow's ``kd_ratio``).
    kd_ratio = 1.0 and divergence "rkl" is pure OPD (Eq. 1); 0.5 with "fkl" is stage-1 KD; 0.0 is plain LM
    training (no teacher needed).
    """

    divergence: str = "rkl"
    kd_ratio: float = 1.0
    chunk: int = 1024
    temperature: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.kd_ratio <= 1.0:
            raise ValueError(f"kd_ratio must be in [0, 1], got {self.kd_ratio}")
        if self.chunk < 1:
            raise ValueError(f"loss chunk must be >= 1, got {self.chunk}")
        if self.temperature <= 0:
            raise ValueError(f"KD temperature must be > 0, got {self.temperature}")
        get_divergence(self.divergence)

    @property
    def needs_teacher(self) -> bool:
        return self.kd_ratio > 0.0


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"non-finite values (NaN/inf) in {name}; refusing to train on them")


def chunked_loss_and_grads(
    spec: LossSpec,
    h_s: torch.Tensor,
    w_s: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    normaliser: float,
    h_t: torch.Tensor | None = None,
    w_t: torch.Tensor | None = None,
    need_grad: bool = True,
):
    """Loss and (optionally) gradients w.r.t. ``h_s`` ``[N, H]`` and ``w_s`` ``[V, H]``, chunk by chunk.

    Positions with weight exactly 0 are dropped *before* the output-layer projection of either model:
    their loss term and gradient are zero by definition, so none of their work is done.
    Returns ``(loss, grad_h, grad_w)``; loss is already divided by ``normaliser``.
    """
    keep = weights != 0
    idx = keep.nonzero(as_tuple=True)[0]
    loss = h_s.new_zeros((), dtype=torch.float32)
    grad_h = torch.zeros_like(h_s, dtype=torch.float32) if need_grad else None
    grad_w = torch.zeros_like(w_s, dtype=torch.float32) if need_grad else None
    if normaliser <= 0:
        raise ValueError(f"loss normaliser must be > 0 (no response tokens in the batch?), got {normaliser}")
    if spec.needs_teacher and (h_t is None or w_t is None):
        raise ValueError("this loss needs teacher hidden states and output weights")
    div = get_divergence(spec.divergence)
    tau = spec.temperature
    for start in range(0, idx.numel(), spec.chunk):
        sel = idx[start : start + spec.chunk]
        hs = h_s[sel].float()
        z_s = hs @ w_s.float().T
        _check_finite("student logits", z_s)
        w = weights[sel].float()
        per_pos = torch.zeros(sel.numel(), dtype=torch.float32, device=hs.device)
        g_z = torch.zeros_like(z_s) if need_grad else None
        if spec.needs_teacher:
            z_t = h_t[sel].float() @ w_t.float().T
            _check_finite("teacher logits", z_t)
            lp_s_tau = F.log_softmax(z_s / tau, -1)
            lp_t_tau = F.log_softmax(z_t / tau, -1)
            per_pos += spec.kd_ratio * div.value(lp_s_tau, lp_t_tau)
            if need_grad:
                g_z += spec.kd_ratio * div.grad(lp_s_tau, lp_t_tau) / tau
            del z_t, lp_t_tau
        if spec.kd_ratio < 1.0:
            lp_s = F.log_softmax(z_s, -1)
            per_pos += (1.0 - spec.kd_ratio) * cross_entropy(lp_s, labels[sel])
            if need_grad:
                g_z += (1.0 - spec.kd_ratio) * cross_entropy_grad(lp_s, labels[sel])
        loss = loss + (w * per_pos).sum() / normaliser
        if need_grad:
            g_z *= (w / normaliser)[:, None]
            grad_h[sel] = g_z @ w_s.float()
            grad_w += g_z.T @ hs
    return loss, grad_h, grad_w


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_s, w_s, labels, weights, h_t, w_t, spec, normaliser):
        loss, grad_h, grad_w = chunked_loss_and_grads(
            spec, h_s, w_s, labels, weights, normaliser, h_t, w_t, need_grad=ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        )
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h_s.dtype, w_s.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = (grad_h * grad_out).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None
        gw = (grad_w * grad_out).to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        return gh, gw, None, None, None, None, None, None


def chunked_head_loss(
    spec: LossSpec,
    h_s: torch.Tensor,
    w_s: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    normaliser: float | None = None,
    h_t: torch.Tensor | None = None,
    w_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """Differentiable distillation loss over response positions (Eq. 1 when ``spec`` is pure "rkl").

    ``h_s``: student final hidden states at the positions whose logits predict ``labels`` ``[N, H]``
    (position t predicts x_{t+1}: see :func:`rocktokens.core.sequences.response_positions`);
    ``w_s``: student output-layer weight ``[V, H]``; ``h_t``/``w_t``: the teacher's (no gradient);
    ``weights``: per-position weights w(x_t, t) (Eq. 19; default 1); ``normaliser``: Z (default N).
    """
    if weights is None:
        weights = torch.ones(h_s.shape[0], dtype=torch.float32, device=h_s.device)
    if normaliser is None:
        normaliser = float(h_s.shape[0])
    if h_t is not None:
        h_t = h_t.detach()
        w_t = w_t.detach()
    return _ChunkedHeadLoss.apply(h_s, w_s, labels, weights, h_t, w_t, spec, float(normaliser))
