"""The LIF neuron over T steps: a readable reference loop and a fused autograd.Function that
equals it (one forward loop without a graph, one hand-written backward), on CPU or through the
Triton kernels (`triton_lif`) on CUDA.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import nn

from firecut.errors import FirecutError
from firecut.spiking.surrogate import surrogate, surrogate_entry

RESETS = ("subtract", "zero", "none")  # snntorch's reset mechanisms


def lif_reference(xs: torch.Tensor, thr: torch.Tensor, beta: float, v_init: float,
                  spike: Callable, scale_output: bool, reset: str = "subtract") -> torch.Tensor:
    """xs (T, B, C, ...) -> spikes (T, B, C, ...); thr broadcasts over one step.

    subtract: U[t] = beta U[t-1] + X[t] - S[t-1] thr;  zero: U[t] = beta (1 - S[t-1]) U[t-1] + X[t];
    none: U[t] = beta U[t-1] + X[t].  S[t-1] is detached, as in snntorch.
    """
    mem = (v_init * thr).expand_as(xs[0]).to(xs.dtype)
    spk = torch.zeros_like(xs[0])
    out = []
    for t in range(xs.shape[0]):
        if reset == "zero":
            mem = (1 - spk.detach()) * mem
        mem = beta * mem + xs[t]
        if reset == "subtract":
            mem = mem - spk.detach() * thr
        spk = spike(mem - thr)
        out.append(spk)
    s = torch.stack(out)
    return s * thr if scale_output else s


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether a 4-D tensor is stored NHWC (and not also NCHW, as a 1x1 or single-channel one is)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _steps_like(step: torch.Tensor, steps: int) -> torch.Tensor:
    """An empty fp32 (steps, *step.shape) tensor whose every step has `step`'s memory layout.

    A channels_last input gets channels_last steps (strides (B*HWC, HWC, 1, WC, C)), so the
    spikes, the membrane and the gradient handed back to BN and the convs keep the layout they
    came in: mixing layouts costs a strided copy per op, and BN's backward on a gradient in the
    other layout is ~6x slower on CPU.
    """
    if is_channels_last(step):
        flat = torch.empty((steps * step.shape[0], *step.shape[1:]), dtype=torch.float32,
                           device=step.device, memory_format=torch.channels_last)
        return flat.view(steps, *step.shape)
    return torch.empty((steps, *step.shape), dtype=torch.float32, device=step.device)


class _FusedLIF(torch.autograd.Function):
    """Forward: the recurrence of `lif_reference`, saving U[t] - thr (and the spikes, where the
    backward reads them). Backward, with
    g_t = dL/dout_t, sigma' the surrogate derivative and S[t] = H(U[t] - thr):

        dU_t   = g_t * (thr if scale else 1) * sigma'(U[t] - thr)
        dM_t   = dU_t + beta * k_t * dM_{t+1}   (dM_T = 0; k_t = 1 - S[t] for zero reset, else 1:
                                                 the reset S[t] is detached)
        dX_t   = dM_t                           (broadcast input: dX = sum_t dM_t)
        dthr   = sum_t [g_t S[t] (scale) - dU_t - dM_t S[t-1] (subtract reset)] + v_init beta dM_0
    """

    @staticmethod
    def forward(ctx, x, thr, T, broadcast, beta, v_init, deriv, param, scale_output, reset):
        steps = x.shape[0] if not broadcast else T
        step_shape = x.shape if broadcast else x.shape[1:]
        xf = x.float()  # the membrane is fp32 whatever the input (bf16 under autocast)
        thr_f = thr.float()
        U = _steps_like(xf if broadcast else xf[0], steps)  # U - thr, (T, B, C, ...)
        S = torch.empty_like(U)  # spikes as 0./1. (a comparison written into a float tensor
        # costs one pass; a bool result converted to float costs three)
        mem = torch.empty_like(U[0]).copy_((v_init * thr_f).expand(step_shape))
        for t in range(steps):
            if reset == "zero" and t:
                mem.mul_(1.0 - S[t - 1])
            if beta != 1.0:
                mem.mul_(beta)
            mem.add_(xf if broadcast else xf[t])
            if reset == "subtract" and t:
                mem.addcmul_(S[t - 1], thr_f, value=-1.0)
            torch.sub(mem, thr_f, out=U[t])
            torch.gt(U[t], 0, out=S[t])
        # S as well where the backward reads it (the threshold's gradient, the zero reset):
        # recomputing it from U would cost a pass over (T, B, C, ...)
        keep_s = ctx.needs_input_grad[1] or reset == "zero"
        ctx.save_for_backward(U, S if keep_s else None, thr)
        ctx.cfg = (broadcast, beta, v_init, deriv, param, scale_output, reset)
        ctx.x_dtype = x.dtype
        out = S.to(x.dtype, copy=True)  # a new tensor, whatever the dtype: S stays as saved
        return out.mul_(thr.to(x.dtype)) if scale_output else out  # (mul into a bf16 `out` from
        # fp32 operands would be one pass, but is ~8x slower on CPU than these two)

    @staticmethod
    def backward(ctx, g):
        U, S, thr = ctx.saved_tensors  # S: (T, B, C, ...) spikes as 0./1., or None
        broadcast, beta, v_init, deriv, param, scale_output, reset = ctx.cfg
        thr_f = thr.float()
        need_thr = ctx.needs_input_grad[1]
        # dU_t = g_t (thr) sigma'(U[t] - thr): the threshold folded into the derivative's pass
        dM = deriv(U, param, torch.empty_like(U), thr_f if scale_output else None)
        g = g.float()  # bf16 under autocast: mixed-dtype addcmul is ~10x slower on CPU than a copy
        dM.mul_(g)
        R = None  # (T, B, C, ...): the terms of -dthr, summed over everything but C at the end
        if need_thr:  # R_t = dU_t - g_t S[t] (scale) + dM_t S[t-1] (subtract), after the loop
            R = torch.addcmul(dM, S, g, value=-1.0) if scale_output else dM.clone()
        for t in range(dM.shape[0] - 2, -1, -1):  # dM_t = dU_t + beta k_t dM_{t+1}, in place
            if reset == "zero":
                dM[t].addcmul_(1.0 - S[t], dM[t + 1], value=beta)
            else:
                dM[t].add_(dM[t + 1], alpha=beta)
        dthr = None
        if need_thr:
            if reset == "subtract":
                R[1:].addcmul_(S[:-1], dM[1:])  # + dM_t S[t-1]
            R[0].add_(dM[0], alpha=-v_init * beta)  # - v_init beta dM_0 (U[-1] = v_init thr)
            dthr = R.sum_to_size(thr.shape).neg_().to(thr.dtype)
        dx = dM.sum(0) if broadcast else dM
        return dx.to(ctx.x_dtype), dthr, *([None] * 8)


# --------------------------------------------------------------------------------------------
# The neuron


class LIF(nn.Module):
    """Multi-step leaky integrate-and-fire neuron, snntorch `Leaky` maths.

    Input (T*B, C, ...) viewed as (T, B, C, ...), or (B, C, ...) broadcast over T when
    `broadcast_input` (the encoding neuron). Per step t, with U[-1] = v_init * thr, S[-1] = 0:

        U[t] = clamp(beta, 0, 1) * U[t-1] + X[t] - S[t-1] * thr   (S[t-1] detached: snntorch's reset)
        S[t] = H(U[t] - thr)                                      (surrogate gradient backward)

    (subtract reset, the default; `reset="zero"` and `"none"` follow `lif_reference`.)
    Output S (binary), or S * thr when `scale_output`: a per-channel constant that the next layer
    can fold into its weights, so the counter still sees spikes ({0, c} per channel).
    `thr` is one value per channel (learnable if `learn_threshold`), or a scalar without `channels`.
    """

    def __init__(self, channels: int | None = None, beta: float = 1.0, threshold: float = 1.0,
                 learn_threshold: bool = False, surrogate_name: str = "atan",
                 surrogate_param: float | None = None, v_init: float = 0.0,
                 scale_output: bool = False, timesteps: int = 1, broadcast_input: bool = False,
                 fused: bool = True, reset: str = "subtract"):
        super().__init__()
        if reset not in RESETS:
            raise FirecutError(f"unknown reset '{reset}'; choose one of: {', '.join(RESETS)}")
        self.fused, self.reset = fused, reset
        shape = (channels,) if channels else ()
        thr = torch.full(shape, float(threshold))
        if learn_threshold:
            self.threshold = nn.Parameter(thr)
        else:
            self.register_buffer("threshold", thr)
        self.register_buffer("beta", torch.tensor(float(beta)))
        self.surrogate_name, self.surrogate_param = surrogate_name, surrogate_param
        self.spike = surrogate(surrogate_name, surrogate_param)
        self.v_init = v_init
        self.scale_output = scale_output
        self.timesteps = timesteps
        self.broadcast_input = broadcast_input

    def _thr(self, x: torch.Tensor) -> torch.Tensor:
        """Threshold shaped to broadcast over one step's (B, C, ...) tensor."""
        thr = self.threshold.clamp_min(1e-4)
        if thr.dim() == 0:
            return thr
        return thr.view(1, -1, *([1] * (x.dim() - 2)))  # (1, C, 1, 1)

    def _beta(self) -> float:
        """clamp(beta, 0, 1) as a Python float, read from the buffer only when it changed (a
        moved or loaded buffer is a new tensor or a new version): reading a CUDA tensor's value
        waits for the GPU, and a training step should never wait."""
        b, seen = self.beta, self.__dict__.get("_beta_seen")  # (weakref to the buffer, version, value)
        if seen is None or seen[0]() is not b or seen[1] != b._version:
            seen = self.__dict__["_beta_seen"] = (weakref.ref(b), b._version, float(b.clamp(0, 1)))
        return seen[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = self.timesteps
        if not self.broadcast_input and x.shape[0] % T:
            raise RuntimeError(f"LIF got {x.shape[0]} rows, not a multiple of T={T}")
        step = x if self.broadcast_input else x[: x.shape[0] // T]
        thr = self._thr(step)  # (1, C, 1, 1) or scalar
        beta = self._beta()
        if self.fused:
            xs = x if self.broadcast_input else x.view(T, -1, *x.shape[1:])
            deriv, p = surrogate_entry(self.surrogate_name, self.surrogate_param)
            from firecut.spiking import triton_lif  # imports triton (if installed) on first use only

            fn = triton_lif.TritonLIF if triton_lif.available(xs, deriv) else _FusedLIF
            s = fn.apply(xs, thr, T, self.broadcast_input, beta, self.v_init, deriv, p,
                         self.scale_output, self.reset)
        else:
            xs = (x.unsqueeze(0).expand(T, *x.shape) if self.broadcast_input
                  else x.view(T, -1, *x.shape[1:]))  # (T, B, C, ...)
            s = lif_reference(xs, thr, beta, self.v_init, self.spike, self.scale_output, self.reset)
        return s.flatten(0, 1)  # (T*B, C, ...)

    def extra_repr(self) -> str:
        return (f"channels={self.threshold.numel()}, beta={float(self.beta):.3g}, "
                f"surrogate={self.surrogate_name}, reset={self.reset}, v_init={self.v_init}, "
                f"T={self.timesteps}"
                + (", broadcast_input" if self.broadcast_input else ""))


