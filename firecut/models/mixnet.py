"""MixNet-S (Tan & Le, BMVC 2019), scaled down and shaped for 32x32 inputs.

Mixed depthwise convolution: a block's channels are split into groups, each with its own kernel
size (3x3 to 11x11), and concatenated. The 1x1 expand/project convs may be grouped (g = 2).
Plan at width 1.0 (MixNet-S's layout with channel counts scaled down to the paper's budget;
strides moved so 32x32 ends at 4x4), 32x32:

    stem    conv3x3(3 -> 8), stride 1                                      (N, 8, 32, 32)
    blocks  exp  kernels      stride  out  SE   groups (expand, project)
            1    3            1       8    -    1, 1                       (N, 8, 32, 32)
            6    3            1       8    -    2, 2                       (N, 8, 32, 32)
            3    3            1       8    -    2, 2
            6    3,5,7        2       8    1/2  1, 1                       (N, 8, 16, 16)
            6    3,5          1       8    1/2  2, 2     x3
            6    3,5,7        2       12   1/4  1, 2                       (N, 12, 8, 8)
            6    3,5          1       12   1/4  1, 2     x2
            6    3,5,7        1       16   1/2  2, 2                       (N, 16, 8, 8)
            3    3,5,7,9      1       16   1/2  2, 2     x2
            6    3,5,7,9,11   2       28   1/2  1, 1                       (N, 28, 4, 4)
            6    3,5,7,9      1       28   1/2  1, 2     x2
    head    conv1x1 -> 140                                                 (N, 140, 4, 4)
    classifier  conv1x1 -> K, global average pool                          (N, K)

Block: [grouped pw expand (act)] -> mixed dw (act) -> [SE] -> grouped pw project (linear), plus
the input when shapes match. SE's reduction is relative to the block's input channels.
MixNet-S mixes ReLU (early) and Swish (late); here every activation is the one given, so a
spiking twin replaces each by an LIF neuron. The SE gate stays real-valued (see blocks.py). The
width multiplier scales every channel count (multiples of 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from firecut.activations import ActFactory, make_act
from firecut.models.blocks import Classifier, ConvBN, SqueezeExcite, no_keep, scaled
from firecut.models.registry import register_model


@dataclass(frozen=True)
class MixSpec:
    expansion: int
    kernels: tuple[int, ...]
    stride: int
    out: int  # channels
    se: float = 0.0  # SE reduced channels = se * input channels; 0 = none
    expand_groups: int = 1
    project_groups: int = 1
    repeats: int = 1


STEM, HEAD = 8, 140  # channels
BLOCKS: tuple[MixSpec, ...] = (
    MixSpec(1, (3,), 1, 8),
    MixSpec(6, (3,), 1, 8, 0.0, 2, 2),
    MixSpec(3, (3,), 1, 8, 0.0, 2, 2),
    MixSpec(6, (3, 5, 7), 2, 8, 0.5),
    MixSpec(6, (3, 5), 1, 8, 0.5, 2, 2, repeats=3),
    MixSpec(6, (3, 5, 7), 2, 12, 0.25, 1, 2),
    MixSpec(6, (3, 5), 1, 12, 0.25, 1, 2, repeats=2),
    MixSpec(6, (3, 5, 7), 1, 16, 0.5, 2, 2),
    MixSpec(3, (3, 5, 7, 9), 1, 16, 0.5, 2, 2, repeats=2),
    MixSpec(6, (3, 5, 7, 9, 11), 2, 28, 0.5),
    MixSpec(6, (3, 5, 7, 9), 1, 28, 0.5, 1, 2, repeats=2),
)


def split_channels(channels: int, parts: int) -> list[int]:
    """Equal parts, the remainder to the first (MixNet's split)."""
    sizes = [channels // parts] * parts
    sizes[0] += channels - sum(sizes)
    return sizes


class MixConv(nn.Module):
    """Depthwise conv with a kernel size per channel group: (N, C, H, W) -> (N, C, H/s, W/s)."""

    def __init__(self, channels: int, kernels: tuple[int, ...], stride: int):
        super().__init__()
        self.sizes = split_channels(channels, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, stride, padding=k // 2, groups=c, bias=False)
            for c, k in zip(self.sizes, kernels, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.sizes, 1)  # indexed, not iterated: torch.fx can trace it
        return torch.cat([conv(parts[i]) for i, conv in enumerate(self.convs)], 1)


class MixBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, spec: MixSpec, stride: int, act_layer: ActFactory):
        super().__init__()
        mid = c_in * spec.expansion
        self.residual = c_in == c_out and stride == 1
        self.expand = (ConvBN(c_in, mid, 1, groups=spec.expand_groups, act_layer=act_layer)
                       if spec.expansion != 1 else nn.Identity())
        self.dw = nn.Sequential(MixConv(mid, spec.kernels, stride), nn.BatchNorm2d(mid),
                                act_layer(mid))
        self.se = (SqueezeExcite(mid, max(1, int(c_in * spec.se)), act_layer) if spec.se
                   else nn.Identity())
        self.project = ConvBN(mid, c_out, 1, groups=spec.project_groups)  # linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        y = self.project(self.se(self.dw(self.expand(x))))  # (N, C_out, H/s, W/s)
        return x + y if self.residual else y


class MixNet(nn.Module):
    def __init__(self, num_classes: int, act_layer: ActFactory, width: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        c = scaled(STEM, width)
        self.stem = ConvBN(3, c, 3, act_layer=act_layer)
        blocks = []
        for spec in BLOCKS:
            c_out = scaled(spec.out, width)
            for i in range(spec.repeats):
                blocks.append(MixBlock(c, c_out, spec, spec.stride if i == 0 else 1, act_layer))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        head = scaled(HEAD, width)
        self.head = ConvBN(c, head, 1, act_layer=act_layer)
        self.classifier = Classifier(head, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W)
        x = self.blocks(self.stem(x))  # (N, C, H/8, W/8)
        return self.classifier(self.head(x))  # (N, K)


@register_model
def mixnet_s(num_classes: int, act_layer: ActFactory | None = None, keep=None,
             width: float = 1.0, dropout: float = 0.0) -> MixNet:
    """MixNet-S (mixed 3x3..11x11 depthwise kernels, grouped 1x1 convs, squeeze-excitation)."""
    no_keep("mixnet_s", keep)
    return MixNet(num_classes, act_layer or make_act("relu"), width, dropout)
