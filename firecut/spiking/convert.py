"""CNN -> SNN conversion: trace the activations and max-pools in execution order, balance each
threshold (a ClipQuant layer's learned clip, else a percentile of its activations), swap each
activation for an LIF neuron and each max-pool after the first neuron for the gated pool."""

from __future__ import annotations

import functools
from typing import Callable, Iterable

import torch
from torch import nn

from firecut.activations import CONVERTIBLE, ClipQuant
from firecut.errors import FirecutError
from firecut.spiking.lif import LIF
from firecut.spiking.net import SpikingMaxPool2d, SpikingNet

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


# A converted net's neuron unless told otherwise: integrate-and-fire (beta 1), one learnable
# threshold per channel, membrane started at half of it, spikes of amplitude theta.
CONVERTED = functools.partial(LIF, beta=1.0, learn_threshold=True, v_init=0.5, scale_output=True)


def convert(model: nn.Module, example: torch.Tensor, timesteps: int, *,
            neuron: Callable[..., nn.Module] = CONVERTED, thresholds: dict[str, float] | None = None,
            default_threshold: float = 1.0, encode_once: bool = True) -> SpikingNet:
    """Swaps every activation of `model` (in place) for a spiking neuron, and every max-pool after
    the first neuron for a SpikingMaxPool2d; keeps all weights.

    `neuron(channels, threshold=, timesteps=, broadcast_input=)` makes each neuron: CONVERTED by
    default, or any factory with the neuron's own settings bound, e.g.
    functools.partial(LIF, beta=0.9, reset="zero"). Thresholds come from `thresholds`
    (balancing) or `default_threshold`. `example` is a (B, C, H, W) input used to trace layer
    widths; with `encode_once` the first neuron broadcasts its input over the T steps.
    """
    order = trace_order(model, example)
    acts = trace_activations(model, example)
    if not acts:
        raise FirecutError("the model has no activation the converter knows "
                           f"({', '.join(c.__name__ for c in CONVERTIBLE)})")
    for i, (name, channels) in enumerate(acts):
        thr = (thresholds or {}).get(name, default_threshold)
        _set_module(model, name, neuron(channels, threshold=thr, timesteps=timesteps,
                                        broadcast_input=encode_once and i == 0))
    first_act = next(i for i, (_, m, _) in enumerate(order) if isinstance(m, CONVERTIBLE))
    for name, m, _ in order[first_act:]:  # pools before the first neuron see static input
        if isinstance(m, nn.MaxPool2d):
            _set_module(model, name, SpikingMaxPool2d(m, timesteps))
    return SpikingNet(model, timesteps)
