"""CNN activations, by name, including the clipped-quantised one that converts well to spikes.

Models take `act_layer(channels) -> nn.Module` (spikingjelly's `spiking_neuron=` idea); this
registry turns a config name into such a factory.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from firecut.errors import FirecutError


class ClipQuant(nn.Module):
    """Clip-floor-shift activation (QCFS; Bu et al., ICLR 2022), learnable clip theta.

        y = theta / L * clamp(floor(x * L / theta + 1/2), 0, L)

    The half-level shift makes its expected error against an IF neuron with threshold theta and
    membrane started at theta/2 zero when T = L, so a CNN trained with it converts at few steps.
    floor() passes gradients straight through; theta learns through y = theta * q(x / theta).
    """

    def __init__(self, levels: int = 4, init: float = 4.0):
        super().__init__()
        self.levels = levels
        self.theta = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta.abs().clamp_min(1e-3)
        if torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad):
            return _ClipQuantSTE.apply(x, theta, self.levels)  # training: fewer passes, same maths
        q = torch.clamp(x / theta, 0.0, 1.0)  # (N, C, ...) in [0, 1]
        q_hard = torch.floor(q * self.levels + 0.5) / self.levels
        q = q + (q_hard - q).detach()  # straight-through floor
        return q * theta

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


class _ClipQuantSTE(torch.autograd.Function):
    """ClipQuant's forward and its straight-through gradient in a few whole-tensor passes (on CPU
    each elementwise op of the autograd version is a pass over the activation). With r = x/theta
    and q = clamp(floor(r L + 1/2), 0, L) / L, so that y = theta q:

        dy/dx     = 1[0 <= r <= 1]                      (clamp passes, floor straight through)
        dy/dtheta = q - r 1[0 <= r <= 1]                 (theta q(x/theta), floor straight through)
    """

    @staticmethod
    def forward(ctx, x, theta, levels):
        r = x / theta.to(x.dtype)  # (N, C, ...)
        ctx.save_for_backward(r, theta)
        ctx.levels = levels
        q = torch.mul(r, levels).add_(0.5).floor_().clamp_(0, levels)  # integer level 0..L
        return q.mul_(theta.to(x.dtype) / levels)

    @staticmethod
    def backward(ctx, g):
        r, theta = ctx.saved_tensors  # r and g: x's dtype (bf16 under autocast)
        L = ctx.levels
        t = r.clamp(0, 1)  # (N, C, ...): r where 0 <= r <= 1, else the nearer end
        # 1[0 <= r <= 1] as 0./1. in r's dtype: on CPU a comparison into a float tensor of the same
        # dtype is one fast pass; a bool tensor, and ops that mix it in, cost ~10x more (bf16)
        inside = torch.eq(t, r, out=torch.empty_like(r))
        dx = g * inside
        dtheta = None
        if ctx.needs_input_grad[1]:
            # L (q - r 1[inside]), with L q = floor(t L + 1/2) (= clamp(floor(r L + 1/2), 0, L)),
            # in place in t
            e = t.mul_(L).add_(0.5).floor_().sub_(r * inside, alpha=L)
            acc = torch.promote_types(g.dtype, torch.float32)  # a bf16 sum of ~1e6 terms drifts
            dtheta = (e.mul_(g).sum(dtype=acc) / L).to(theta.dtype)
        return dx, dtheta, None


ActFactory = Callable[[int], nn.Module]

ACTIVATIONS: dict[str, Callable[..., ActFactory]] = {
    "relu": lambda **_: lambda c: nn.ReLU(inplace=True),
    "relu6": lambda **_: lambda c: nn.ReLU6(inplace=True),
    "silu": lambda **_: lambda c: nn.SiLU(inplace=True),
    "hardswish": lambda **_: lambda c: nn.Hardswish(inplace=True),
    "clipq": lambda levels=4, clip_init=4.0, **_: lambda c: ClipQuant(levels, clip_init),
}

# Module types the converter replaces with spiking neurons.
CONVERTIBLE = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, ClipQuant)


def make_act(name: str, **kwargs) -> ActFactory:
    if name not in ACTIVATIONS:
        raise FirecutError(f"unknown activation '{name}'; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](**kwargs)
