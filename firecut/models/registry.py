"""Model registry: `@register_model` builders, looked up by name (timm's pattern)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from firecut.errors import FirecutError

ModelBuilder = Callable[..., nn.Module]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder) -> ModelBuilder:
    """Registers `fn(num_classes, act_layer, keep=None, width=1.0, dropout=0.0) -> nn.Module`."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def get_builder(name: str) -> ModelBuilder:
    if name not in _MODELS:
        raise FirecutError(f"unknown model '{name}'; choose one of: {', '.join(list_models())} "
                           "(see `firecut models`)")
    return _MODELS[name]


def describe(name: str) -> str:
    doc = (get_builder(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
