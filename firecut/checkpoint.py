"""Self-describing checkpoints, written atomically, refused clearly when corrupt or foreign.

A checkpoint holds everything needed to rebuild and judge the network without the run folder:
the model and spiking configs, classes, image size, normalisation, metrics, firecut's version,
and (for resuming) optimiser, scheduler and epoch.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

import firecut
from firecut.config import ModelConfig, SpikingConfig
from firecut.errors import FirecutError
from firecut.network import build_network
from firecut.io import atomic_write_bytes

FORMAT = "firecut-checkpoint"
FORMAT_VERSION = 1


def make_checkpoint(model: nn.Module, mc: ModelConfig, sc: SpikingConfig, *, classes: list[str],
                    image_size: int, dataset: str, mean: list[float], std: list[float],
                    metrics: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "firecut_version": firecut.__version__,
        "arch": {"model": asdict(mc), "spiking": asdict(sc), "num_classes": len(classes),
                 "image_size": image_size},
        "dataset": dataset,
        "classes": list(classes),
        "norm": {"mean": list(mean), "std": list(std)},
        "metrics": metrics or {},
        "state_dict": model.state_dict(),
        **extra,
    }


def portable_path(path: str | None, folder: str | os.PathLike) -> str | None:
    """A path as a file that may be shared records it: relative to `folder` (where the file
    lies), so that neither the writer's home nor its data folders are written into it; a
    reader resolves it against the file's own folder. None and registered names stay."""
    from firecut.data import DATASETS

    if not path or path in DATASETS:
        return path
    try:
        return os.path.relpath(Path(path).resolve(), Path(folder).resolve())
    except ValueError:  # another drive (Windows): the name is all that can be said
        return Path(path).name


def shareable_config(config: dict[str, Any], folder: str | os.PathLike) -> dict[str, Any]:
    """A run's config (RunConfig.to_dict()) for a checkpoint in `folder`: paths made portable and
    the data root (where this machine caches datasets) left out."""
    config = {section: dict(values) for section, values in config.items()}
    config["data"]["root"] = None
    config["data"]["dataset"] = portable_path(config["data"]["dataset"], folder)
    config["model"]["parent"] = portable_path(config["model"].get("parent"), folder)
    config["spiking"]["init"] = portable_path(config["spiking"].get("init"), folder)
    return config


def resolve_recorded(path: str, checkpoint: str | os.PathLike) -> str:
    """A path recorded by portable_path, read back beside `checkpoint` (as given if absolute, a
    registered name, or missing there)."""
    beside = os.path.normpath(Path(checkpoint).parent / path)
    return beside if path and not Path(path).is_absolute() and Path(beside).exists() else path


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> None:
    atomic_write_bytes(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FirecutError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise FirecutError(f"{path}: not a readable checkpoint (corrupt or truncated: "
                           f"{e.__class__.__name__}); re-create it with `firecut train`") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FirecutError(f"{path}: not a firecut checkpoint (no '{FORMAT}' marker); "
                           "pass a best.pt/last.pt written by `firecut train`")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise FirecutError(f"{path}: written by a newer firecut ({ckpt.get('firecut_version')}); "
                           "upgrade firecut")
    return ckpt


def require_fits(ckpt: dict[str, Any], num_classes: int, image_size: int, label: str) -> None:
    """Refuses a checkpoint trained for another class count or image size than the dataset's."""
    k, size = ckpt["arch"]["num_classes"], ckpt["arch"]["image_size"]
    if (k, size) != (num_classes, image_size):
        raise FirecutError(f"{label} was trained for {k} classes at {size}px, but the dataset has "
                           f"{num_classes} at {image_size}px; give a checkpoint trained on this dataset")


def configs_of(ckpt: dict[str, Any]) -> tuple[ModelConfig, SpikingConfig]:
    arch = ckpt["arch"]
    return ModelConfig(**arch["model"]), SpikingConfig(**arch["spiking"])


def model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    mc, sc = configs_of(ckpt)
    model = build_network(mc, sc, ckpt["arch"]["num_classes"], ckpt["arch"]["image_size"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise FirecutError(f"checkpoint weights do not fit its own architecture ({first})") from None
    return model
