"""MnasNet-B1 (Tan et al., CVPR 2019), scaled down and shaped for 32x32 inputs.

Plan at width 1.0 (torchvision's mnasnet1_0 layout with every channel count scaled down to the
paper's budget; strides moved so 32x32 ends at 4x4), 32x32:

    stem    conv3x3(3 -> 16), stride 1; dw3x3 -> pw1x1 -> 8 (linear)   (N, 8, 32, 32)
    stack   exp  k  stride  repeats  out
            3    3  1       3        8                                 (N, 8, 32, 32)
            3    5  2       3        12                                (N, 12, 16, 16)
            6    5  2       3        16                                (N, 16, 8, 8)
            6    3  1       2        24                                (N, 24, 8, 8)
            6    5  2       4        36                                (N, 36, 4, 4)
            6    3  1       1        52                                (N, 52, 4, 4)
    head    conv1x1 -> 240                                             (N, 240, 4, 4)
    classifier  conv1x1 -> K, global average pool                      (N, K)

An inverted residual block: pw 1x1 expand (act) -> dw kxk (act) -> pw 1x1 project (BN, no
activation), plus the input when shapes match. The projection and the residual sum are
real-valued in a spiking net, so each block's expand conv is counted as MAC. The width
multiplier scales every channel count (multiples of 4).
"""

from __future__ import annotations

import torch
from torch import nn

from firecut.activations import ActFactory, make_act
from firecut.models.blocks import Classifier, ConvBN, no_keep, scaled
from firecut.models.registry import register_model

STEM, SEP_OUT, HEAD = 16, 8, 240  # channels
# (expansion, kernel, stride, repeats, out channels)
STACKS: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 3, 1, 3, 8), (3, 5, 2, 3, 12), (6, 5, 2, 3, 16),
    (6, 3, 1, 2, 24), (6, 5, 2, 4, 36), (6, 3, 1, 1, 52))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expansion: int,
                 act_layer: ActFactory):
        super().__init__()
        mid = c_in * expansion
        self.residual = c_in == c_out and stride == 1
        self.expand = ConvBN(c_in, mid, 1, act_layer=act_layer)
        self.dw = ConvBN(mid, mid, k, stride, groups=mid, act_layer=act_layer)
        self.project = ConvBN(mid, c_out, 1)  # linear bottleneck

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        y = self.project(self.dw(self.expand(x)))  # (N, C_out, H/s, W/s)
        return x + y if self.residual else y


class MnasNet(nn.Module):
    def __init__(self, num_classes: int, act_layer: ActFactory, width: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        stem, sep = scaled(STEM, width), scaled(SEP_OUT, width)
        self.stem = nn.Sequential(ConvBN(3, stem, 3, act_layer=act_layer),
                                  ConvBN(stem, stem, 3, groups=stem, act_layer=act_layer),
                                  ConvBN(stem, sep, 1))
        blocks, c = [], sep
        for expansion, k, stride, repeats, out in STACKS:
            c_out = scaled(out, width)
            for i in range(repeats):
                blocks.append(InvertedResidual(c, c_out, k, stride if i == 0 else 1, expansion,
                                               act_layer))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        head = scaled(HEAD, width)
        self.head = ConvBN(c, head, 1, act_layer=act_layer)
        self.classifier = Classifier(head, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W)
        x = self.blocks(self.stem(x))  # (N, C, H/8, W/8)
        return self.classifier(self.head(x))  # (N, K)


@register_model
def mnasnet(num_classes: int, act_layer: ActFactory | None = None, keep=None,
            width: float = 1.0, dropout: float = 0.0) -> MnasNet:
    """MnasNet-B1 (inverted residuals with 3x3/5x5 depthwise convs, linear bottlenecks; head 240)."""
    no_keep("mnasnet", keep)
    return MnasNet(num_classes, act_layer or make_act("relu"), width, dropout)
