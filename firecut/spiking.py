"""Spiking neurons and CNN -> SNN conversion.

Multi-step execution (DESIGN §2): a batch of B images runs as T*B rows (t-major: row t*B + b)
through stateless layers (conv, BN, pooling); an LIF layer views its input as (T, B, ...) and runs
the recurrence over T. Direct encoding: the image is the input at every step, so the layers before
the first neuron see the same input at every step; with `encode_once` they run on B rows and the
first neuron broadcasts its input over T. Readout: the classifier output averaged over T.
No neuron state outlives a forward call.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable, Iterable

import torch
from torch import nn

from firecut.activations import CONVERTIBLE, ClipQuant
from firecut.errors import FirecutError

# --------------------------------------------------------------------------------------------
# Surrogate gradients: Heaviside forward (strictly > 0), smooth derivative backward. Same maths
# as snntorch.surrogate (atan, fast_sigmoid, sigmoid) with the same default parameters. Each
# derivative writes into `out` with in-place ops (on CPU a new full-size tensor per op costs
# more than the op); the fused neuron calls them directly, the reference loop through _Spike.


def _d_atan(u: torch.Tensor, a: float, out: torch.Tensor) -> torch.Tensor:
    """dS/dU = (a/2) / (1 + (pi/2 a U)^2)"""
    torch.mul(u, math.pi / 2 * a, out=out)
    return out.square_().add_(1.0).reciprocal_().mul_(a / 2)


def _d_fast_sigmoid(u: torch.Tensor, k: float, out: torch.Tensor) -> torch.Tensor:
    """dS/dU = 1 / (k |U| + 1)^2"""
    torch.abs(u, out=out)
    return out.mul_(k).add_(1.0).square_().reciprocal_()


def _d_sigmoid(u: torch.Tensor, k: float, out: torch.Tensor) -> torch.Tensor:
    """dS/dU = k e^{-kU} / (e^{-kU} + 1)^2 = k sig(kU) sig(-kU): snntorch's derivative, computed
    without overflow (snntorch's form gives NaN for very negative U) or cancellation."""
    other = torch.mul(u, -k).sigmoid_()
    return torch.mul(u, k, out=out).sigmoid_().mul_(other).mul_(k)


class _Spike(torch.autograd.Function):
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
    "atan": (_d_atan, 2.0),  # alpha
    "fast_sigmoid": (_d_fast_sigmoid, 25.0),  # slope
    "sigmoid": (_d_sigmoid, 25.0),  # slope
}


def _surrogate_entry(name: str, param: float | None) -> tuple[Callable, float]:
    if name not in SURROGATES:
        raise FirecutError(f"unknown surrogate '{name}'; choose one of: {', '.join(SURROGATES)}")
    deriv, default = SURROGATES[name]
    return deriv, default if param is None else float(param)


def surrogate(name: str, param: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    deriv, p = _surrogate_entry(name, param)
    return lambda u: _Spike.apply(u, deriv, p)


# --------------------------------------------------------------------------------------------
# The multi-step recurrence: a readable reference loop (autograd through every step) and a fused
# autograd.Function (one forward loop without graph, one hand-written backward) that equals it.


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
    """Forward: the recurrence of `lif_reference`, saving only U[t] - thr. Backward, with
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
        ctx.save_for_backward(U, thr)
        ctx.cfg = (broadcast, beta, v_init, deriv, param, scale_output, reset)
        ctx.x_dtype = x.dtype
        S = S.to(x.dtype)
        return S.mul_(thr.to(x.dtype)) if scale_output else S

    @staticmethod
    def backward(ctx, g):
        U, thr = ctx.saved_tensors
        broadcast, beta, v_init, deriv, param, scale_output, reset = ctx.cfg
        thr_f = thr.float()
        need_thr = ctx.needs_input_grad[1]
        S = None  # (T, B, C, ...) spikes as 0./1.
        if need_thr or reset == "zero":
            S = torch.gt(U, 0, out=torch.empty_like(U))
        dM = deriv(U, param, torch.empty_like(U))  # sigma'(U - thr)
        dM.mul_(g)
        if scale_output:
            dM.mul_(thr_f)  # now dU_t
        dthr = -dM.sum(0) if need_thr else None  # - sum_t dU_t, (B, C, ...)
        for t in range(dM.shape[0] - 2, -1, -1):  # dM_t = dU_t + beta k_t dM_{t+1}, in place
            if reset == "zero":
                dM[t].addcmul_(1.0 - S[t], dM[t + 1], value=beta)
            else:
                dM[t].add_(dM[t + 1], alpha=beta)
        if need_thr:
            if reset == "subtract":
                for t in range(1, dM.shape[0]):
                    dthr.addcmul_(S[t - 1], dM[t], value=-1.0)  # - dM_t S[t-1]
            dthr.add_(dM[0], alpha=v_init * beta)
            if scale_output:
                for t in range(dM.shape[0]):
                    dthr.addcmul_(S[t], g[t].float())  # g_t S[t]
            dthr = dthr.sum_to_size(thr.shape).to(thr.dtype)
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
            deriv, p = _surrogate_entry(self.surrogate_name, self.surrogate_param)
            from firecut import triton_lif  # imports triton (if installed) on first use only

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


class SpikingMaxPool2d(nn.Module):
    """Max-pooling for (T*B, C, H, W) inputs that vary over steps, gated by running sums.

    Per step a plain max over spikes or currents overstates the max of their averages
    (E[max] >= max E), which at few steps wrecks conversion. Instead each window passes, at step
    t, the input of the location whose running sum sum_{s<=t} x[s] is largest so far (Rueckauer et
    al. 2017): the winner's spikes stay spikes, and over T steps the output rate approaches the
    max of the input rates. With T = 1 it is nn.MaxPool2d (up to sums closer than GRID).
    """

    GRID = 2.0 ** -10  # running sums this close count as equal (float32 rounding noise is ~1e-6)

    def __init__(self, pool: nn.MaxPool2d, timesteps: int):
        super().__init__()
        self.kernel_size, self.stride, self.padding = pool.kernel_size, pool.stride, pool.padding
        self.dilation, self.ceil_mode = pool.dilation, pool.ceil_mode
        self.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T*B, C, H, W)
        T = self.timesteps
        xs = x.view(T, -1, *x.shape[1:])  # (T, B, C, H, W)
        # Sums in float64, rounded to multiples of GRID: currents equal in exact maths (the same
        # spikes reaching two locations, in any order) then tie exactly, whatever rounding made
        # them (BN folded into the conv, another kernel, onnxruntime). A tie goes to the location
        # that won at the previous step (+0.5 on the integer keys), so the output's running sum
        # stays the winner's. Without this ~10% of predictions move when BN is folded
        # (benchmarks/export_flips.py).
        # (x / GRID: GRID is a power of two, so multiplying by its inverse is the same division)
        keys = xs.detach().to(torch.float64)  # (T, B, C, H, W), running sums made in place:
        for t in range(1, T):  # the same sequential order as cumsum(0), which on CPU is a slow
            keys[t].add_(keys[t - 1])  # strided scan over the outermost dim
        keys.mul_(1 / self.GRID).round_()
        out, won = [], None
        for t in range(T):
            key = keys[t]  # a view: keys is ours, so the tie-break is written into it in place
            if won is not None:  # (B, C, H', W') flat indices of the last step's winners
                flat, w = key.flatten(2), won.flatten(2)
                flat.scatter_(2, w, flat.gather(2, w).add_(0.5))  # repeated winners: same value
            _, won = torch.nn.functional.max_pool2d(
                key, self.kernel_size, self.stride, self.padding, self.dilation,
                ceil_mode=self.ceil_mode, return_indices=True)  # (B, C, H', W') flat H*W indices
            out.append(xs[t].flatten(2).gather(2, won.flatten(2)).view(won.shape))
        y = torch.cat(out)  # (T*B, C, H', W')
        if is_channels_last(x):
            y = y.contiguous(memory_format=torch.channels_last)  # the layout it came in
        return y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, T={self.timesteps}"


class SpikingNet(nn.Module):
    """Runs a converted network for T steps on a static image; returns the mean readout.

    forward: (B, C, H, W) -> (T*B rows inside) -> (B, K) = mean over T of the classifier output.
    """

    def __init__(self, net: nn.Module, timesteps: int):
        super().__init__()
        self.net = net
        self.set_timesteps(timesteps)

    def neurons(self) -> list[LIF]:
        return [m for m in self.net.modules() if isinstance(m, LIF)]

    @property
    def encode_once(self) -> bool:
        return any(n.broadcast_input for n in self.neurons())

    def set_timesteps(self, timesteps: int) -> None:
        if timesteps < 1:
            raise FirecutError("--timesteps must be >= 1")
        self.timesteps = timesteps
        for m in self.net.modules():
            if isinstance(m, (LIF, SpikingMaxPool2d)):
                m.timesteps = timesteps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        T = self.timesteps
        if not self.encode_once:
            x = x.repeat(T, *([1] * (x.dim() - 1)))  # (T*B, C, H, W), t-major
        y = self.net(x)  # (T*B, K)
        return y.view(T, -1, *y.shape[1:]).mean(0)  # (B, K)


# --------------------------------------------------------------------------------------------
# Conversion


def trace_order(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, int]]:
    """(name, module, channels) of each convertible activation and max-pool, in execution order."""
    found: list[tuple[str, nn.Module, int]] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, CONVERTIBLE + (nn.MaxPool2d,)):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: found.append((name, mod, inp[0].shape[1]))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return found


def trace_activations(model: nn.Module, example: torch.Tensor) -> list[tuple[str, int]]:
    """(name, channels) of each convertible activation, in execution order."""
    seen: dict[str, int] = {}
    for name, m, c in trace_order(model, example):
        if isinstance(m, CONVERTIBLE) and seen.setdefault(name, c) != c:
            raise FirecutError(f"activation '{name}' is used for inputs of different widths; "
                               "give each use its own module before converting")
    return list(seen.items())


@torch.no_grad()
def balance_thresholds(model: nn.Module, batches: Iterable[torch.Tensor],
                       percentile: float = 99.9, max_samples: int = 1_000_000) -> dict[str, float]:
    """Per-layer threshold = the `percentile` of that activation's outputs on training batches.

    A ClipQuant layer's threshold is its learned clip theta (no statistics needed).
    """
    values: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, CONVERTIBLE) and not isinstance(m, ClipQuant):
            def hook(mod, inp, out, name=name):
                v = out.detach().flatten().float()
                if v.numel() > max_samples:
                    idx = torch.randint(v.numel(), (max_samples,), device=v.device)
                    v = v[idx]
                values.setdefault(name, []).append(v.cpu())
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    thresholds = {}
    for name, m in model.named_modules():
        if isinstance(m, ClipQuant):
            thresholds[name] = float(m.theta.detach().abs().clamp_min(1e-3))
        elif name in values:
            v = torch.cat(values[name])
            if v.numel() > 16_000_000:  # torch.quantile's limit
                v = v[torch.randperm(v.numel())[:16_000_000]]
            thresholds[name] = max(float(torch.quantile(v, percentile / 100.0)), 1e-3)
    return thresholds


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def convert(model: nn.Module, example: torch.Tensor, timesteps: int, *, beta: float = 1.0,
            thresholds: dict[str, float] | None = None, default_threshold: float = 1.0,
            learn_threshold: bool = True, surrogate_name: str = "atan",
            surrogate_param: float | None = None, v_init: float = 0.5, scale_output: bool = True,
            encode_once: bool = True, reset: str = "subtract") -> SpikingNet:
    """Swaps every activation of `model` (in place) for an LIF neuron, and every max-pool after
    the first neuron for a SpikingMaxPool2d; keeps all weights.

    Thresholds come from `thresholds` (balancing) or `default_threshold`; with `scale_output`
    the spike amplitude is the threshold, so a converted layer passes on what the CNN's
    activation did, in rate. `example` is a (B, C, H, W) input used to trace layer widths.
    """
    order = trace_order(model, example)
    acts = trace_activations(model, example)
    if not acts:
        raise FirecutError("the model has no activation the converter knows "
                           f"({', '.join(c.__name__ for c in CONVERTIBLE)})")
    for i, (name, channels) in enumerate(acts):
        thr = (thresholds or {}).get(name, default_threshold)
        neuron = LIF(channels, beta=beta, threshold=thr, learn_threshold=learn_threshold,
                     surrogate_name=surrogate_name, surrogate_param=surrogate_param,
                     v_init=v_init, scale_output=scale_output, timesteps=timesteps,
                     broadcast_input=encode_once and i == 0, reset=reset)
        _set_module(model, name, neuron)
    first_act = next(i for i, (_, m, _) in enumerate(order) if isinstance(m, CONVERTIBLE))
    for name, m, _ in order[first_act:]:  # pools before the first neuron see static input
        if isinstance(m, nn.MaxPool2d):
            _set_module(model, name, SpikingMaxPool2d(m, timesteps))
    return SpikingNet(model, timesteps)
