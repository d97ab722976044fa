"""What the commands share: the device choice, Ctrl-C handling, JSON output, the defaults quoted in
help texts, `command`, which marks a function as a command for `firecut.cli.app` to register, and
`with_recipe`, the one bundle of recipe options (`config.RecipeConfig`, its defaults) that ablate,
search and benchmark take."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import sys
import typing
from contextlib import contextmanager
from enum import Enum
from typing import Callable, Optional

import typer

from firecut.cli.progress import ProgressBar
from firecut.config import ENERGY_HELP, ENERGY_MODEL_HELP, PRESET_HELP, ModelConfig, RecipeConfig, TrainConfig, default_data_root

TRAIN_DEFAULTS, MODEL_DEFAULTS = TrainConfig(), ModelConfig()  # dataclass defaults, quoted in help texts


def command(epilog: str, name: str | None = None, group: str | None = None) -> Callable:
    """Marks a command function (registered by firecut.cli.app, in its order)."""
    def mark(fn: Callable) -> Callable:
        fn.cli = {"epilog": epilog, "name": name, "group": group}
        return fn
    return mark


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@contextmanager
def resumable(out: str):
    """Ctrl-C during a long run: say where the finished work is and how to resume (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"firecut: interrupted; finished work is saved in {out}: re-run the same command "
              "to resume", file=sys.stderr)
        raise typer.Exit(130) from None


@contextmanager
def running(out: str, bar: bool = True):
    """The body of a long command: yields its progress (event lines, the Rich bar), which the
    library gets as fit's hooks; Ctrl-C says where the finished work is (see `resumable`)."""
    with resumable(out):
        progress = ProgressBar(bar)
        try:
            yield progress
        finally:
            progress.close()


def print_json(d) -> None:
    sys.stdout.write(json.dumps(d, indent=2) + "\n")


# The recipe's options: RecipeConfig field -> (flags, type, help). Defaults come from RecipeConfig.
RECIPE_OPTIONS: dict[str, tuple[tuple[str, ...], typing.Any, str]] = {
    "dataset": (("--dataset",), str, "cifar10 | cifar100 | tinyimagenet | PATH.npz"),
    "preset": (("--preset",), str, f"{PRESET_HELP}."),
    "epochs": (("--epochs",), Optional[int], "CNN epochs (an SNN's trained from scratch) \\[default: the preset's]."),
    "finetune_epochs": (("--finetune-epochs",), Optional[int], "SNN fine-tuning epochs, after conversion or pruning \\[default: the preset's]."),
    "timesteps": (("--timesteps",), Optional[int], "SNN time steps T \\[default: the preset's]."),
    "batch_size": (("--batch-size",), Optional[int], "Images per training step \\[default: the preset's]."),
    "train_subset": (("--train-subset",), Optional[int], "Train on N class-balanced images \\[default: all]."),
    "test_subset": (("--test-subset",), Optional[int], "Evaluate on N class-balanced test images \\[default: all]."),
    "width": (("--width",), float, "Channel width multiplier of every model (tests)."),
    "root": (("--data-root",), Optional[str], "Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    "device": (("--device",), Device, "Training device."),
    "energy_preset": (("--energy-preset",), str, f"Energy per op (e_AC/e_MAC): {ENERGY_HELP}."),
    "e_ac_pj": (("--e-ac-pj",), Optional[float], "Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    "e_mac_pj": (("--e-mac-pj",), Optional[float], "Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    "energy_model": (("--energy-model",), str, ENERGY_MODEL_HELP),
    "distill": (("--distill",), float, "Every SNN converted from a CNN learns this share of its loss from that CNN's soft targets (knowledge distillation; 0 = off)."),
    "target": (("--target",), str, "Where the nets are going: any | nir (2x2/2 average pools, reset to zero, no initial membrane: a net NIR holds exactly and snntorch and norse run)."),
}
HIDDEN = {"width"}
PARAM = {"root": "data_root"}  # the parameter a field's option fills, where the names differ


def with_recipe(fn: Callable) -> Callable:
    """Gives a command the recipe options (before its --out) and calls it with `recipe=` a
    RecipeConfig built from them: one bundle for every experiment, its defaults the dataclass's."""
    defaults = {f.name: f.default for f in dataclasses.fields(RecipeConfig)}
    defaults["root"] = None  # resolved when the command runs: $FIRECUT_DATA or the cache folder
    defaults["device"] = Device(defaults["device"])
    hints = typing.get_type_hints(fn)
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(fn).parameters.values() if p.name != "recipe"]
    added = [inspect.Parameter(PARAM.get(name, name), inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind,
                               default=typer.Option(defaults[name], *flags, help=text, hidden=name in HIDDEN))
             for name, (flags, kind, text) in RECIPE_OPTIONS.items()]
    at = next((i for i, p in enumerate(own) if p.name == "out"), len(own))
    params = own[:at] + added + own[at:]

    @functools.wraps(fn)
    def run(*args, **kwargs):
        values = {name: kwargs.pop(PARAM.get(name, name)) for name in RECIPE_OPTIONS}
        values["root"] = values["root"] or default_data_root()
        values["device"] = Device(values["device"]).value
        return fn(*args, recipe=RecipeConfig(**values), **kwargs)

    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run
