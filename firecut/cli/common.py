"""What the commands share: the device choice, Ctrl-C handling, JSON output, the defaults quoted in
help texts, and `command`, which marks a function as a command for `firecut.cli.app` to register."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from typing import Callable

import typer

from firecut.config import ModelConfig, TrainConfig

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


def print_json(d) -> None:
    sys.stdout.write(json.dumps(d, indent=2) + "\n")
