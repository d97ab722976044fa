"""Layers shared by the mobile backbones (ShuffleNetV2, MnasNet, MixNet-S, Xception).

Every activation is `act_layer(channels)`, one module per use, so the converter can swap each for
its own LIF neuron. What stays real-valued in a spiking net is explicit here: a conv + BN without
activation (linear bottlenecks, Xception's depthwise half), residual sums and the
squeeze-excitation gate; the counter charges the layers they feed as MAC (docs/concepts.md).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from firecut.activations import ActFactory
from firecut.errors import FirecutError


def scaled(channels: int, width: float, divisor: int = 4) -> int:
    """channels * width rounded to a multiple of `divisor` (never below it, never more than 10%
    under the exact product: MobileNet's make_divisible)."""
    exact = channels * width
    c = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return c + divisor if c < 0.9 * exact else c


def no_keep(name: str, keep) -> None:
    """Keep masks name Fire modules; only SqueezeNet has them."""
    if keep is not None:
        raise FirecutError(f"--keep applies to squeezenet; {name} has no Fire modules to drop")


class ConvBN(nn.Sequential):
    """conv (no bias: BN follows) -> batch norm [-> activation]; 'same' padding, any groups."""

    def __init__(self, c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
                 act_layer: ActFactory | None = None):
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False),
            bn=nn.BatchNorm2d(c_out))
        if act_layer is not None:
            layers["act"] = act_layer(c_out)
        super().__init__(layers)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, g*c, H, W) -> (N, c*g, H, W): channel i*c + j moves to j*g + i. A permutation, so
    spikes stay spikes."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 act(W1 avgpool(x))) (Hu et al. 2018), 1x1 convs with biases.

    The sigmoid gate is not an activation the converter replaces: it stays real-valued in a
    spiking net, so x * gate is real and the layer after it is counted as MAC. W1 reads a
    spatial average (real) and is MAC too; W2 reads the spiking `act` and is AC.
    """

    def __init__(self, channels: int, reduced: int, act_layer: ActFactory):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = act_layer(reduced)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        s = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        gate = torch.sigmoid(self.expand(self.act(self.reduce(s))))  # (N, C, 1, 1) in (0, 1)
        return x * gate


class Classifier(nn.Module):
    """dropout -> conv1x1 (C -> K, bias) -> global average pool: equal to pool -> linear (both are
    linear maps), but the 1x1 conv reads the last layer's spikes, so it is counted as AC."""

    def __init__(self, c_in: int, num_classes: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.conv = nn.Conv2d(c_in, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W)
        return self.conv(self.drop(x)).mean((2, 3))  # (N, K)
