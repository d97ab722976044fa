"""ShuffleNetV2 (Ma et al., ECCV 2018), shaped for 32x32 inputs.

Plan at width 1.0 (the paper's scaled-down variant; torchvision's 1.0x is 116/232/464), 32x32:

    stem    conv3x3(3 -> 24), stride 1 (no max-pool)      (N, 24, 32, 32)
    stage2  4 units, the first stride 2, 94 channels       (N, 94, 16, 16)
    stage3  8 units, the first stride 2, 188 channels      (N, 188, 8, 8)
    stage4  4 units, the first stride 2, 376 channels      (N, 376, 4, 4)
    conv5   conv1x1 -> 1024                                (N, 1024, 4, 4)
    classifier  conv1x1 -> K, global average pool          (N, K)

A unit splits its channels in two halves, passes one unchanged and the other through
pw 1x1 -> dw 3x3 (BN, no activation) -> pw 1x1, concatenates and shuffles the channels. A stride-2
unit feeds both halves the whole input (dw 3x3/2 -> pw 1x1 on the passed side). The width
multiplier scales the stage channels (even numbers), not the stem or conv5. 64x64 inputs give
(N, 1024, 8, 8) before the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from firecut.activations import ActFactory, make_act
from firecut.models.blocks import Classifier, ConvBN, channel_shuffle, no_keep, scaled
from firecut.models.registry import register_model

STEM, CONV5 = 24, 1024  # channels
STAGES: tuple[tuple[int, int], ...] = ((4, 94), (8, 188), (4, 376))  # (units, channels)


class ShuffleUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, act_layer: ActFactory):
        super().__init__()
        half = c_out // 2
        self.stride = stride
        if stride == 2:  # both halves see the whole input
            self.left = nn.Sequential(ConvBN(c_in, c_in, 3, 2, groups=c_in),
                                      ConvBN(c_in, half, 1, act_layer=act_layer))
            c_branch = c_in
        else:
            self.left = None
            c_branch = half
        self.right = nn.Sequential(
            ConvBN(c_branch, half, 1, act_layer=act_layer),
            ConvBN(half, half, 3, stride, groups=half),  # depthwise, linear
            ConvBN(half, half, 1, act_layer=act_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        if self.left is None:
            a, b = x.chunk(2, 1)  # (N, C/2, H, W) each
            y = torch.cat([a, self.right(b)], 1)
        else:
            y = torch.cat([self.left(x), self.right(x)], 1)  # (N, C_out, H/2, W/2)
        return channel_shuffle(y, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int, act_layer: ActFactory, width: float = 1.0,
                 dropout: float = 0.0):
        super().__init__()
        self.stem = ConvBN(3, STEM, 3, act_layer=act_layer)
        units, c = [], STEM
        for repeats, channels in STAGES:
            c_out = scaled(channels, width, 2)
            for i in range(repeats):
                units.append(ShuffleUnit(c, c_out, 2 if i == 0 else 1, act_layer))
                c = c_out
        self.stages = nn.Sequential(*units)
        self.conv5 = ConvBN(c, CONV5, 1, act_layer=act_layer)
        self.classifier = Classifier(CONV5, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W)
        x = self.stages(self.stem(x))  # (N, C, H/8, W/8)
        return self.classifier(self.conv5(x))  # (N, K)


@register_model
def shufflenetv2(num_classes: int, act_layer: ActFactory | None = None, keep=None,
                 width: float = 1.0, dropout: float = 0.0) -> ShuffleNetV2:
    """ShuffleNetV2 (stages 94/188/376, conv5 1024; channel split and shuffle, depthwise 3x3)."""
    no_keep("shufflenetv2", keep)
    return ShuffleNetV2(num_classes, act_layer or make_act("relu"), width, dropout)
