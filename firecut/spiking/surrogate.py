"""Surrogate gradients: the spike S = H(U) forward (strictly U > 0), a smooth dS/dU backward.

The derivatives are snntorch's (atan, fast_sigmoid, sigmoid) with its default parameters, written
into a caller's buffer with in-place ops: the fused neuron (`lif._FusedLIF`) and the Triton
kernels' reference call them directly; the reference loop goes through `Spike`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from firecut.errors import FirecutError


def d_atan(u: torch.Tensor, a: float, out: torch.Tensor,
           scale: torch.Tensor | None = None) -> torch.Tensor:
    """dS/dU = (a/2) / (1 + (pi/2 a U)^2), times `scale` (broadcast over u) where given."""
    torch.mul(u, math.pi / 2 * a, out=out)
    one = torch.ones((), dtype=out.dtype, device=out.device)
    torch.addcmul(one, out, out, out=out)  # 1 + q^2 in one pass
    return _over(out, a / 2, scale)


def d_fast_sigmoid(u: torch.Tensor, k: float, out: torch.Tensor,
                   scale: torch.Tensor | None = None) -> torch.Tensor:
    """dS/dU = 1 / (k |U| + 1)^2, times `scale` where given"""
    torch.abs(u, out=out)
    return _over(out.mul_(k).add_(1.0).square_(), 1.0, scale)


def d_sigmoid(u: torch.Tensor, k: float, out: torch.Tensor,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """dS/dU = k e^{-kU} / (e^{-kU} + 1)^2 = k sig(kU) sig(-kU): snntorch's derivative, computed
    without overflow (snntorch's form gives NaN for very negative U) or cancellation; times
    `scale` where given."""
    other = torch.mul(u, -k).sigmoid_()
    return torch.mul(u, k, out=out).sigmoid_().mul_(other).mul_(k if scale is None else scale * k)


def _over(den: torch.Tensor, c: float, scale: torch.Tensor | None) -> torch.Tensor:
    """c * scale / den, in place in den: one pass (the fused neuron folds its threshold in here)."""
    if scale is None:
        return den.reciprocal_().mul_(c)
    return torch.div(scale * c, den, out=den)


class Spike(torch.autograd.Function):
    """S = H(U) forward; dL/dU = dL/dS * deriv(U, param) backward."""

    @staticmethod
    def forward(ctx, u, deriv, param):
        ctx.save_for_backward(u)
        ctx.deriv, ctx.param = deriv, param
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        return grad * ctx.deriv(u, ctx.param, torch.empty_like(u)), None, None


# name -> (derivative, default parameter)
SURROGATES: dict[str, tuple[Callable, float]] = {
    "atan": (d_atan, 2.0),  # alpha
    "fast_sigmoid": (d_fast_sigmoid, 25.0),  # slope
    "sigmoid": (d_sigmoid, 25.0),  # slope
}


def surrogate_entry(name: str, param: float | None) -> tuple[Callable, float]:
    if name not in SURROGATES:
        raise FirecutError(f"unknown surrogate '{name}'; choose one of: {', '.join(SURROGATES)}")
    deriv, default = SURROGATES[name]
    return deriv, default if param is None else float(param)


def surrogate(name: str, param: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    deriv, p = surrogate_entry(name, param)
    return lambda u: Spike.apply(u, deriv, p)


