"""A trained net as plain tensor ops, for export: BN folded into convs, LIF recurrences unrolled.

`unroll(model)` returns a copy that computes what `model` computes in eval mode, with
  - every conv -> batch-norm pair folded into one conv (the pair is found by the convention of
    firecut's models: a block with children `conv` (nn.Conv2d) and `bn` (nn.BatchNorm2d));
  - every LIF neuron replaced by `UnrolledLIF`: the same recurrence as the fused neuron's
    forward, written as a Python loop over a fixed T, so tracing (TorchScript, ONNX) records T
    copies of a few elementwise ops and no custom autograd Function.
The layer-major layout stays as in `SpikingNet`: a batch of B images runs as T*B rows (t-major)
through the stateless layers, each neuron views them as (T, B, ...). A CNN has no time loop.

Folding changes float rounding (one multiply-add instead of a conv then a BN). A spike is a
discontinuous function of the membrane, and a gated max-pool's choice of the largest running sum
is discontinuous too, so a spiking net can amplify that rounding; `firecut.export.verify` says how the
export is checked despite it, and README ("Export and predict") what it measured.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from firecut.spiking import LIF, SpikingNet


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv equal to bn(conv(x)) in eval mode; the arithmetic in float64, stored as float32.

        s  = gamma / sqrt(running_var + eps)          per output channel
        W' = W * s                                    (C_out, C_in/g, k, k)
        b' = (b - running_mean) * s + beta
    """
    f64 = lambda t: t.detach().to(torch.float64)  # noqa: E731
    gamma = f64(bn.weight) if bn.weight is not None else torch.ones_like(f64(bn.running_var))
    s = gamma / torch.sqrt(f64(bn.running_var) + bn.eps)  # (C_out,)
    bias = f64(conv.bias) if conv.bias is not None else torch.zeros_like(s)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    with torch.no_grad():
        fused.weight.copy_((f64(conv.weight) * s.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        beta = f64(bn.bias) if bn.bias is not None else torch.zeros_like(s)
        fused.bias.copy_(((bias - f64(bn.running_mean)) * s + beta).to(conv.weight.dtype))
    return fused


def fold_all_bn(model: nn.Module) -> int:
    """Folds (in place) every block's `bn` into its `conv`; returns how many were folded."""
    folded = 0
    for block in list(model.modules()):
        conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            block.conv, block.bn = fold_bn(conv, bn), nn.Identity()
            folded += 1
    return folded


class UnrolledLIF(nn.Module):
    """The LIF neuron's inference forward, unrolled over a fixed T in plain tensor ops.

    Input (T*B, C, ...) viewed as (T, B, C, ...), or (B, C, ...) presented at every step when
    `broadcast_input`. With U[-1] = v_init * thr and S[-1] = 0, per step (firecut.spiking.LIF):

        U[t] = beta * (1 - S[t-1] if reset == "zero" else 1) * U[t-1] + X[t]
               - (S[t-1] * thr if reset == "subtract" else 0)
        S[t] = H(U[t] - thr)                     out[t] = S[t] * thr if scale_output else S[t]

    The ops and their order are those of the fused forward, so on equal inputs the spikes are
    bitwise equal.
    """

    def __init__(self, neuron: LIF):
        super().__init__()
        self.timesteps = neuron.timesteps
        self.broadcast_input = neuron.broadcast_input
        self.reset = neuron.reset
        self.v_init = float(neuron.v_init)
        self.beta = float(neuron.beta.clamp(0, 1))
        self.scale_output = neuron.scale_output
        self.register_buffer("threshold", neuron.threshold.detach().clamp_min(1e-4).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T*B, C, ...) or (B, C, ...)
        T = self.timesteps
        xs = None if self.broadcast_input else x.view(T, -1, *x.shape[1:])  # (T, B, C, ...)
        step = x if self.broadcast_input else xs[0]  # (B, C, ...)
        thr = self.threshold
        if thr.dim() == 1:
            thr = thr.view(1, -1, *([1] * (step.dim() - 2)))  # (1, C, 1, 1)
        mem = (self.v_init * thr).expand_as(step)
        s = None
        out = []
        for t in range(T):
            if self.reset == "zero" and s is not None:
                mem = mem * (1.0 - s)
            if self.beta != 1.0:
                mem = mem * self.beta
            mem = mem + (step if self.broadcast_input else xs[t])
            if self.reset == "subtract" and s is not None:
                mem = mem - s * thr
            s = (mem - thr > 0).to(step.dtype)
            out.append(s * thr if self.scale_output else s)
        return torch.cat(out, 0)  # (T*B, C, ...), t-major

    def extra_repr(self) -> str:
        return (f"channels={self.threshold.numel()}, beta={self.beta:.3g}, reset={self.reset}, "
                f"v_init={self.v_init}, T={self.timesteps}"
                + (", broadcast_input" if self.broadcast_input else ""))


class UnrolledNet(nn.Module):
    """SpikingNet's readout with T fixed: (B, C, H, W) -> (B, K) = mean over T of the classifier.

    With `encode_once` the layers before the first neuron run once on B rows (that neuron presents
    their output at every step); otherwise the image is repeated T times, t-major.
    """

    def __init__(self, net: nn.Module, timesteps: int, encode_once: bool):
        super().__init__()
        self.net, self.timesteps, self.encode_once = net, timesteps, encode_once

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        T = self.timesteps
        if not self.encode_once:
            x = x.repeat(T, *([1] * (x.dim() - 1)))  # (T*B, C, H, W)
        y = self.net(x)  # (T*B, K)
        return y.view(T, -1, *y.shape[1:]).mean(0)  # (B, K)


def unroll(model: nn.Module) -> nn.Module:
    """A copy of `model` (CNN or SpikingNet) in eval mode, BN folded, neurons unrolled."""
    plain = copy.deepcopy(model).eval().float()
    if isinstance(plain, SpikingNet):
        plain = UnrolledNet(plain.net, plain.timesteps, plain.encode_once)
    fold_all_bn(plain)
    for name, m in list(plain.named_modules()):
        if isinstance(m, LIF):
            parent_name, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent_name) if parent_name else plain, child, UnrolledLIF(m))
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain.eval()
