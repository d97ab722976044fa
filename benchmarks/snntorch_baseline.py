"""The snntorch baseline: firecut's spiking network, stepped the way snntorch's tutorials do it.

`from_firecut(snn)` copies a firecut `SpikingNet` (same convs, BN, pools, weights, T) and swaps
each firecut `LIF` for an `snntorch.Leaky` that keeps its membrane between calls. Its forward is
the tutorial loop:

    reset every neuron's membrane
    for t in range(T):                 # the whole network, once per step, on the (B, ...) image
        out[t] = net(x)                # (B, K)
    return mean_t out[t]               # rate readout, as firecut's SpikingNet

Fairness choices (the network computes what firecut's does, neuron for neuron):

- same neuron maths: `snntorch.Leaky(beta, reset_mechanism=<firecut's reset>, spike_grad=
  snntorch.surrogate.<firecut's surrogate>(<its parameter>))`; firecut's `LIF` equals it
  (tests/test_lif.py);
- per-channel thresholds, as firecut's: snntorch accepts a tensor threshold, so each Leaky gets
  firecut's (C,) thresholds as a (C, 1, 1) tensor (broadcasts over a step's (B, C, H, W)), and
  `learn_threshold` when firecut's are learnable. (snntorch's tutorials use one scalar per layer;
  per-channel is what firecut trains, and costs snntorch nothing extra);
- the initial membrane v_init * thr (firecut's default v_init = 0.5; snntorch's default is 0):
  one broadcast multiply per layer and forward;
- spikes scaled by the threshold when firecut's neuron has `scale_output` (one multiply per
  layer and step; snntorch's `graded_spikes_factor` does the same for a fixed factor);
- max-pools that firecut runs over T*B rows (`SpikingMaxPool2d`, gated by running sums) become
  plain `nn.MaxPool2d` per step, as a tutorial writes them: cheaper than firecut's, so this
  favours snntorch;
- what the tutorial way costs, and firecut saves, is kept: the layers before the first neuron
  (stem conv + BN + pool) run T times on the same image (firecut's `encode_once` runs them
  once), every layer runs T times on B rows instead of once on T*B rows, and autograd records
  each step of each neuron;
- BN in training mode normalises each step's B rows (firecut: all T*B rows of a layer at once).

Checked by `same_function_gap`: with firecut's spiking pools swapped for plain ones and BN on
running statistics, the two networks give bitwise-equal outputs on CPU and gradients equal to
float rounding (relative gap ~1e-6) - the baseline is the same network, only stepped differently.
"""

from __future__ import annotations

import copy

import snntorch as snn
import torch
from snntorch import surrogate as sg
from torch import nn

from firecut.spiking import LIF, SpikingMaxPool2d, SpikingNet

SNNTORCH_SURROGATES = {"atan": sg.atan, "fast_sigmoid": sg.fast_sigmoid, "sigmoid": sg.sigmoid}


class LeakyStep(nn.Module):
    """Stands where a firecut LIF stood: one step of an snntorch.Leaky per call, membrane kept
    between calls (the tutorials' `spk, mem = lif(cur, mem)`), cleared by `reset_state`."""

    def __init__(self, lif: LIF):
        super().__init__()
        thr = lif.threshold.detach().clone()
        if thr.dim():
            thr = thr.view(-1, 1, 1)  # (C, 1, 1): per channel over a (B, C, H, W) step
        make_grad = SNNTORCH_SURROGATES[lif.surrogate_name]
        spike_grad = make_grad() if lif.surrogate_param is None else make_grad(lif.surrogate_param)
        self.leaky = snn.Leaky(beta=float(lif.beta), threshold=thr, spike_grad=spike_grad,
                               learn_threshold=isinstance(lif.threshold, nn.Parameter),
                               reset_mechanism=lif.reset)
        self.v_init, self.scale_output = lif.v_init, lif.scale_output
        self.mem: torch.Tensor | None = None

    def reset_state(self) -> None:
        self.mem = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W), one step
        thr = self.leaky.threshold  # (C, 1, 1) or scalar
        if self.mem is None:  # U[-1] = v_init * thr, full shape (Leaky zeroes a mismatched mem)
            self.mem = (self.v_init * thr).expand_as(x)
        spk, self.mem = self.leaky(x, self.mem)  # (B, C, H, W) each
        return spk * thr if self.scale_output else spk


class PerStepNet(nn.Module):
    """forward: (B, C, H, W) -> T calls of `net` on it, each (B, K) -> their mean (B, K)."""

    def __init__(self, net: nn.Module, timesteps: int):
        super().__init__()
        self.net, self.timesteps = net, timesteps

    def neurons(self) -> list[LeakyStep]:
        return [m for m in self.net.modules() if isinstance(m, LeakyStep)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        for n in self.neurons():  # utils.reset(net) in the tutorials
            n.reset_state()
        out = [self.net(x) for _ in range(self.timesteps)]  # T x (B, K)
        return torch.stack(out).mean(0)  # (B, K)


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def from_firecut(snn_net: SpikingNet) -> PerStepNet:
    """A copy of `snn_net` (weights, thresholds, T) with snntorch neurons, stepped per time step."""
    net = copy.deepcopy(snn_net.net)
    for name, m in list(net.named_modules()):
        if isinstance(m, LIF):
            if m.surrogate_name not in SNNTORCH_SURROGATES:
                raise ValueError(f"no snntorch surrogate for '{m.surrogate_name}'")
            _replace(net, name, LeakyStep(m))
        elif isinstance(m, SpikingMaxPool2d):
            _replace(net, name, nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                             ceil_mode=m.ceil_mode))
    return PerStepNet(net, snn_net.timesteps)


def check_trains(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    """One forward/backward on two images: output (2, K), finite gradients that reach the
    first conv and the thresholds (if learnable). Leaves no gradients behind."""
    out = model(x[:2])  # (2, K)
    assert out.shape == (2, num_classes), f"snntorch baseline output {tuple(out.shape)}"
    out.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), "missing gradients"
    first_conv = next(g for n, g in grads.items() if n.endswith("conv.weight"))
    assert first_conv.abs().sum() > 0, "no gradient reaches the first conv"
    thresholds = [g for n, g in grads.items() if n.endswith("threshold")]
    assert not thresholds or any(g.abs().sum() > 0 for g in thresholds), "no threshold gradient"
    model.zero_grad(set_to_none=True)


def same_function_gap(snn_net: SpikingNet, baseline: PerStepNet, x: torch.Tensor) -> tuple[float, float]:
    """(max |output difference|, max relative gradient difference) between `baseline` and a copy
    of `snn_net` whose spiking max-pools are plain ones, both in eval mode (BN on running stats):
    there the two compute the same function, so both gaps are ~0 (bitwise-equal outputs on CPU;
    gradients to float rounding). Neither model is changed."""
    ref = copy.deepcopy(snn_net)
    for name, m in list(ref.net.named_modules()):
        if isinstance(m, SpikingMaxPool2d):
            _replace(ref.net, name, nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                                 ceil_mode=m.ceil_mode))
    other = copy.deepcopy(baseline)
    ref.eval(), other.eval()
    a, b = ref(x), other(x)  # (B, K) each
    w = torch.randn_like(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    grad_gap = 0.0
    for (_, p), (_, q) in zip(ref.net.named_parameters(), other.net.named_parameters(), strict=True):
        scale = float(p.grad.abs().max()) or 1.0
        grad_gap = max(grad_gap, float((p.grad - q.grad.view_as(p.grad)).abs().max()) / scale)
    return float((a - b).detach().abs().max()), grad_gap
