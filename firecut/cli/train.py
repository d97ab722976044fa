"""`firecut train`, `evaluate` and `models`: one run, one checkpoint, the registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import Device, MODEL_DEFAULTS, TRAIN_DEFAULTS, command, print_json, running
from firecut.config import ENERGY_HELP, ENERGY_MODEL_HELP, PRESET_HELP
from firecut.errors import FirecutError


def _default_out(model: str, dataset: str, mode: str, timesteps: int, seed: int) -> str:
    from firecut.data import dataset_name

    tag = f"{mode}-T{timesteps}" if mode != "cnn" else "cnn"
    return str(Path("runs") / f"{model}-{dataset_name(dataset)}-{tag}-s{seed}")


@command(epilog="Example: firecut train --preset quick --dataset cifar10 --cnn --out runs/cnn "
                    "&& firecut train --preset quick --dataset cifar10 --init runs/cnn/best.pt")
def train(
    config: Optional[str] = typer.Option(None, help="Replay a run: start from its config.yaml; the preset and flags given, then --set, change it \\[default: none]."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE: any field of config.yaml (repeatable), e.g. --set train.label_smoothing=0 \\[default: none]."),
    model: Optional[str] = typer.Option(None, help=f"Registered model (see `firecut models`) \\[default: {MODEL_DEFAULTS.name}]."),
    dataset: Optional[str] = typer.Option(None, help="cifar10 | cifar100 | tinyimagenet | synthetic | PATH.npz \\[default: cifar10]."),
    snn: Optional[bool] = typer.Option(None, "--snn/--cnn", help="Spiking net or CNN \\[default: SNN if --init is given, else CNN]."),
    init: Optional[str] = typer.Option(None, help="CNN checkpoint to convert (threshold balancing) and fine-tune as an SNN \\[default: none]."),
    preset: Optional[str] = typer.Option(None, help=f"{PRESET_HELP} | none (the config defaults); flags given override it \\[default: quick; none with --config]."),
    epochs: Optional[int] = typer.Option(None, help=f"Training epochs \\[default: the preset's, else {TRAIN_DEFAULTS.epochs}]."),
    timesteps: Optional[int] = typer.Option(None, help="SNN time steps T \\[default: 4]."),
    batch_size: Optional[int] = typer.Option(None, help=f"Images per training step \\[default: the preset's, else {TRAIN_DEFAULTS.batch_size}]."),
    lr: Optional[float] = typer.Option(None, help=f"Peak learning rate (cosine schedule) \\[default: the preset's, else {TRAIN_DEFAULTS.lr}]."),
    optimizer: Optional[str] = typer.Option(None, help=f"sgd | adamw \\[default: {TRAIN_DEFAULTS.optimizer}]."),
    distill: Optional[float] = typer.Option(None, help="With --init: the share of the loss taken from the CNN's soft targets (knowledge distillation, temperature train.distill_temp; BENCHMARKS.md has what it gained) \\[default: 0, off]."),
    act: Optional[str] = typer.Option(None, help=f"CNN activation: relu | relu6 | silu | hardswish | clipq \\[default: the preset's, else {MODEL_DEFAULTS.act}]."),
    target: Optional[str] = typer.Option(None, help="Where the net is going: any | nir (sets --pool avg2, --reset zero and spiking.v_init=0: a net NIR holds exactly, which snntorch and norse run; recorded in the checkpoint, and a flag that contradicts it is refused) \\[default: the --init CNN's, else any]."),
    pool: Optional[str] = typer.Option(None, help="SqueezeNet's pools: max (the paper's 3x3/2) | avg (3x3/2 average: linear, adds no conversion error, but a weaker CNN) | avg2 (2x2/2 average: the pool every NIR consumer reads). A converted or pruned net keeps its parent's \\[default: max]."),
    beta: Optional[float] = typer.Option(None, help="LIF membrane decay per step \\[default: 1.0 (IF) when converting, 0.9 from scratch]."),
    surrogate: Optional[str] = typer.Option(None, help="Surrogate gradient: atan | fast_sigmoid | sigmoid \\[default: atan]."),
    reset: Optional[str] = typer.Option(None, help="LIF reset: subtract | zero | none \\[default: subtract]."),
    keep: Optional[str] = typer.Option(None, help="Fire modules to keep, comma-separated \\[default: all]."),
    parent: Optional[str] = typer.Option(None, help="Prune this trained checkpoint to --keep: inherit every tensor that fits, fine-tune \\[default: none]."),
    train_subset: Optional[int] = typer.Option(None, help="Train on N class-balanced images \\[default: all]."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on N class-balanced test images \\[default: all]."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    seed: Optional[int] = typer.Option(None, help="Random seed \\[default: 0]."),
    device: Optional[Device] = typer.Option(None, help="Training device \\[default: auto]."),
    energy_preset: Optional[str] = typer.Option(None, help=f"Energy per op (e_AC/e_MAC): {ENERGY_HELP} \\[default: 45nm-fp32]."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    energy_model: Optional[str] = typer.Option(None, help=f"{ENERGY_MODEL_HELP} \\[default: paper]."),
    out: Optional[str] = typer.Option(None, help="Run folder \\[default: runs/MODEL-DATASET-MODE-sSEED]."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Resume the run in --out (default), or discard it and start over."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar \\[default: a bar on stderr]."),
    compile: bool = typer.Option(False, "--compile", help="Train through torch.compile (worth it on CUDA; the first steps compile) \\[default: eager]."),
):
    """Train one CNN or SNN, evaluate it on the test split and count its AC/MAC/energy.

    Writes OUT/summary.json (acc, f1, ac, mac, params, energy_mj, firing_rate, layers, ...) and
    prints it. Re-running the same command resumes an interrupted run.
    """
    from firecut.config import RunConfig, apply_preset, load_yaml, set_from_string, validate

    cfg = load_yaml(config) if config else RunConfig()
    if init is not None or not config:
        cfg.spiking.init = init
        cfg.spiking.enabled = init is not None
    if snn is not None:
        cfg.spiking.enabled = snn
    if model is not None:
        cfg.model.name = model
    if parent:  # a pruned child starts as its parent's architecture and neurons
        _adopt_parent(cfg, parent, snn)
    if preset is None:  # as every other command; a replayed config is taken as saved
        preset = None if config else "quick"
    apply_preset(cfg, None if preset == "none" else preset)
    target = _target_of(cfg, target, init)
    if target is not None:
        from firecut.config import apply_target

        apply_target(cfg, target)
    given = {
        "data.dataset": dataset, "data.root": data_root, "data.train_subset": train_subset,
        "data.test_subset": test_subset, "train.epochs": epochs, "spiking.timesteps": timesteps,
        "train.batch_size": batch_size, "train.lr": lr, "train.optimizer": optimizer,
        "train.distill": distill,
        "model.act": act, "model.pool": pool, "spiking.beta": beta, "spiking.surrogate": surrogate,
        "spiking.reset": reset, "train.seed": seed, "train.device": device.value if device else None,
        "energy.preset": energy_preset, "energy.e_ac_pj": e_ac_pj, "energy.e_mac_pj": e_mac_pj,
        "energy.model": energy_model,
        "model.keep": [k.strip() for k in keep.split(",") if k.strip()] if keep is not None else None,
        "model.parent": parent, "train.compile": compile or None,
    }
    from firecut.config import set_dotted

    for key, value in given.items():
        if value is not None:
            set_dotted(cfg, key, value)
    for assignment in set_ or []:
        set_from_string(cfg, assignment)
    validate(cfg)
    _check_names(cfg)
    from firecut.training.loop import fit

    out = out or _default_out(cfg.model.name, cfg.data.dataset, cfg.mode(), cfg.spiking.timesteps,
                              cfg.train.seed)
    with running(out, bar=not quiet) as progress:
        summary = fit(cfg, out, restart=not resume, log=progress.log, on_step=progress.on_step)
    print_json(summary)
    print(f"wrote {Path(out) / 'summary.json'}", file=sys.stderr)


def _target_of(cfg, target: Optional[str], init: Optional[str]) -> Optional[str]:
    """The run's target: given, else the --init CNN's (a converted net keeps its CNN's). A CNN
    built for another target than the one given is refused: its pools are already what they are."""
    if not init or not cfg.spiking.enabled or not Path(init).is_file():
        return target  # no conversion, or one that validate() and fit refuse in their own words
    from firecut.checkpoint import configs_of, load_checkpoint

    cnn_target = configs_of(load_checkpoint(init))[0].target
    if target is not None and target != "any" and cnn_target != target:
        raise FirecutError(f"--target {target}: --init {init} was not trained for it (its target is "
                           f"{cnn_target}); train the CNN with --target {target} first")
    return target if target is not None else (cnn_target if cnn_target != "any" else None)


def _adopt_parent(cfg, parent: str, snn: Optional[bool]) -> None:
    from firecut.checkpoint import configs_of, load_checkpoint
    from firecut.config import child_of

    pmc, psc = configs_of(load_checkpoint(parent))
    if snn is not None and snn != psc.enabled:
        raise FirecutError(f"--parent {parent} is a {'SNN' if psc.enabled else 'CNN'}; a pruned child "
                           "keeps its parent's kind (drop --snn/--cnn)")
    cfg.model, cfg.spiking = child_of(pmc, psc, parent)


def _check_names(cfg) -> None:
    """Registries checked up front, before any data is loaded."""
    from firecut.activations import make_act
    from firecut.data import DATASETS
    from firecut.energy import make_energy
    from firecut.network import check_pool
    from firecut.spiking import RESETS, surrogate

    check_pool(cfg.model)
    make_act(cfg.model.act)
    surrogate(cfg.spiking.surrogate)
    if cfg.spiking.reset not in RESETS:
        raise FirecutError(f"unknown reset '{cfg.spiking.reset}'; choose one of: {', '.join(RESETS)}")
    make_energy(cfg.energy.preset, cfg.energy.e_ac_pj, cfg.energy.e_mac_pj, cfg.energy.model)
    d = cfg.data.dataset
    if d not in DATASETS and not (d.endswith(".npz") or Path(d).exists()):
        raise FirecutError(f"unknown dataset '{d}'; choose one of: {', '.join(DATASETS)}, "
                           "or give the path of an .npz file")
    if cfg.model.keep is not None and cfg.model.name.startswith("squeezenet"):
        from firecut.models.squeezenet import check_keep

        check_keep(cfg.model.keep)


@command(epilog="Example: firecut evaluate runs/snn/best.pt --dataset cifar10")
def evaluate(
    checkpoint: str = typer.Argument(..., help="A best.pt/last.pt written by `firecut train`."),
    dataset: str = typer.Option(..., help="Dataset whose test split to evaluate on."),
    timesteps: Optional[int] = typer.Option(None, help="Run the SNN for T steps \\[default: as trained]."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on N class-balanced test images \\[default: all]."),
    batch_size: int = typer.Option(256, help="Images per evaluation step."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    device: Device = typer.Option(Device.auto, help="Evaluation device."),
    energy_preset: str = typer.Option("45nm-fp32", help=f"Energy per op (e_AC/e_MAC): {ENERGY_HELP}."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    energy_model: str = typer.Option("paper", help=ENERGY_MODEL_HELP),
):
    """Evaluate a checkpoint on a test split; print the summary.json layout to stdout."""
    from firecut.config import default_data_root
    from firecut.energy import make_energy
    from firecut.training.loop import evaluate_checkpoint

    if timesteps is not None and timesteps < 1:
        raise FirecutError("--timesteps must be >= 1 (a spiking net needs at least one step)")
    summary = evaluate_checkpoint(checkpoint, dataset, data_root or default_data_root(),
                                  timesteps=timesteps, test_subset=test_subset,
                                  batch_size=batch_size, device=device.value,
                                  energy=make_energy(energy_preset, e_ac_pj, e_mac_pj, energy_model))
    print_json(summary)


@command(epilog="Example: firecut models --dataset cifar100")
def models(
    dataset: str = typer.Option("cifar10", help="Dataset whose class count and image size to use."),
):
    """List registered models with parameter counts (CNN, and SNN with per-channel thresholds)."""
    from firecut.config import ModelConfig, SpikingConfig
    from firecut.data import num_classes_of
    from firecut.models import describe, list_models
    from firecut.network import build_network, count_params

    size = 64 if dataset == "tinyimagenet" else 32
    k = num_classes_of(dataset)
    print(f"{'model':<14} {'CNN params':>12} {'SNN params':>12}  description")
    for name in list_models():
        mc = ModelConfig(name=name)
        cnn = count_params(build_network(mc, SpikingConfig(enabled=False), k, size))
        snn = count_params(build_network(mc, SpikingConfig(enabled=True), k, size))
        print(f"{name:<14} {cnn:>12,} {snn:>12,}  {describe(name)}")
