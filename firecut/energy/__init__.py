"""Energy: what a net costs per image.

count     the synaptic-operation counter (AC for spike inputs, MAC for real ones) and the paper's
          model, E = AC e_AC + MAC e_MAC (Horowitz 2014 presets in config.ENERGY_PRESETS)
hardware  the opt-in hardware-aware model: plus neuron updates, pooling and memory traffic
          (docs/energy.md)
"""

from firecut.energy.count import (EnergyModel, LayerCount, OpCounter, accumulates_from_map,
                                  conv_accumulates, dense_macs_per_row, is_spike_input, nonzero_map)
from firecut.energy.hardware import ENERGY_MODELS, HardwareModel, make_energy

__all__ = ["ENERGY_MODELS", "EnergyModel", "HardwareModel", "LayerCount", "OpCounter",
           "accumulates_from_map", "conv_accumulates", "dense_macs_per_row", "is_spike_input",
           "make_energy", "nonzero_map"]
