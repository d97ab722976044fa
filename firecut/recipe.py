"""The shared recipe: one RunConfig per step, and the CNN -> convert -> fine-tune pipeline.

The ablation, the search and the benchmark all train the same way (DESIGN §1: one recipe for
every model and dataset): the CNN with the preset's clip-quant activation, then its best
checkpoint converted (threshold = learned clip) and fine-tuned as an SNN. `settings` is any of
their config dataclasses: it carries dataset, root, preset, epochs, finetune_epochs, timesteps,
batch_size, train_subset, test_subset, width and device.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from firecut.config import ModelConfig, RunConfig, apply_preset, validate


def step_config(settings: Any, mode: str, seed: int = 0, model: str = "squeezenet") -> RunConfig:
    """A RunConfig for one step: 'cnn', 'snn' (from a trained net) or 'snn-scratch'."""
    cfg = RunConfig()
    cfg.spiking.enabled = mode != "cnn"
    apply_preset(cfg, settings.preset, mode)
    cfg.model.name = model
    cfg.data.dataset, cfg.data.root = settings.dataset, settings.root
    cfg.data.train_subset, cfg.data.test_subset = settings.train_subset, settings.test_subset
    cfg.model.width = settings.width
    cfg.train.seed, cfg.train.device = seed, settings.device
    epochs = settings.finetune_epochs if mode == "snn" else settings.epochs
    if epochs is not None:
        cfg.train.epochs = epochs
    for value, section, key in ((settings.timesteps, "spiking", "timesteps"),
                                (settings.batch_size, "train", "batch_size")):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    return cfg


def cnn_then_snn(settings: Any, cnn_dir: Path, snn_dir: Path, fit: Callable,
                 log: Callable[[str], None], model: str = "squeezenet", seed: int = 0,
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains the CNN into `cnn_dir`, converts its best checkpoint and fine-tunes the SNN into
    `snn_dir` (both resumable run folders); returns their summaries."""
    log(f"{model}: training the CNN (seed {seed})")
    cnn = validate(step_config(settings, "cnn", seed, model))
    cnn_summary = fit(cnn, str(cnn_dir))
    log(f"{model}: converting to an SNN and fine-tuning (seed {seed})")
    snn = step_config(settings, "snn", seed, model)
    snn.spiking.init = str(Path(cnn_dir) / "best.pt")
    snn.model = ModelConfig(**asdict(cnn.model))  # the converted net keeps the CNN's activation
    return cnn_summary, fit(validate(snn), str(snn_dir))
