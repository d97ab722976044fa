"""Pruning by inheritance: a child network takes every tensor of its parent that still fits.

Dropping Fire modules (docs/concepts.md) changes only the input width of the next kept module's squeeze
conv (or the classifier); every other tensor keeps its name (modules are named fire2..fire9) and
its shape, and is copied from the parent. The re-wired convs keep their fresh initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


def inherit(child: nn.Module, parent_state: dict[str, torch.Tensor]) -> list[str]:
    """Copies into `child` each parent tensor with the same name and shape; returns the names of
    the child's tensors that were not inherited (re-made)."""
    own = child.state_dict()
    remade = []
    with torch.no_grad():
        for name, tensor in own.items():
            src = parent_state.get(name)
            if src is not None and src.shape == tensor.shape:
                tensor.copy_(src)
            else:
                remade.append(name)
    return remade
