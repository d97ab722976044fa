"""Synaptic-operation counting (AC / MAC) and the energy estimate.

Counting rule (docs/concepts.md, "Counting"), per test image, summed over T steps:
  * a Conv2d/Linear whose input is spikes ({0, c} per channel: binary, or binary times a
    per-channel constant that folds into the weights) adds its exact accumulates to AC: each
    nonzero input times its fan-out inside the layer, borders included. Which inputs are spikes
    is read from the graph (firecut.spiking.graph: an LIF reached through concatenation, shuffle
    or max-pooling only) and checked on the values; a net torch.fx cannot trace is judged on
    its values alone;
  * a layer with real-valued input adds its dense MACs to MAC: once per image if its input is the
    same at every step (the encoding layer), else once per step;
  * in a CNN every layer's dense MACs count (T = 1).
BN folds into the conv; pooling and neuron updates are not counted in the paper's energy (neuron
updates are reported separately; energy.hardware charges them, pooling modules and memory
traffic).

    E [mJ] = (AC * e_AC + MAC * e_MAC) [pJ] * 1e-9

Energy per operation (Horowitz, ISSCC 2014, 45 nm): an AC is one add; a MAC a multiply + add.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from firecut.activations import CONVERTIBLE
from firecut.config import energy_mj, energy_per_op  # presets: config.ENERGY_PRESETS (Horowitz 2014, 45 nm)
from firecut.errors import FirecutError
from firecut.spiking.graph import input_kinds
from firecut.spiking import LIF, SpikingMaxPool2d, SpikingNet


@dataclass(frozen=True)
class EnergyModel:
    e_ac_pj: float = 0.9  # energy of one accumulate, pJ
    e_mac_pj: float = 4.6  # energy of one multiply-accumulate, pJ
    name: str = "45nm-fp32"

    @classmethod
    def from_config(cls, preset: str = "45nm-fp32", e_ac_pj: float | None = None,
                    e_mac_pj: float | None = None) -> EnergyModel:
        return cls(*energy_per_op(preset, e_ac_pj, e_mac_pj))

    def energy_mj(self, ac: float, mac: float) -> float:
        return energy_mj(ac, mac, self.e_ac_pj, self.e_mac_pj)

    def finish(self, report: dict, counter: OpCounter) -> dict:
        """The paper's model prices AC/MAC only: the report stands (hardware.HardwareModel adds terms)."""
        return report


def is_spike_input(x: torch.Tensor) -> bool:
    """True if every channel (dim 1) holds only 0 and one other value: binary up to a scale."""
    c = x.shape[1]
    xc = x.detach().transpose(0, 1).reshape(c, -1).float()  # (C, N*H*W)
    nz = xc != 0
    hi = torch.where(nz, xc, torch.full_like(xc, -float("inf"))).amax(1)
    lo = torch.where(nz, xc, torch.full_like(xc, float("inf"))).amin(1)
    has = nz.any(1)
    same = (hi - lo).abs() <= 1e-6 * hi.abs().clamp_min(1e-12)
    return bool(torch.all(~has | same))


def nonzero_map(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """(N, C, H, W) -> (1, G, H, W) float64: nonzero inputs per location and channel group,
    summed over the rows (float64 keeps the counts exact)."""
    n, c, h, w = x.shape
    if groups == 1:
        return (x != 0).sum((0, 1), dtype=torch.int32).to(torch.float64)[None, None]
    return (x != 0).view(n, groups, c // groups, h, w).sum((0, 2), dtype=torch.float64)[None]


def accumulates_from_map(nz: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Accumulates of `conv` on the input whose `nonzero_map` is nz: each output sums the nonzero
    inputs in its receptive field (zero padding adds none), times out-channels per group. The
    count is linear in the map, so summing rows first (nonzero_map) loses nothing."""
    if conv.padding_mode != "zeros":
        raise FirecutError(f"cannot count {conv}: only zero padding is supported")
    g = conv.groups
    if nz.shape[1] != g:
        raise ValueError(f"a nonzero map over {nz.shape[1]} channel group(s) cannot count {conv}")
    ones = torch.ones(g, 1, *conv.kernel_size, dtype=torch.float64, device=nz.device)
    per_group = F.conv2d(nz, ones, stride=conv.stride, padding=conv.padding,
                         dilation=conv.dilation, groups=g)  # (1, G, H', W')
    return per_group.sum() * (conv.out_channels // g)


def conv_accumulates(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Exact accumulates of `conv` on input `x` (N, C, H, W), summed over the rows (float64)."""
    return accumulates_from_map(nonzero_map(x, conv.groups), conv)


def dense_macs_per_row(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Multiply-accumulates of one row (one image, one step)."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
        return int(y[0].numel() * k)  # outputs (C', H', W') x fan-in
    return int(module.in_features * module.out_features)  # nn.Linear


@dataclass
class LayerCount:
    name: str
    type: str
    input: str = ""  # spike | real | real-static (computed once per image)
    ac: float = 0.0  # summed over images
    mac: float = 0.0  # summed over images
    nonzero: float = 0.0  # nonzero inputs (synapse layers) or spikes (neurons), summed
    elements: float = 0.0  # inputs (synapse layers) or neuron-steps (neurons), summed
    kinds: set = field(default_factory=set)
    # what the hardware model (energy.hardware) prices beyond AC/MAC, summed over images:
    weights: int = 0  # weights of the layer (synapse layers)
    passes: float = 0.0  # dense passes: rows computed as real-valued input (1 per image or per step)
    reads: float = 0.0  # input elements read: every element of a dense pass, or of a spike map
    outputs: float = 0.0  # output elements produced (per pass or per step)
    activations: float = 0.0  # CNN: outputs of the activation after this layer (after its pool)
    image: bool = False  # the layer reads the network's input
    beta: float = 1.0  # neurons: leak factor (decay multiply when < 1)
    reset: str = ""  # neurons: subtract | zero | none
    window: float = 0.0  # pools: inputs per output window (k*k; adaptive: the mean window)
    order: int = 0  # position among the model's modules (the hardware model lists pools in place)


POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, SpikingMaxPool2d)


def pool_window(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Inputs per output window of a pooling module: k*k, or for an adaptive pool H*W / (H'*W')."""
    k = getattr(module, "kernel_size", None)
    if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)) or k is None:
        return x[0, 0].numel() / y[0, 0].numel()
    kh, kw = (k, k) if isinstance(k, int) else k
    return float(kh * kw)


class OpCounter:
    """Forward hooks that count AC/MAC per layer while a model evaluates.

    Use as a context manager around evaluation; call `begin_batch(B)` before each batch.
    `timesteps` is T for a SpikingNet, 1 for a CNN (`spiking=False`: everything is MAC).
    """

    def __init__(self, model: nn.Module, timesteps: int = 1, spiking: bool = True):
        self.model, self.T, self.spiking = model, timesteps, spiking
        self.layers: dict[str, LayerCount] = {}
        self.pools: dict[str, LayerCount] = {}  # not AC/MAC: only the hardware model prices them
        self.graph_kinds: dict[str, str] | None = None  # from the graph; None: judge by values
        self.images = 0
        self._batch = 0
        self._first = False
        self._last = ""  # the synapse layer that ran last: the next activation is its
        self._hooks: list = []

    def __enter__(self) -> OpCounter:
        if self.spiking and isinstance(self.model, SpikingNet):
            kinds = input_kinds(self.model.net)
            self.graph_kinds = None if kinds is None else {f"net.{k}": v for k, v in kinds.items()}
        for i, (name, m) in enumerate(self.model.named_modules()):
            if isinstance(m, POOLS):
                self.pools[name] = LayerCount(name, type(m).__name__, order=i)
                self._hooks.append(m.register_forward_hook(self._pool_hook(name)))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                self.layers[name] = LayerCount(name, type(m).__name__, weights=m.weight.numel(), order=i)
                self._hooks.append(m.register_forward_hook(self._synapse_hook(name)))
            elif isinstance(m, CONVERTIBLE):  # a CNN's activation: counted on its conv's row
                self._hooks.append(m.register_forward_hook(self._activation_hook))
            elif isinstance(m, LIF):
                self.layers[name] = LayerCount(name, "LIF", input="", beta=float(m.beta), reset=m.reset,
                                               order=i)
                self._hooks.append(m.register_forward_hook(self._neuron_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def begin_batch(self, batch_size: int) -> None:
        self._batch = batch_size
        self.images += batch_size
        self._first = True  # the next synapse layer to run reads the image

    def _synapse_hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            rec = self.layers[name]
            rows = x.shape[0]
            rec.nonzero += float((x != 0).sum())
            rec.elements += x.numel()
            rec.image |= self._first
            self._first, self._last = False, name
            expected = (self.graph_kinds or {}).get(name)
            spikes = self.spiking and expected in (None, "spike") and is_spike_input(x)
            if spikes:
                kind = "spike"
                if isinstance(module, nn.Conv2d):
                    rec.ac += float(conv_accumulates(x, module))
                else:
                    rec.ac += float((x != 0).sum()) * module.out_features
                rec.reads += x.numel()
                rec.outputs += output.numel()
            else:
                static = rows == self._batch or (
                    self.spiking and rows == self.T * self._batch
                    and bool((x.view(self.T, self._batch, *x.shape[1:]) == x[: self._batch]).all()))
                kind = "real-static" if (static and self.spiking) else "real"
                counted_rows = self._batch if static else rows
                rec.mac += dense_macs_per_row(module, x, output) * counted_rows
                rec.passes += counted_rows
                rec.reads += x[0].numel() * counted_rows
                rec.outputs += output[0].numel() * counted_rows
            rec.kinds.add(kind)
        return hook

    def _activation_hook(self, module, inputs, output) -> None:
        if self._last:
            self.layers[self._last].activations += output.numel()

    def _pool_hook(self, name: str):
        def hook(module, inputs, output):
            rec = self.pools[name]
            rec.elements += inputs[0].numel()  # every row: per image, or per step in the SNN
            rec.outputs += output.numel()
            rec.window = pool_window(module, inputs[0], output)
        return hook

    def _neuron_hook(self, name: str):
        def hook(module, inputs, output):
            rec = self.layers[name]
            rec.nonzero += float((output != 0).sum())
            rec.elements += output.numel()
        return hook

    # ---------------------------------------------------------------- results, per image
    def report(self, energy: EnergyModel) -> dict:
        if self.images == 0:
            raise RuntimeError("OpCounter saw no images")
        n = self.images
        rows = []
        for rec in self.layers.values():
            is_neuron = rec.type == "LIF"
            rows.append({
                "name": rec.name,
                "type": rec.type,
                "input": "/".join(sorted(rec.kinds)) if not is_neuron else "",
                "ac": rec.ac / n,
                "mac": rec.mac / n,
                "energy_mj": energy.energy_mj(rec.ac / n, rec.mac / n),
                # neurons: spikes per neuron-step; synapse layers: share of nonzero inputs
                "firing_rate" if is_neuron else "input_density":
                    rec.nonzero / rec.elements if rec.elements else 0.0,
            })
        ac = sum(r["ac"] for r in rows)
        mac = sum(r["mac"] for r in rows)
        neurons = [rec for rec in self.layers.values() if rec.type == "LIF"]
        steps = sum(rec.elements for rec in neurons)
        return energy.finish({
            "ac": ac,
            "mac": mac,
            "energy_mj": energy.energy_mj(ac, mac),
            "energy_preset": energy.name,
            "e_ac_pj": energy.e_ac_pj,
            "e_mac_pj": energy.e_mac_pj,
            "firing_rate": (sum(rec.nonzero for rec in neurons) / steps) if steps else None,
            "neuron_updates": steps / n,  # in the hardware model's energy only (listed, not hidden)
            "layers": rows,
        }, self)
