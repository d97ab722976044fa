"""Which layers of a spiking net read spikes: decided from the graph, not from the values.

A conv/linear input is

    spike        if every path back from it reaches an LIF neuron through spike-preserving ops
                 only: concatenation, channel split/shuffle (view, transpose, chunk, indexing),
                 max-pooling, dropout, identity (each keeps a channel's values in {0, c});
    real-static  if no LIF lies upstream: the layers before the first neuron (the encoder);
    real         otherwise: anything through BN, a residual sum, an average, a multiplication
                 by a real-valued gate (squeeze-excitation's sigmoid).

Deciding from values alone misleads where a real gate happens to be constant over a batch (the
product is then binary per channel, yet no hardware could fold a gate it only learns at run
time). The graph comes from torch.fx; a model fx cannot trace gets None (the counter then falls
back to the values).
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from firecut.spiking.lif import LIF
from firecut.spiking.net import SpikingMaxPool2d

PRESERVING_MODULES = (nn.Dropout, nn.Identity, nn.MaxPool2d, SpikingMaxPool2d)
PRESERVING_FUNCTIONS = {torch.cat, operator.getitem, torch.flatten}
PRESERVING_METHODS = {"view", "reshape", "transpose", "contiguous", "chunk", "split", "permute",
                      "flatten"}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (LIF, SpikingMaxPool2d)) or super().is_leaf_module(m, qualname)


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    """The data inputs of a node: its first argument (a list of them for torch.cat)."""
    first = node.args[0] if node.args else None
    items = first if isinstance(first, (list, tuple)) else [first]
    return [a for a in items if isinstance(a, fx.Node)]


def _preserves(node: fx.Node, mod: nn.Module | None) -> bool:
    if node.op == "call_module":
        return isinstance(mod, PRESERVING_MODULES)
    if node.op == "call_function":
        return node.target in PRESERVING_FUNCTIONS
    return node.op == "call_method" and node.target in PRESERVING_METHODS


def input_kinds(net: nn.Module) -> dict[str, str] | None:
    """{conv/linear module name (relative to `net`): 'spike' | 'real' | 'real-static'}, or None
    when torch.fx cannot trace `net`."""
    try:
        graph = _Tracer().trace(net)
    except Exception:  # noqa: BLE001  (any untraceable model: fall back to values)
        return None
    modules = dict(net.named_modules())
    kind: dict[fx.Node, str] = {}  # spike | real | static
    layers: dict[str, str] = {}
    for node in graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            kind[node] = "static"
            continue
        mod = modules.get(node.target) if node.op == "call_module" else None
        data = [kind.get(a, "static") for a in _tensor_args(node)]
        static = all(kind.get(a, "static") == "static" for a in node.all_input_nodes)
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            layers[node.target] = ("real-static" if static else
                                   "spike" if data and all(k == "spike" for k in data) else "real")
        if isinstance(mod, LIF):
            kind[node] = "spike"
        elif static:
            kind[node] = "static"
        elif data and all(k == "spike" for k in data) and _preserves(node, mod):
            kind[node] = "spike"
        else:
            kind[node] = "real"
    return layers
