"""Config -> network: a registered CNN, optionally converted to a spiking net.

One path for every network: build the CNN with its activation, then (SNN) swap activations for
LIF neurons. A checkpoint stores the two configs, so the same path rebuilds it before loading.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
from torch import nn

from firecut.activations import make_act
from firecut.config import ModelConfig, SpikingConfig
from firecut.errors import FirecutError
from firecut.models import get_builder
from firecut.spiking import LIF, SpikingNet, convert


def check_pool(mc: ModelConfig) -> dict[str, str]:
    """The builder's pool argument for `mc.pool` ({} for max, every family's default); raises
    FirecutError for an unknown kind or a family without the option."""
    from firecut.models.squeezenet import make_pool

    make_pool(mc.pool)  # an unknown kind: make_pool's one line naming the choices
    if mc.pool == "max":
        return {}
    if "pool" not in inspect.signature(get_builder(mc.name)).parameters:
        raise FirecutError(f"--pool {mc.pool}: '{mc.name}' has no pool option (squeezenet and "
                           "squeezenet_p have); drop --pool")
    return {"pool": mc.pool}


def build_cnn(mc: ModelConfig, num_classes: int) -> nn.Module:
    act = make_act(mc.act, levels=mc.levels, clip_init=mc.clip_init)
    return get_builder(mc.name)(num_classes, act_layer=act, keep=mc.keep, width=mc.width,
                                dropout=mc.dropout, **check_pool(mc))


def to_spiking(cnn: nn.Module, sc: SpikingConfig, image_size: int,
               thresholds: dict[str, float] | None = None) -> SpikingNet:
    """Converts `cnn` in place; thresholds from balancing, else `sc.threshold` everywhere."""
    example = torch.zeros(2, 3, image_size, image_size, device=next(cnn.parameters()).device)
    return convert(cnn, example, sc.timesteps, neuron=neuron_factory(sc), thresholds=thresholds,
                   default_threshold=sc.threshold, encode_once=sc.encode_once)


def neuron_factory(sc: SpikingConfig) -> Callable[..., LIF]:
    """The LIF neurons a spiking config asks for; conversion adds width, threshold and T."""
    return functools.partial(LIF, beta=sc.resolved_beta(), learn_threshold=sc.learn_threshold,
                             surrogate_name=sc.surrogate, surrogate_param=sc.surrogate_param,
                             v_init=sc.v_init, scale_output=True, reset=sc.reset)


def build_network(mc: ModelConfig, sc: SpikingConfig, num_classes: int, image_size: int) -> nn.Module:
    cnn = build_cnn(mc, num_classes)
    return to_spiking(cnn, sc, image_size) if sc.enabled else cnn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
