"""Spiking neurons and CNN -> SNN conversion.

Multi-step execution: a batch of B images runs as T*B rows (t-major: row t*B + b) through
stateless layers (conv, BN, pooling); an LIF layer views its input as (T, B, ...) and runs the
recurrence over T. Direct encoding: the image is the input at every step, so the layers before
the first neuron see the same input at every step; with `encode_once` they run on B rows and the
first neuron broadcasts its input over T. Readout: the classifier output averaged over T. No
neuron state outlives a forward call.

    surrogate.py   spike forward, surrogate derivatives backward (snntorch's maths)
    lif.py         the LIF neuron: reference loop, fused autograd.Function, the module
    triton_lif.py  the fused neuron as Triton kernels (CUDA; imported on first use)
    net.py         SpikingNet (T steps, averaged readout) and the gated max-pool
    convert.py     CNN -> SNN: trace, threshold balancing, swap activations for neurons
    graph.py       which layers read spikes (torch.fx), for the AC/MAC counter
"""

from firecut.spiking.convert import balance_thresholds, convert, trace_activations, trace_order
from firecut.spiking.lif import LIF, RESETS, is_channels_last, lif_reference
from firecut.spiking.net import SpikingMaxPool2d, SpikingNet
from firecut.spiking.surrogate import SURROGATES, surrogate

__all__ = ["LIF", "RESETS", "SURROGATES", "SpikingMaxPool2d", "SpikingNet", "balance_thresholds",
           "convert", "is_channels_last", "lif_reference", "surrogate", "trace_activations",
           "trace_order"]
