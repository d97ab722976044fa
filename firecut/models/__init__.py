"""Models: a registry of builders, one file per family. Importing this registers them all."""

from firecut.models import mixnet, mnasnet, shufflenetv2, squeezenet, xception  # noqa: F401  (registers)
from firecut.models.registry import describe, get_builder, list_models, register_model

__all__ = ["describe", "get_builder", "list_models", "register_model"]
