"""SqueezeNet-1.1 for small images, with whole Fire modules that can be dropped.

Channel plan (torchvision's SqueezeNet-1.1), for a 32x32 input:

    stem    conv3x3(3 -> 64), stride 1          (N, 64, 32, 32)
      pool  maxpool 3x3 / 2, ceil               (N, 64, 16, 16)
    fire2   squeeze 16, expand 64 + 64          (N, 128, 16, 16)
    fire3   squeeze 16, expand 64 + 64          (N, 128, 16, 16)
      pool                                      (N, 128, 8, 8)
    fire4   squeeze 32, expand 128 + 128        (N, 256, 8, 8)
    fire5   squeeze 32, expand 128 + 128        (N, 256, 8, 8)
      pool                                      (N, 256, 4, 4)
    fire6   squeeze 48, expand 192 + 192        (N, 384, 4, 4)
    fire7   squeeze 48, expand 192 + 192        (N, 384, 4, 4)
    fire8   squeeze 64, expand 256 + 256        (N, 512, 4, 4)
    fire9   squeeze 64, expand 256 + 256        (N, 512, 4, 4)
    classifier  dropout, conv1x1(512 -> K), global average pool   (N, K)

Every conv has a bias and is followed by batch norm and the activation (the classifier has
neither). Each max-pool sits inside the block before it, between batch norm and activation:
act(maxpool(x)) == maxpool(act(x)) for a monotone activation (ReLU, clip-quant), so the CNN is
unchanged, while in the spiking net the pool picks the strongest input current instead of
OR-ing spikes (which overstates firing rates and wrecks conversion at few steps).

`pool="avg"` swaps every 3x3/2 max-pool for a 3x3/2 average pool in the same place (a different
CNN, trained as such). An average of currents is linear, so the spiking net applies it step by
step with no gating: mean over T of avgpool(x[t]) = avgpool(mean over T of x[t]) exactly, where
a max-pool's running-sum gate only approaches max(mean) as T grows.

Dropping a Fire module (docs/concepts.md): it leaves the sequence, the pools stay where they were (in
the last kept block before their position), and the next kept module's squeeze conv (or the
classifier) takes the channels that now arrive. 64x64 inputs work unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from firecut.activations import ActFactory, make_act
from firecut.errors import FirecutError
from firecut.models.registry import register_model


@dataclass(frozen=True)
class FireSpec:
    name: str
    squeeze: int  # channels
    expand1x1: int  # channels
    expand3x3: int  # channels


STEM_CHANNELS = 64
FIRE_PLAN: tuple[FireSpec, ...] = (
    FireSpec("fire2", 16, 64, 64),
    FireSpec("fire3", 16, 64, 64),
    FireSpec("fire4", 32, 128, 128),
    FireSpec("fire5", 32, 128, 128),
    FireSpec("fire6", 48, 192, 192),
    FireSpec("fire7", 48, 192, 192),
    FireSpec("fire8", 64, 256, 256),
    FireSpec("fire9", 64, 256, 256),
)
FIRE_NAMES: tuple[str, ...] = tuple(f.name for f in FIRE_PLAN)
POOL_AFTER: tuple[str, ...] = ("stem", "fire3", "fire5")  # max-pools stay here whatever is dropped


class ConvBNAct(nn.Module):
    """conv (with bias, 'same' padding) -> batch norm -> [max-pool] -> activation."""

    def __init__(self, c_in: int, c_out: int, k: int, act_layer: ActFactory):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=True)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool: nn.Module | None = None
        self.act = act_layer(c_out)

    def add_pool(self, kind: str = "max") -> None:
        """One more 3x3/2 pool (several stack when the blocks between them were dropped)."""
        self.pool = make_pool(kind) if self.pool is None else nn.Sequential(self.pool, make_pool(kind))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        x = self.bn(self.conv(x))  # (N, C_out, H, W)
        if self.pool is not None:
            x = self.pool(x)  # (N, C_out, H/2, W/2)
        return self.act(x)


# --pool: each halves the map, 32 -> 16 -> 8 -> 4. max and avg: the paper's 3x3 window, stride 2,
# ceil mode (an average divides by the cells inside the image, so a window clipped at the border
# is not diluted by padding). avg2: a 2x2 window, stride 2, every window inside the map: the
# average pool every NIR consumer maps (snntorch has no SumPool2d or Scale, which avg's clipped
# windows need in NIR).
POOLS: dict[str, Callable[[], nn.Module]] = {
    "max": lambda: nn.MaxPool2d(3, 2, ceil_mode=True),
    "avg": lambda: nn.AvgPool2d(3, 2, ceil_mode=True),
    "avg2": lambda: nn.AvgPool2d(2, 2),
}


def make_pool(kind: str = "max") -> nn.Module:
    if kind not in POOLS:
        raise FirecutError(f"unknown pool '{kind}'; choose one of: {', '.join(POOLS)}")
    return POOLS[kind]()


class Fire(nn.Module):
    """squeeze 1x1 -> (expand 1x1 || expand 3x3), concatenated on channels."""

    def __init__(self, c_in: int, spec: FireSpec, act_layer: ActFactory):
        super().__init__()
        self.squeeze = ConvBNAct(c_in, spec.squeeze, 1, act_layer)
        self.expand1x1 = ConvBNAct(spec.squeeze, spec.expand1x1, 1, act_layer)
        self.expand3x3 = ConvBNAct(spec.squeeze, spec.expand3x3, 3, act_layer)
        self.out_channels = spec.expand1x1 + spec.expand3x3

    def add_pool(self, kind: str = "max") -> None:
        """Pools the output: inside both expand branches, before their activations."""
        self.expand1x1.add_pool(kind)
        self.expand3x3.add_pool(kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        s = self.squeeze(x)  # (N, S, H, W)
        return torch.cat([self.expand1x1(s), self.expand3x3(s)], 1)  # (N, E1 + E3, H, W)


def fire_plan(width: float = 1.0) -> tuple[FireSpec, ...]:
    """FIRE_PLAN with every channel count scaled by `width` (at least 1)."""
    w = lambda c: max(1, int(round(c * width)))  # noqa: E731
    return tuple(FireSpec(f.name, w(f.squeeze), w(f.expand1x1), w(f.expand3x3)) for f in FIRE_PLAN)


def stem_channels(width: float = 1.0) -> int:
    return max(1, int(round(STEM_CHANNELS * width)))


def pool_plan(keep: tuple[str, ...]) -> dict[str, int]:
    """Max-pools per block for a keep list: each pool of POOL_AFTER sits in the last kept block
    (or the stem) at or before its position. ('fire4',) -> {'stem': 2, 'fire4': 1}."""
    pools: dict[str, int] = {"stem": 0, **{m: 0 for m in keep}}
    last = "stem"
    for name in ("stem",) + FIRE_NAMES:
        if name in keep:
            last = name
        if name in POOL_AFTER:
            pools[last] += 1
    return pools


def check_keep(keep) -> tuple[str, ...]:
    """Validates a keep list against fire2..fire9; returns it in network order."""
    if keep is None:
        return FIRE_NAMES
    keep = list(keep)
    unknown = [k for k in keep if k not in FIRE_NAMES]
    if unknown:
        raise FirecutError(f"unknown Fire module(s) {unknown}; SqueezeNet has {', '.join(FIRE_NAMES)}")
    if len(set(keep)) != len(keep):
        raise FirecutError(f"keep mask names a module twice: {keep}")
    return tuple(n for n in FIRE_NAMES if n in keep)


class SqueezeNet(nn.Module):
    def __init__(self, num_classes: int, act_layer: ActFactory, keep=None, width: float = 1.0,
                 dropout: float = 0.0, in_chans: int = 3, pool: str = "max"):
        super().__init__()
        self.keep = check_keep(keep)
        make_pool(pool)  # an unknown kind fails here, before any layer is built
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = ConvBNAct(in_chans, stem_channels(width), 3, act_layer)
        c = stem_channels(width)
        for spec in fire_plan(width):
            if spec.name in self.keep:
                layers[spec.name] = Fire(c, spec, act_layer)
                c = layers[spec.name].out_channels
        for name, pools in pool_plan(self.keep).items():
            for _ in range(pools):
                layers[name].add_pool(pool)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict(
            drop=nn.Dropout(dropout),
            conv=nn.Conv2d(c, num_classes, 1, bias=True),
        ))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W)
        x = self.features(x)  # (N, C, H/8, W/8)
        x = self.classifier(x)  # (N, K, H/8, W/8)
        return self.pool(x).flatten(1)  # (N, K)


@register_model
def squeezenet(num_classes: int, act_layer: ActFactory | None = None, keep=None,
               width: float = 1.0, dropout: float = 0.0, pool: str = "max") -> SqueezeNet:
    """SqueezeNet-1.1 (3x3 stem of 64, BN, Fire modules fire2..fire9, 1x1-conv classifier)."""
    return SqueezeNet(num_classes, act_layer or make_act("relu"), keep, width, dropout, pool=pool)


REF1_KEEP: tuple[str, ...] = ("fire4", "fire6", "fire8", "fire9")  # the paper's Ref-1 schedule


@register_model
def squeezenet_p(num_classes: int, act_layer: ActFactory | None = None, keep=None,
                 width: float = 1.0, dropout: float = 0.0, pool: str = "max") -> SqueezeNet:
    """SqueezeNet-P: SqueezeNet keeping fire4, fire6, fire8, fire9 (the paper's Ref-1 mask)."""
    return SqueezeNet(num_classes, act_layer or make_act("relu"), REF1_KEEP if keep is None else keep,
                      width, dropout, pool=pool)
