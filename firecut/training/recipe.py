"""The shared recipe: one RunConfig per step, and the CNN -> convert -> fine-tune pipeline.

The ablation, the search and the benchmark all train the same way (one recipe for every model
and dataset, a `config.RecipeConfig` each of their settings holds): the CNN with the preset's
clip-quant activation, then its best checkpoint converted (threshold = learned clip) and
fine-tuned as an SNN (with `distill`, also from that CNN's soft targets).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import yaml

from firecut.config import (PRESETS, ModelConfig, RecipeConfig, RunConfig, apply_preset, apply_target,
                            settings_diff, validate)
from firecut.errors import FirecutError
from firecut.io import atomic_write_text


def check_preset(preset: str | None) -> None:
    if preset is not None and preset not in PRESETS:
        raise FirecutError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")


def check_recipe(recipe: RecipeConfig, *extra: tuple[str, int | None]) -> None:
    """The recipe's values, before anything trains: --epochs, --finetune-epochs, --timesteps,
    --batch-size (and `extra` (flag, value) pairs) >= 1 where given; the energy preset exists and
    overrides are >= 0; --distill in [0, 1]."""
    from firecut.energy import make_energy

    from firecut.config import check_target

    make_energy(recipe.energy_preset, recipe.e_ac_pj, recipe.e_mac_pj, recipe.energy_model)
    check_target(recipe.target)
    if not 0.0 <= recipe.distill <= 1.0:
        raise FirecutError("--distill must be in [0, 1] (the CNN teacher's share of the SNN's loss)")
    for flag, v in (("--epochs", recipe.epochs), ("--finetune-epochs", recipe.finetune_epochs),
                    ("--timesteps", recipe.timesteps), ("--batch-size", recipe.batch_size), *extra):
        if v is not None and v < 1:
            raise FirecutError(f"{flag} must be >= 1")


def check_data(recipe: RecipeConfig) -> None:
    """The recipe's dataset loads (one image of each split), before any work is announced or
    trained: a missing file or an offline download fails in one line, first."""
    from firecut.data import load_data

    load_data(recipe.dataset, recipe.root, train_subset=1, test_subset=1)


UNPINNED = ("root", "device")  # where the data lives and what trains it: not what a run *is*


def pin_settings(out: Path, filename: str, mine: dict[str, Any], refusal: str,
                 defaults: dict[str, Any] | None = None, grows: tuple[str, ...] = ()) -> None:
    """Records `mine` (less UNPINNED and `grows`) in OUT/FILENAME; refuses an OUT whose file holds
    other values, naming them: "OUT holds {refusal} (keys); use another --out". A key an older
    file lacks counts as its value in `defaults` (a setting added since then). `grows` are the
    settings that may change between runs into one OUT because every run they add sits beside
    the finished ones (more seeds, more models)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    free = UNPINNED + grows
    mine = {k: v for k, v in mine.items() if k not in free}
    if path.is_file():
        diff = settings_diff(yaml.safe_load(path.read_text()) or {}, mine, free, defaults)
        if diff:
            raise FirecutError(f"{out} holds {refusal} ({', '.join(diff)}); use another --out")
    else:
        atomic_write_text(path, yaml.safe_dump(mine, sort_keys=False))


def step_config(recipe: RecipeConfig, mode: str, seed: int = 0, model: str = "squeezenet") -> RunConfig:
    """A RunConfig for one step: 'cnn', 'snn' (from a trained net) or 'snn-scratch'."""
    cfg = RunConfig()
    cfg.spiking.enabled = mode != "cnn"
    apply_preset(cfg, recipe.preset, mode)
    apply_target(cfg, recipe.target)
    cfg.model.name = model
    cfg.data.dataset, cfg.data.root = recipe.dataset, recipe.root
    cfg.data.train_subset, cfg.data.test_subset = recipe.train_subset, recipe.test_subset
    cfg.model.width = recipe.width
    cfg.train.seed, cfg.train.device = seed, recipe.device
    cfg.energy.preset = recipe.energy_preset
    cfg.energy.e_ac_pj, cfg.energy.e_mac_pj = recipe.e_ac_pj, recipe.e_mac_pj
    cfg.energy.model = recipe.energy_model
    epochs = recipe.finetune_epochs if mode == "snn" else recipe.epochs
    if epochs is not None:
        cfg.train.epochs = epochs
    for value, section, key in ((recipe.timesteps, "spiking", "timesteps"),
                                (recipe.batch_size, "train", "batch_size")):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    return cfg


def cnn_then_snn(recipe: RecipeConfig, cnn_dir: Path, snn_dir: Path, fit: Callable,
                 log: Callable[[str], None], model: str = "squeezenet", seed: int = 0,
                 keep: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Trains the CNN (with Fire modules `keep`, None = the model's own) into `cnn_dir`, converts
    its best checkpoint and fine-tunes the SNN into `snn_dir` (both resumable run folders);
    returns their summaries."""
    log(f"{model}: training the CNN (seed {seed})")
    cnn = step_config(recipe, "cnn", seed, model)
    cnn.model.keep = list(keep) if keep is not None else None
    cnn = validate(cnn)
    cnn_summary = fit(cnn, str(cnn_dir))
    log(f"{model}: converting to an SNN and fine-tuning (seed {seed})")
    return cnn_summary, snn_from_cnn(recipe, cnn, cnn_dir, snn_dir, fit, seed, model)


def snn_from_cnn(recipe: RecipeConfig, cnn: RunConfig, cnn_dir: Path, snn_dir: Path, fit: Callable,
                 seed: int = 0, model: str = "squeezenet") -> dict[str, Any]:
    """Converts the best checkpoint of the CNN that `cnn` trained into `cnn_dir` and fine-tunes it
    into `snn_dir`; returns the SNN's summary."""
    snn = step_config(recipe, "snn", seed, model)
    snn.spiking.init = str(Path(cnn_dir) / "best.pt")
    snn.train.distill = recipe.distill  # the teacher is this CNN (training.distill)
    # the converted net keeps the CNN's architecture and activation; it is not pruned from anything
    snn.model = ModelConfig(**{**asdict(cnn.model), "parent": None})
    return fit(validate(snn), str(snn_dir))
