"""Xception (Chollet, CVPR 2017), scaled down and shaped for 32x32 inputs.

Plan at width 1.0 (Xception's entry / middle / exit flows with every channel count scaled down
to the paper's budget; the stem and the exit block keep stride 1 so 32x32 ends at 4x4), 32x32:

    stem    conv3x3(3 -> 8), conv3x3(8 -> 16), stride 1               (N, 16, 32, 32)
    entry   block 16 -> 32, 2 sep convs, max-pool 3x3/2               (N, 32, 16, 16)
            block 32 -> 64                                            (N, 64, 8, 8)
            block 64 -> 156                                           (N, 156, 4, 4)
    middle  8 blocks 156 -> 156, 3 sep convs, identity residual       (N, 156, 4, 4)
    exit    block 156 -> 224 (sep 156, sep 224), no pool              (N, 224, 4, 4)
            sep conv -> 336, sep conv -> 448                          (N, 448, 4, 4)
    classifier  conv1x1 -> K, global average pool                     (N, K)

A separable conv is depthwise 3x3 -> pointwise 1x1 with nothing between them (as in Xception),
then BN; a block is [act -> sep conv -> BN] x reps (-> max-pool), plus a residual (identity, or
conv1x1/stride + BN when the shape changes). The depthwise output is real-valued in a spiking
net, so every pointwise conv is counted as MAC; so are the residual convs, which read a sum. The
width multiplier scales every channel count (multiples of 4).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from firecut.activations import ActFactory, make_act
from firecut.models.blocks import Classifier, ConvBN, no_keep, scaled
from firecut.models.registry import register_model

STEM = (8, 16)  # channels of the two 3x3 convs
ENTRY = (32, 64, 156)  # each block: 2 sep convs, stride 2 (max-pool)
MIDDLE, MIDDLE_BLOCKS = 156, 8
EXIT = (156, 224)  # the exit block's two sep convs (stride 1 at 32x32)
TAIL = (336, 448)  # two sep convs (with activation) before the classifier


class SepConv(nn.Sequential):
    """depthwise 3x3 -> pointwise 1x1 (no BN or activation between) -> BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(OrderedDict(
            dw=nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            pw=nn.Conv2d(c_in, c_out, 1, bias=False),
            bn=nn.BatchNorm2d(c_out)))


class Block(nn.Module):
    """[act ->] sep -> (act -> sep) x (reps-1) [-> max-pool 3x3/2], + residual."""

    def __init__(self, c_in: int, channels: tuple[int, ...], stride: int, act_layer: ActFactory,
                 start_with_act: bool = True):
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c = c_in
        for i, c_out in enumerate(channels):
            if i > 0 or start_with_act:
                act = act_layer(c)
                if hasattr(act, "inplace"):
                    act.inplace = False  # the residual still needs the block's input
                layers[f"act{i}"] = act
            layers[f"sep{i}"] = SepConv(c, c_out)
            c = c_out
        if stride != 1:
            layers["pool"] = nn.MaxPool2d(3, stride, padding=1)
        self.main = nn.Sequential(layers)
        self.skip = (ConvBN(c_in, c, 1, stride) if (c != c_in or stride != 1) else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        y = self.main(x)  # (N, C_out, H/s, W/s)
        return y + (x if self.skip is None else self.skip(x))


class Xception(nn.Module):
    def __init__(self, num_classes: int, act_layer: ActFactory, width: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        w = lambda c: scaled(c, width)  # noqa: E731
        s1, s2 = w(STEM[0]), w(STEM[1])
        self.stem = nn.Sequential(ConvBN(3, s1, 3, act_layer=act_layer),
                                  ConvBN(s1, s2, 3, act_layer=act_layer))
        blocks, c = [], s2
        for i, c_out in enumerate(ENTRY):  # the stem ends with an activation: the first block
            blocks.append(Block(c, (w(c_out),) * 2, 2, act_layer, start_with_act=i > 0))
            c = w(c_out)
        for _ in range(MIDDLE_BLOCKS):
            blocks.append(Block(c, (w(MIDDLE),) * 3, 1, act_layer))
            c = w(MIDDLE)
        blocks.append(Block(c, tuple(w(e) for e in EXIT), 1, act_layer))
        c = w(EXIT[-1])
        self.blocks = nn.Sequential(*blocks)
        tail: OrderedDict[str, nn.Module] = OrderedDict()
        for i, c_out in enumerate(TAIL):
            tail[f"sep{i}"] = SepConv(c, w(c_out))
            tail[f"act{i}"] = act_layer(w(c_out))
            c = w(c_out)
        self.tail = nn.Sequential(tail)
        self.classifier = Classifier(c, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W)
        x = self.blocks(self.stem(x))  # (N, C, H/8, W/8)
        return self.classifier(self.tail(x))  # (N, K)


@register_model
def xception(num_classes: int, act_layer: ActFactory | None = None, keep=None,
             width: float = 1.0, dropout: float = 0.0) -> Xception:
    """Xception (entry/middle/exit flows of depthwise-separable convs with residuals; 8 middle blocks)."""
    no_keep("xception", keep)
    return Xception(num_classes, act_layer or make_act("relu"), width, dropout)
