"""Every knob of a run, as typed dataclasses with units; presets; YAML snapshot and reload.

A run's config is built in three layers, later wins: dataclass defaults -> `--preset` -> flags
the user gave. The result is written to the run folder as config.yaml and stored in checkpoints.
No torch import here: the CLI builds configs before it decides to load anything heavy.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from firecut.errors import FirecutError


def default_data_root() -> str:
    """Where datasets are downloaded/cached: $FIRECUT_DATA, else the user cache folder."""
    if os.environ.get("FIRECUT_DATA"):
        return os.environ["FIRECUT_DATA"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "firecut", "data")


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | tinyimagenet | synthetic | path/to/file.npz
    root: str = field(default_factory=default_data_root)  # download / cache folder
    train_subset: int | None = None  # images, class-balanced; None = all
    test_subset: int | None = None  # images, class-balanced; None = all
    augment: bool = True  # random crop (zero pad 4 px) + horizontal flip, batched on device


@dataclass
class ModelConfig:
    name: str = "squeezenet"  # a registered model (`firecut models`)
    act: str = "relu"  # CNN activation: relu | relu6 | silu | hardswish | clipq
    levels: int = 4  # clipq: quantisation levels L (conversion is exact in expectation at T=L)
    clip_init: float = 4.0  # clipq: initial clip value theta (activation units)
    keep: list[str] | None = None  # Fire modules kept (None = all)
    parent: str | None = None  # checkpoint to inherit every fitting tensor from (pruning)
    width: float = 1.0  # channel width multiplier
    dropout: float = 0.0  # before the classifier, probability
    pool: str = "max"  # squeezenet's pools: max (paper's 3x3/2) | avg (3x3/2) | avg2 (2x2/2, NIR-portable)
    target: str = "any"  # where the net is going: any | nir (TARGETS: fixes what NIR cannot hold)


@dataclass
class SpikingConfig:
    enabled: bool = False  # False: the CNN; True: every activation becomes an LIF neuron
    timesteps: int = 4  # T, steps per image
    beta: float | None = None  # membrane decay per step; None = 1.0 (IF) when converting, 0.9 from scratch
    threshold: float = 1.0  # initial threshold when training from scratch (activation units)
    learn_threshold: bool = True  # one learnable threshold per channel
    surrogate: str = "atan"  # atan | fast_sigmoid | sigmoid (snntorch's maths)
    reset: str = "subtract"  # subtract | zero | none (snntorch's reset mechanisms)
    surrogate_param: float | None = None  # atan alpha / sigmoid slope; None = snntorch's default
    v_init: float = 0.5  # initial membrane potential, as a fraction of the threshold
    percentile: float = 99.9  # threshold balancing of a ReLU CNN: percentile of each layer's activations
    balance_batches: int = 8  # training batches seen by threshold balancing
    init: str | None = None  # CNN checkpoint to convert; None = train the SNN from scratch
    encode_once: bool = True  # compute the layers before the first neuron once and broadcast over T

    def resolved_beta(self) -> float:
        if self.beta is not None:
            return self.beta
        return 1.0 if self.init else 0.9


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128  # images per step
    optimizer: str = "sgd"  # sgd (momentum, nesterov) | adamw
    lr: float = 0.05  # peak learning rate, after linear warm-up, cosine decay to 0 per step
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on conv/linear weights only (not BN, biases, thresholds)
    label_smoothing: float = 0.1
    distill: float = 0.0  # SNN from --init: weight of the CNN teacher's soft targets (training.distill)
    distill_temp: float = 4.0  # distillation temperature tau
    warmup_epochs: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast in training steps: CUDA, and CPUs with native bf16
    channels_last: bool = True  # NHWC memory layout for the model and batches (faster convs)
    compile: bool = False  # train steps through torch.compile (evaluation and counting stay eager)
    eval_batch_size: int = 256  # images per evaluation step


# name -> (e_AC pJ, e_MAC pJ), Horowitz 2014, 45 nm
ENERGY_PRESETS: dict[str, tuple[float, float]] = {
    "45nm-fp32": (0.9, 4.6),  # fp add 0.9; fp mult 3.7 + add 0.9
    "45nm-fp16": (0.4, 1.5),  # fp add 0.4; fp mult 1.1 + add 0.4
    "45nm-int32": (0.1, 3.2),  # int add 0.1; int mult 3.1 + add 0.1
    "45nm-int8": (0.03, 0.23),  # int add 0.03; int mult 0.2 + add 0.03
}
# The matched-precision comparison: a clip-quant CNN has ceil(log2(L+1))-bit activations, so both
# nets are charged as integer hardware with int8 weights would run them, from one table (Horowitz
# 2014, 45 nm): an accumulate is an int8 add, a multiply-accumulate an int8 multiply plus add.
MATCHED = "45nm-int8"


def energy_mj(ac: float, mac: float, e_ac_pj: float, e_mac_pj: float) -> float:
    """The paper's energy model: E [mJ] = (AC e_AC + MAC e_MAC) [pJ] * 1e-9."""
    return (ac * e_ac_pj + mac * e_mac_pj) * 1e-9


ENERGY_MODEL_HELP = ("Energy model: paper (AC/MAC only, as the paper) | hardware (plus neuron updates and "
                     "memory traffic; docs/energy.md) | the path of a YAML file of hardware costs.")
ENERGY_HELP = " | ".join(f"{k} ({a:g}/{m:g} pJ)" for k, (a, m) in ENERGY_PRESETS.items())


def energy_per_op(preset: str = "45nm-fp32", e_ac_pj: float | None = None,
                  e_mac_pj: float | None = None) -> tuple[float, float, str]:
    """(pJ per AC, pJ per MAC, name) of a preset with optional overrides; checked."""
    if preset not in ENERGY_PRESETS:
        raise FirecutError(f"unknown energy preset '{preset}'; choose one of: {', '.join(ENERGY_PRESETS)}")
    for flag, v in (("--e-ac-pj", e_ac_pj), ("--e-mac-pj", e_mac_pj)):
        if v is not None and v < 0:
            raise FirecutError(f"{flag} must be >= 0 (picojoules per operation)")
    ac, mac = ENERGY_PRESETS[preset]
    custom = e_ac_pj is not None or e_mac_pj is not None
    return (ac if e_ac_pj is None else e_ac_pj, mac if e_mac_pj is None else e_mac_pj,
            preset + ("+custom" if custom else ""))


@dataclass
class EnergyConfig:
    preset: str = "45nm-fp32"  # ENERGY_PRESETS
    e_ac_pj: float | None = None  # override: energy of one accumulate, pJ
    e_mac_pj: float | None = None  # override: energy of one multiply-accumulate, pJ
    model: str = "paper"  # paper | hardware | path/to/costs.yaml (energy.hardware)


@dataclass
class RecipeConfig:
    """The recipe every experiment (ablate, search, benchmark) trains each of its runs with: the
    data, the preset and the flags that override it, the energy model. `training.recipe` turns it
    into one RunConfig per step."""
    dataset: str = "cifar10"  # cifar10 | cifar100 | tinyimagenet | path/to/file.npz
    root: str = field(default_factory=default_data_root)  # download / cache folder
    preset: str | None = "quick"  # see PRESETS
    epochs: int | None = None  # CNN epochs (scratch: the SNN's) [default: the preset's]
    finetune_epochs: int | None = None  # SNN fine-tuning epochs [default: the preset's]
    timesteps: int | None = None  # T [default: the preset's]
    batch_size: int | None = None  # images per step [default: the preset's]
    train_subset: int | None = None  # images, class-balanced; None = all
    test_subset: int | None = None  # images, class-balanced; None = all
    width: float = 1.0  # channel width multiplier of every model (tests)
    device: str = "auto"  # auto | cpu | cuda
    energy_preset: str = "45nm-fp32"  # energy per op (ENERGY_PRESETS)
    e_ac_pj: float | None = None  # override: pJ per accumulate
    e_mac_pj: float | None = None  # override: pJ per multiply-accumulate
    energy_model: str = "paper"  # paper | hardware | path/to/costs.yaml
    distill: float = 0.0  # every converted SNN learns this share of its loss from its CNN (train.distill)
    target: str = "any"  # any | nir: every net built for that target (config.TARGETS)


def flat_settings(settings: Any) -> dict[str, Any]:
    """An experiment's settings as one flat mapping (its recipe's fields beside its own), the form
    OUT/*.yaml pins them in."""
    d = dataclasses.asdict(settings)
    return {**d.pop("recipe"), **d}


def flat_defaults(settings: Any) -> dict[str, Any]:
    """The defaults of flat_settings' keys that have one (the data root's depends on the machine)."""
    out = {f.name: f.default for f in fields(RecipeConfig) if f.default is not dataclasses.MISSING}
    out.update({f.name: f.default for f in fields(settings) if f.default is not dataclasses.MISSING})
    return out


def settings_diff(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = (),
                  defaults: dict[str, Any] | None = None) -> list[str]:
    """The keys (sorted) whose values differ between stored flat settings `old` and the current
    `new`, less `ignore`; a key `old` lacks counts as its value in `defaults` (a setting added
    since it was stored). Shared by the ablation/benchmark pins and the search's study check."""
    new = {k: v for k, v in new.items() if k not in ignore}
    old = {**{k: v for k, v in (defaults or {}).items() if k in new},
           **{k: v for k, v in old.items() if k not in ignore}}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    spiking: SpikingConfig = field(default_factory=SpikingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        parts = {}
        for f in fields(cls):
            sub = f.default_factory  # type: ignore[misc]
            known = {g.name for g in fields(sub())}
            given = d.get(f.name) or {}
            if not isinstance(given, dict):
                raise FirecutError(f"config section '{f.name}' must be a mapping of keys to values")
            unknown = set(given) - known
            if unknown:
                raise FirecutError(f"unknown config key(s) {sorted(unknown)} in section '{f.name}'")
            parts[f.name] = sub(**given)
        if parts["data"].root is None:  # a checkpoint's config records no data root
            parts["data"].root = default_data_root()
        return cls(**parts)

    def mode(self) -> str:
        """'cnn', 'snn' (from a trained net: converted or pruned) or 'snn-scratch': the key
        presets are chosen by."""
        if not self.spiking.enabled:
            return "cnn"
        return "snn" if (self.spiking.init or self.model.parent) else "snn-scratch"


# Presets: overrides per mode, as dotted keys. `quick` is sized for a 2-core CPU and the
# CIFAR-10 subset (CNN then SNN in under 10 minutes); `cpu` for a 2-core CPU and the full
# CIFAR-10 training set (CNN then SNN in about an hour; BENCHMARKS.md "Full CIFAR-10 on a CPU");
# `paper` is the GPU recipe. A converted or pruned net ('snn') keeps its parent's architecture,
# so only the 'cnn' and 'snn-scratch' entries set model keys.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "cnn": {"train.epochs": 8, "train.lr": 0.05, "model.act": "clipq", "model.levels": 4,
                "train.batch_size": 64},
        "snn": {"train.epochs": 1, "train.lr": 0.005, "train.warmup_epochs": 0.0,
                "train.batch_size": 64, "spiking.timesteps": 4},
        "snn-scratch": {"train.epochs": 2, "train.lr": 0.05, "train.batch_size": 64,
                        "spiking.timesteps": 4},
    },
    "cpu": {
        # CNN: batch 128 (0.93 ms/image against 1.23 at 64 on 2 cores, bf16 + channels_last),
        # lr 0.1 (0.05 per 64 images, as quick); 4-level clip-quant so that T = L = 4 converts.
        # Max pools, the paper's: at the quick budget average pools convert with less loss but
        # lose more in the CNN (SNN 0.461 against 0.527; BENCHMARKS.md).
        "cnn": {"train.epochs": 30, "train.lr": 0.1, "model.act": "clipq", "model.levels": 4,
                "train.batch_size": 128},
        "snn": {"train.epochs": 8, "train.lr": 0.005, "train.warmup_epochs": 0.0,
                "train.batch_size": 64, "spiking.timesteps": 4},
        "snn-scratch": {"train.epochs": 8, "train.lr": 0.05, "train.batch_size": 64,
                        "spiking.timesteps": 4},
    },
    "paper": {
        "cnn": {"train.epochs": 200, "train.lr": 0.05, "model.act": "clipq", "model.levels": 8,
                "train.batch_size": 128},
        "snn": {"train.epochs": 30, "train.lr": 0.005, "train.warmup_epochs": 0.0,
                "train.batch_size": 128, "spiking.timesteps": 8},
        "snn-scratch": {"train.epochs": 200, "train.lr": 0.05, "train.batch_size": 128,
                        "spiking.timesteps": 8},
    },
}


PRESET_HELP = ("quick (2-core CPU, data subsets, minutes) | cpu (2-core CPU, full CIFAR-10, about "
               "an hour) | paper (GPU recipe)")


# Deployment targets: SECTION.KEY -> (value, the flag that sets it, why). A target's values are set
# after the preset and before the flags; validate() refuses a run whose settings leave them.
TARGETS: dict[str, dict[str, tuple[Any, str, str]]] = {
    "any": {},
    "nir": {  # a net NIR holds exactly, in a form snntorch and norse run (export/to_nir.py)
        "model.pool": ("avg2", "--pool avg2", "NIR has no max-pool, and its consumers map 2x2/2 "
                       "average pools only"),
        "spiking.reset": ("zero", "--reset zero", "NIR neurons reset to a fixed potential"),
        "spiking.v_init": (0.0, "--set spiking.v_init=0", "NIR neurons start at rest"),
    },
}


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise FirecutError(f"unknown --target '{target}'; choose one of: {', '.join(TARGETS)}")


def apply_target(cfg: RunConfig, target: str) -> RunConfig:
    """Records `target` in the model config and sets what it fixes (TARGETS)."""
    check_target(target)
    cfg.model.target = target
    for key, (value, _, _) in TARGETS[target].items():
        set_dotted(cfg, key, value)
    return cfg


def target_problems(cfg: RunConfig) -> list[str]:
    """How `cfg` leaves what its model's target fixes, one line each (empty: it keeps to it)."""
    check_target(cfg.model.target)
    out = []
    for key, (value, flag, why) in TARGETS[cfg.model.target].items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) != value:
            out.append(f"--target {cfg.model.target} needs {flag} ({why}), not {key} = "
                       f"{getattr(getattr(cfg, section), name)!r}")
    return out


def set_dotted(cfg: RunConfig, key: str, value: Any) -> None:
    section, name = key.split(".")
    sub = getattr(cfg, section)
    if name not in {f.name for f in fields(sub)}:
        raise FirecutError(f"unknown config key '{key}'")
    setattr(sub, name, value)


def config_keys() -> list[str]:
    """Every 'section.key' of a RunConfig (what `--set` reaches)."""
    return [f"{f.name}.{g.name}" for f in fields(RunConfig) for g in fields(f.default_factory())]  # type: ignore[misc]


def set_from_string(cfg: RunConfig, assignment: str) -> None:
    """`section.key=value` (`--set`), the value read as YAML (4, 0.1, true, null, [fire2, fire9])
    and checked against the field's declared type; raises FirecutError naming the problem."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or key not in config_keys():
        raise FirecutError(f"--set {assignment!r}: expected SECTION.KEY=VALUE with a key of "
                           f"config.yaml, one of: {', '.join(config_keys())}")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise FirecutError(f"--set {assignment!r}: the value is not valid YAML") from None
    section, name = key.split(".")
    ftype = next(str(g.type) for g in fields(getattr(cfg, section)) if g.name == name)  # e.g. "int | None"
    members = [m.strip() for m in ftype.split("|")]  # "list[str] | None" -> list[str], None
    takes = [m.split("[")[0] for m in members]
    if value is None and "None" not in takes:
        raise FirecutError(f"--set {key}: needs a value ({ftype})")
    if isinstance(value, bool):
        ok = "bool" in takes
    elif isinstance(value, int) and ("int" in takes or "float" in takes):
        ok, value = True, (value if "int" in takes else float(value))
    elif isinstance(value, float):
        ok = "float" in takes
    elif isinstance(value, (str, int)) and "str" in takes:
        ok, value = True, str(value)
    else:
        ok = value is None or (isinstance(value, list) and "list" in takes)
    if not ok:
        raise FirecutError(f"--set {key}: {value!r} is a {type(value).__name__}, but {key} takes "
                           f"{ftype}")
    set_dotted(cfg, key, value)


def apply_preset(cfg: RunConfig, preset: str | None, mode: str | None = None) -> RunConfig:
    """Applies the preset's overrides for `mode` (default: the config's own, `cfg.mode()`)."""
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise FirecutError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
    for key, value in PRESETS[preset][mode or cfg.mode()].items():
        set_dotted(cfg, key, value)
    return cfg


def validate(cfg: RunConfig) -> RunConfig:
    """Checks the values no registry checks; raises FirecutError naming the flag."""
    checks = [
        (cfg.spiking.timesteps >= 1, "--timesteps must be >= 1 (a spiking net needs at least one step)"),
        (cfg.train.epochs >= 1 or (cfg.train.epochs == 0 and cfg.mode() == "snn"),
         "--epochs must be >= 1 (0 is allowed with --init: convert and evaluate, no fine-tuning)"),
        (cfg.train.batch_size >= 1, "--batch-size must be >= 1"),
        (cfg.train.lr > 0, "--lr must be > 0"),
        (cfg.spiking.beta is None or 0.0 <= cfg.spiking.beta <= 1.0, "--beta must be in [0, 1]"),
        (0.0 <= cfg.spiking.v_init < 1.0, "spiking.v_init must be in [0, 1) (fraction of threshold)"),
        (0.0 < cfg.spiking.percentile <= 100.0, "spiking.percentile must be in (0, 100]"),
        (cfg.model.levels >= 1, "model.levels must be >= 1"),
        (0.0 <= cfg.train.distill <= 1.0, "--distill (train.distill) must be in [0, 1] (the teacher's share of the loss)"),
        (cfg.train.distill == 0.0 or (cfg.spiking.enabled and cfg.spiking.init),
         "--distill (train.distill) needs --init: the teacher is the CNN the SNN is converted from"),
        (cfg.train.distill_temp > 0, "train.distill_temp must be > 0"),
        (cfg.train.optimizer in ("sgd", "adamw"), "--optimizer must be sgd or adamw"),
        (cfg.train.device in ("auto", "cpu", "cuda"), "--device must be auto, cpu or cuda"),
        (cfg.data.train_subset is None or cfg.data.train_subset > 0, "--train-subset must be > 0"),
        (cfg.data.test_subset is None or cfg.data.test_subset > 0, "--test-subset must be > 0"),
        (not (cfg.spiking.init and not cfg.spiking.enabled), "--init converts a CNN into an SNN: drop --cnn"),
        (not (cfg.spiking.init and cfg.model.parent),
         "give --init (convert a CNN) or --parent (prune a trained net), not both"),
    ]
    for ok, message in checks:
        if not ok:
            raise FirecutError(message)
    problems = target_problems(cfg)
    if problems:
        raise FirecutError("; ".join(problems))
    return cfg


def save_yaml(cfg: RunConfig, path: Path) -> None:
    from firecut.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_yaml(path: Path) -> RunConfig:
    try:
        d = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FirecutError(f"{path}: cannot read the config ({e.__class__.__name__})") from None
    if not isinstance(d, dict):
        raise FirecutError(f"{path}: not a firecut config (expected a mapping)")
    return RunConfig.from_dict(d)


def child_of(mc: ModelConfig, sc: SpikingConfig, parent: str,
             keep: list[str] | None = None) -> tuple[ModelConfig, SpikingConfig]:
    """Configs of a network pruned from `parent` (whose configs are mc, sc): the parent's
    architecture and neurons, `keep` modules, no conversion (its beta fixed, not re-derived)."""
    child_mc = dataclasses.replace(mc, parent=parent, keep=list(keep) if keep is not None else mc.keep)
    return child_mc, dataclasses.replace(sc, init=None, beta=sc.resolved_beta())
