"""The `firecut` command line: a thin shell over the library.

Heavy imports (torch, torchvision, optuna) happen inside commands, so `firecut --help` stays fast.
Results go to stdout; progress and diagnostics to stderr. An error the user can fix is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from firecut.config import ENERGY_HELP, PRESET_HELP, ModelConfig, TrainConfig
from firecut.errors import FirecutError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Spiking SqueezeNet: train CNNs and SNNs, prune Fire modules, count AC/MAC and energy.",
    epilog="Example: firecut train --preset quick --dataset cifar10 --cnn --out runs/cnn",
)


_TRAIN, _MODEL = TrainConfig(), ModelConfig()  # dataclass defaults, quoted in help texts


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


@contextmanager
def _resumable(out: str):
    """Ctrl-C during a long run: say where the finished work is and how to resume (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"firecut: interrupted; finished work is saved in {out}: re-run the same command "
              "to resume", file=sys.stderr)
        raise typer.Exit(130) from None


def _default_out(model: str, dataset: str, mode: str, timesteps: int, seed: int) -> str:
    from firecut.data import dataset_name

    tag = f"{mode}-T{timesteps}" if mode != "cnn" else "cnn"
    return str(Path("runs") / f"{model}-{dataset_name(dataset)}-{tag}-s{seed}")


@app.command(epilog="Example: firecut train --preset quick --dataset cifar10 --cnn --out runs/cnn "
                    "&& firecut train --preset quick --dataset cifar10 --init runs/cnn/best.pt")
def train(
    config: Optional[str] = typer.Option(None, help="Replay a run: start from its config.yaml; the preset and flags given, then --set, change it \\[default: none]."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="SECTION.KEY=VALUE: any field of config.yaml (repeatable), e.g. --set train.label_smoothing=0 \\[default: none]."),
    model: Optional[str] = typer.Option(None, help=f"Registered model (see `firecut models`) \\[default: {_MODEL.name}]."),
    dataset: Optional[str] = typer.Option(None, help="cifar10 | cifar100 | tinyimagenet | synthetic | PATH.npz \\[default: cifar10]."),
    snn: Optional[bool] = typer.Option(None, "--snn/--cnn", help="Spiking net or CNN \\[default: SNN if --init is given, else CNN]."),
    init: Optional[str] = typer.Option(None, help="CNN checkpoint to convert (threshold balancing) and fine-tune as an SNN \\[default: none]."),
    preset: Optional[str] = typer.Option(None, help=f"{PRESET_HELP} | none (the config defaults); flags given override it \\[default: quick; none with --config]."),
    epochs: Optional[int] = typer.Option(None, help=f"Training epochs \\[default: the preset's, else {_TRAIN.epochs}]."),
    timesteps: Optional[int] = typer.Option(None, help="SNN time steps T \\[default: 4]."),
    batch_size: Optional[int] = typer.Option(None, help=f"Images per training step \\[default: the preset's, else {_TRAIN.batch_size}]."),
    lr: Optional[float] = typer.Option(None, help=f"Peak learning rate (cosine schedule) \\[default: the preset's, else {_TRAIN.lr}]."),
    optimizer: Optional[str] = typer.Option(None, help=f"sgd | adamw \\[default: {_TRAIN.optimizer}]."),
    act: Optional[str] = typer.Option(None, help=f"CNN activation: relu | relu6 | silu | hardswish | clipq \\[default: the preset's, else {_MODEL.act}]."),
    pool: Optional[str] = typer.Option(None, help="SqueezeNet's 3x3/2 pools: max (the paper's) | avg (linear: adds no conversion error, but a weaker CNN). A converted or pruned net keeps its parent's \\[default: max]."),
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
    out: Optional[str] = typer.Option(None, help="Run folder \\[default: runs/MODEL-DATASET-MODE-s SEED]."),
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
    given = {
        "data.dataset": dataset, "data.root": data_root, "data.train_subset": train_subset,
        "data.test_subset": test_subset, "train.epochs": epochs, "spiking.timesteps": timesteps,
        "train.batch_size": batch_size, "train.lr": lr, "train.optimizer": optimizer,
        "model.act": act, "model.pool": pool, "spiking.beta": beta, "spiking.surrogate": surrogate,
        "spiking.reset": reset, "train.seed": seed, "train.device": device.value if device else None,
        "energy.preset": energy_preset, "energy.e_ac_pj": e_ac_pj, "energy.e_mac_pj": e_mac_pj,
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
    from firecut.train import fit

    out = out or _default_out(cfg.model.name, cfg.data.dataset, cfg.mode(), cfg.spiking.timesteps,
                              cfg.train.seed)
    with _resumable(out):
        summary = fit(cfg, out, restart=not resume, show_progress=not quiet)
    _print_json(summary)
    print(f"wrote {Path(out) / 'summary.json'}", file=sys.stderr)


def _version(value: bool) -> None:
    if value:
        import firecut

        print(f"firecut {firecut.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Spiking SqueezeNet: train CNNs and SNNs, prune Fire modules, count AC/MAC and energy."""


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
    from firecut.energy import EnergyModel
    from firecut.network import check_pool
    from firecut.spiking import RESETS, surrogate

    check_pool(cfg.model)
    make_act(cfg.model.act)
    surrogate(cfg.spiking.surrogate)
    if cfg.spiking.reset not in RESETS:
        raise FirecutError(f"unknown reset '{cfg.spiking.reset}'; choose one of: {', '.join(RESETS)}")
    EnergyModel.from_config(cfg.energy.preset, cfg.energy.e_ac_pj, cfg.energy.e_mac_pj)
    d = cfg.data.dataset
    if d not in DATASETS and not (d.endswith(".npz") or Path(d).exists()):
        raise FirecutError(f"unknown dataset '{d}'; choose one of: {', '.join(DATASETS)}, "
                           "or give the path of an .npz file")
    if cfg.model.keep is not None and cfg.model.name.startswith("squeezenet"):
        from firecut.models.squeezenet import check_keep

        check_keep(cfg.model.keep)


def _print_json(d) -> None:
    sys.stdout.write(json.dumps(d, indent=2) + "\n")


@app.command(epilog="Example: firecut evaluate runs/snn/best.pt --dataset cifar10")
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
):
    """Evaluate a checkpoint on a test split; print the summary.json layout to stdout."""
    from firecut.config import default_data_root
    from firecut.energy import EnergyModel
    from firecut.train import evaluate_checkpoint

    if timesteps is not None and timesteps < 1:
        raise FirecutError("--timesteps must be >= 1 (a spiking net needs at least one step)")
    summary = evaluate_checkpoint(checkpoint, dataset, data_root or default_data_root(),
                                  timesteps=timesteps, test_subset=test_subset,
                                  batch_size=batch_size, device=device.value,
                                  energy=EnergyModel.from_config(energy_preset, e_ac_pj, e_mac_pj))
    _print_json(summary)


@app.command(epilog="Example: firecut models --dataset cifar100")
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


@app.command(epilog="Example: firecut ablate --preset quick --dataset ../shared/data/cifar10-sub.npz --out runs/ablate")
def ablate(
    dataset: str = typer.Option("cifar10", help="cifar10 | cifar100 | tinyimagenet | PATH.npz"),
    schedules: str = typer.Option("paper.yaml", help="Schedule file (a bare name: a shipped one; see `firecut schedules list`)."),
    base: Optional[str] = typer.Option(None, help="A trained unpruned SNN checkpoint (prune-cnn: the CNN's) \\[default: train one here]."),
    seeds: int = typer.Option(1, help="Fine-tunes per schedule (mean ± std in the table)."),
    epochs: Optional[int] = typer.Option(None, help="CNN epochs: the base's, or each schedule's with --retrain recipe (the SNN's with scratch) \\[default: the preset's]."),
    finetune_epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs per schedule (and for the base SNN) \\[default: the preset's]."),
    retrain: str = typer.Option("finetune", help="How each schedule is re-trained: finetune (prune the base SNN, fine-tune) | recipe (its own CNN, converted, fine-tuned) | prune-cnn (prune the base CNN, fine-tune it, convert, fine-tune) | scratch (an SNN from scratch)."),
    cnn_finetune_epochs: Optional[int] = typer.Option(None, help="prune-cnn: CNN fine-tuning epochs per schedule \\[default: the CNN epochs // 6, at least 1]."),
    from_scratch: bool = typer.Option(False, "--from-scratch", hidden=True, help="Old spelling of --retrain scratch."),
    timesteps: Optional[int] = typer.Option(None, help="SNN time steps T \\[default: the preset's]."),
    preset: str = typer.Option("quick", help=f"{PRESET_HELP}."),
    batch_size: Optional[int] = typer.Option(None, help="Images per training step \\[default: the preset's]."),
    train_subset: Optional[int] = typer.Option(None, help="Train on N class-balanced images \\[default: all]."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on N class-balanced test images \\[default: all]."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    device: Device = typer.Option(Device.auto, help="Training device \\[default: auto]."),
    energy_preset: str = typer.Option("45nm-fp32", help=f"Energy per op (e_AC/e_MAC): {ENERGY_HELP}."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/ablate-DATASET]."),
):
    """The Fire-module ablation (Table 3): re-train each schedule (--retrain), evaluate, count.

    Writes OUT/table.md, table.csv, table.json and tradeoff.png and prints the table. Re-running
    the same command resumes: every finished schedule is kept.
    """
    from firecut.ablate import AblateConfig, run_ablation, table_markdown
    from firecut.config import default_data_root
    from firecut.data import dataset_name

    ac = AblateConfig(dataset=dataset, root=data_root or default_data_root(), schedules=schedules,
                      base=base, seeds=seeds, epochs=epochs, finetune_epochs=finetune_epochs,
                      retrain="scratch" if from_scratch else retrain, cnn_finetune_epochs=cnn_finetune_epochs,
                      timesteps=timesteps, preset=preset,
                      batch_size=batch_size, train_subset=train_subset, test_subset=test_subset,
                      device=device.value, energy_preset=energy_preset, e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj)
    out = out or str(Path("runs") / f"ablate-{dataset_name(dataset)}")
    with _resumable(out):
        rows = run_ablation(ac, out, log=lambda m: print(m, file=sys.stderr))
    sys.stdout.write(table_markdown(rows))
    print(f"wrote {out}/table.md, table.csv, table.json, tradeoff.png", file=sys.stderr)


class SearchObjective(str, Enum):
    pareto = "pareto"
    scalar = "scalar"


@app.command(epilog="Example: firecut search --trials 12 --preset quick --dataset ../shared/data/cifar10-sub.npz "
                    "--base runs/ablate/base-snn/last.pt")
def search(
    dataset: str = typer.Option("cifar10", help="cifar10 | cifar100 | tinyimagenet | PATH.npz"),
    trials: int = typer.Option(50, help="optuna: masks to train in the study, all workers together; re-running continues to this total."),
    objective: SearchObjective = typer.Option(SearchObjective.pareto, help="pareto: NSGA-II on (acc, energy) | scalar: TPE on acc - lambda x relative energy."),
    lam: float = typer.Option(0.2, "--lambda", help="scalar: accuracy given up per unit of energy relative to the base."),
    max_energy_mj: Optional[float] = typer.Option(None, help="best.pt: the most accurate mask at or under this energy per image \\[default: the front's knee]."),
    base: Optional[str] = typer.Option(None, help="A trained unpruned SNN checkpoint \\[default: train one in OUT]. Give the same file to every worker."),
    storage: Optional[str] = typer.Option(None, envvar="FIRECUT_STORAGE", show_envvar=True, help="Optuna storage (keep a password off the command line: set $FIRECUT_STORAGE): sqlite:///F, postgresql://U:P@H/DB, mysql://..., journal:FILE \\[default: sqlite:///OUT/study.db]."),
    study: str = typer.Option("firecut-search", help="Study name within the storage."),
    seed: int = typer.Option(0, help="Sampler seed and every mask's fine-tuning seed."),
    preset: str = typer.Option("quick", help=f"{PRESET_HELP}."),
    epochs: Optional[int] = typer.Option(None, help="Base CNN epochs (when the base is trained here) \\[default: the preset's]."),
    finetune_epochs: Optional[int] = typer.Option(None, help="Fine-tuning epochs per mask (and for the base SNN) \\[default: the preset's]."),
    timesteps: Optional[int] = typer.Option(None, help="SNN time steps T \\[default: the preset's]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per training step \\[default: the preset's]."),
    train_subset: Optional[int] = typer.Option(None, help="Train on N class-balanced images \\[default: all]."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on N class-balanced test images \\[default: all]."),
    saliency_masks: int = typer.Option(3, help="Seed masks from the base's saliency ranking (drop the 1..K least salient modules)."),
    width: float = typer.Option(1.0, hidden=True, help="Channel width multiplier (tests)."),
    settle_s: float = typer.Option(1.0, hidden=True, help="Seconds between claiming a mask and checking for rivals."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    device: Device = typer.Option(Device.auto, help="Training device \\[default: auto]."),
    energy_preset: str = typer.Option("45nm-fp32", help=f"Energy per op (e_AC/e_MAC): {ENERGY_HELP}."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/search-DATASET]."),
):
    """Search keep masks over fire2..fire9 with Optuna; write the Pareto front and best.pt.

    Each trial prunes the base SNN to one mask and fine-tunes it like an ablation schedule. The
    study starts with the paper's schedules and the saliency ranking's top masks; no mask is
    trained twice. Writes OUT/trials.csv, pareto.md, pareto.png and best.pt. Re-running the same
    command continues to --trials; N workers running it against one --storage share the study.
    """
    from firecut.config import default_data_root
    from firecut.data import dataset_name
    from firecut.masks import pattern
    from firecut.search import SearchConfig, run_search

    cfg = SearchConfig(dataset=dataset, root=data_root or default_data_root(), trials=trials,
                       objective=objective.value, lam=lam, max_energy_mj=max_energy_mj, base=base,
                       storage=storage, study=study, seed=seed, preset=preset, epochs=epochs,
                       finetune_epochs=finetune_epochs, timesteps=timesteps, batch_size=batch_size,
                       train_subset=train_subset, test_subset=test_subset, width=width,
                       device=device.value, saliency_masks=saliency_masks, settle_s=settle_s,
                       energy_preset=energy_preset, e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj)
    out = out or str(Path("runs") / f"search-{dataset_name(dataset)}")
    with _resumable(out):
        report = run_search(cfg, out, log=lambda m: print(m, file=sys.stderr))
    sys.stdout.write((Path(out) / "pareto.md").read_text())
    b = report["best"]
    where = f"wrote {report['best_pt']}" if report["best_pt"] else report["note"]
    print(f"best: trial {b['trial']} [{pattern(b['mask'])}] acc {b['acc']:.4f}, {b['energy_mj']:.5f} mJ: "
          f"{report['reason']}; {where}", file=sys.stderr)
    print(f"wrote {out}/trials.csv, pareto.md, pareto.png, best.json", file=sys.stderr)
    if report["best_pt"]:
        import shlex

        print(f"next: firecut export {shlex.quote(str(report['best_pt']))} --format onnx  "
              "# a verified deployable file (pt | torchscript | onnx)", file=sys.stderr)


@app.command(epilog="Example: firecut benchmark --preset quick --dataset ../shared/data/cifar10-sub.npz --models all")
def benchmark(
    dataset: str = typer.Option("cifar10", help="cifar10 | cifar100 | tinyimagenet | PATH.npz"),
    models: str = typer.Option("all", help="all (the paper's six) or a comma list of registered models (see `firecut models`)."),
    seeds: int = typer.Option(1, help="CNN + SNN trainings per model (mean ± std in the tables)."),
    preset: str = typer.Option("quick", help=f"{PRESET_HELP}."),
    epochs: Optional[int] = typer.Option(None, help="CNN epochs \\[default: the preset's]."),
    finetune_epochs: Optional[int] = typer.Option(None, help="SNN fine-tuning epochs \\[default: the preset's]."),
    timesteps: Optional[int] = typer.Option(None, help="SNN time steps T \\[default: the preset's]."),
    batch_size: Optional[int] = typer.Option(None, help="Images per training step \\[default: the preset's]."),
    train_subset: Optional[int] = typer.Option(None, help="Train on N class-balanced images \\[default: all]."),
    test_subset: Optional[int] = typer.Option(None, help="Evaluate on N class-balanced test images \\[default: all]."),
    width: float = typer.Option(1.0, hidden=True, help="Channel width multiplier of every model (tests)."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    device: Device = typer.Option(Device.auto, help="Training device \\[default: auto]."),
    energy_preset: str = typer.Option("45nm-fp32", help=f"Energy per op (e_AC/e_MAC): {ENERGY_HELP}."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/benchmark-DATASET]."),
):
    """Tables 1 and 2: train each model as a CNN and as its spiking twin with one shared recipe.

    Per model: the CNN, then its best checkpoint converted and fine-tuned as an SNN; each
    evaluated on the test split with AC/MAC counted. Writes OUT/table1.md, table2.md,
    benchmark.csv, benchmark.json and tradeoff.png and prints both tables. Re-running the same
    command resumes: every finished run is kept.
    """
    from firecut.benchmark import BenchmarkConfig, parse_models, run_benchmark, table1_markdown, table2_markdown
    from firecut.config import default_data_root
    from firecut.data import dataset_name

    bc = BenchmarkConfig(dataset=dataset, root=data_root or default_data_root(), models=parse_models(models),
                         seeds=seeds, preset=preset, epochs=epochs, finetune_epochs=finetune_epochs,
                         timesteps=timesteps, batch_size=batch_size, train_subset=train_subset,
                         test_subset=test_subset, width=width, device=device.value, energy_preset=energy_preset, e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj)
    out = out or str(Path("runs") / f"benchmark-{dataset_name(dataset)}")
    with _resumable(out):
        rows = run_benchmark(bc, out, log=lambda m: print(m, file=sys.stderr))
    sys.stdout.write(table1_markdown(rows) + "\n" + table2_markdown(rows))
    print(f"wrote {out}/table1.md, table2.md, benchmark.csv, benchmark.json, tradeoff.png", file=sys.stderr)


@app.command(epilog="Example: firecut report runs/benchmark-cifar10 runs/benchmark-cifar100 runs/ablate-cifar10")
def report(
    folders: list[str] = typer.Argument(..., help="Benchmark or ablation output folders."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Also write the table to this Markdown file \\[default: print only]."),
    out_old: Optional[str] = typer.Option(None, "--out", hidden=True, help="Old spelling of --output."),
    energy_preset: Optional[str] = typer.Option(None, help=f"Re-price every row's counted AC/MAC: {ENERGY_HELP} \\[default: as each run was priced]."),
    e_ac_pj: Optional[float] = typer.Option(None, help="Override: energy of one accumulate (pJ) \\[default: the energy preset's]."),
    e_mac_pj: Optional[float] = typer.Option(None, help="Override: energy of one multiply-accumulate (pJ) \\[default: the energy preset's]."),
):
    """One Table 1 from several benchmark/ablation runs (e.g. one per dataset), in the order given."""
    from firecut.config import energy_per_op
    from firecut.io import atomic_write_text
    from firecut.report import merged_table1

    energy = None
    if energy_preset is not None or e_ac_pj is not None or e_mac_pj is not None:
        energy = energy_per_op(energy_preset or "45nm-fp32", e_ac_pj, e_mac_pj)[:2]
    table = merged_table1(folders, energy)
    out = output or out_old
    if out:
        atomic_write_text(out, table)
        print(f"wrote {out}", file=sys.stderr)
    sys.stdout.write(table)


@app.command(epilog="Example: firecut saliency runs/snn/best.pt --dataset cifar10 --batches 8")
def saliency(
    checkpoint: str = typer.Argument(..., help="A trained SqueezeNet checkpoint (CNN or SNN)."),
    dataset: str = typer.Option(..., help="Dataset whose training split to use."),
    batches: int = typer.Option(8, help="Training batches to average |dL/dg| over."),
    batch_size: int = typer.Option(128, help="Images per batch."),
    data_root: Optional[str] = typer.Option(None, help="Download/cache folder \\[default: $FIRECUT_DATA, else ~/.cache/firecut/data]."),
    device: Device = typer.Option(Device.auto, help="Device."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="JSON path \\[default: saliency.json beside the checkpoint]."),
):
    """Rank Fire modules by saliency (mean |dL/dg| of a gate on each module's output).

    Also measures the exact loss increase with each module's output removed, and the rank
    correlation between the two. Feed the JSON to `firecut schedules generate --family ref`.
    """
    from firecut.config import default_data_root
    from firecut.io import atomic_write_text
    from firecut.saliency import format_ranking, saliency_of_checkpoint

    result = saliency_of_checkpoint(checkpoint, dataset, data_root or default_data_root(),
                                    batches=batches, batch_size=batch_size, device=device.value)
    print(format_ranking(result))
    out = Path(output) if output else Path(checkpoint).parent / "saliency.json"
    try:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise FirecutError(f"cannot write {out} ({e.strerror or e})") from None
    print(f"wrote {out}", file=sys.stderr)


# ------------------------------------------------------------------------------ schedules

schedules_app = typer.Typer(no_args_is_help=True, help="Fire-module schedules: list, show, validate, generate.")
app.add_typer(schedules_app, name="schedules")


class Family(str, Enum):
    head = "head"
    tail = "tail"
    alt = "alt"
    ref = "ref"


def _schedule_files(file: Optional[str]):
    from firecut.schedules import shipped_files

    return [Path(file)] if file else shipped_files()


@schedules_app.command("list", epilog="Example: firecut schedules list --file schedules/paper.yaml")
def schedules_list(file: Optional[str] = typer.Option(None, "--file", "-f", help="A schedule file \\[default: the shipped ones].")):
    """List schedules with their keep pattern (✓ kept, – dropped) over fire2..fire9."""
    from firecut.schedules import load_schedules

    for path in _schedule_files(file):
        print(f"# {path.name}")
        print(f"{'schedule':<14} F2 F3 F4 F5 F6 F7 F8 F9  kept")
        for sc in load_schedules(path):
            print(f"{sc.name:<14} {sc.pattern().replace(' ', '  ')}  {len(sc.keep)}")


@schedules_app.command("show", epilog="Example: firecut schedules show Ref-1")
def schedules_show(name: str = typer.Argument(..., help="Schedule name."),
                   file: Optional[str] = typer.Option(None, "--file", "-f", help="A schedule file \\[default: the shipped ones].")):
    """Print one schedule as YAML (kept and dropped modules)."""
    from firecut.schedules import dump_schedules, load_schedules

    for path in _schedule_files(file):
        for sc in load_schedules(path):
            if sc.name == name:
                sys.stdout.write(dump_schedules([sc]))
                print(f"# drops: {', '.join(sc.drop) or 'nothing'}  ({path})")
                return
    raise FirecutError(f"no schedule named '{name}'; see `firecut schedules list`")


@schedules_app.command("validate", epilog="Example: firecut schedules validate my_schedules.yaml")
def schedules_validate(files: list[str] = typer.Argument(..., help="Schedule files to check.")):
    """Check schedule files; the first problem is reported as one line (exit 2)."""
    from firecut.schedules import load_schedules

    for f in files:
        print(f"{f}: {len(load_schedules(f))} schedules, valid")


@schedules_app.command("generate", epilog="Example: firecut schedules generate --family ref --from saliency.json --keep-top 4")
def schedules_generate(
    family: Family = typer.Option(..., help="head | tail (drop consecutive modules) | alt | ref (saliency)."),
    drop: int = typer.Option(1, help="head/tail: how many consecutive modules to drop."),
    offset: int = typer.Option(0, help="head/tail: modules left between the dropped run and the classifier (head) or stem (tail)."),
    parity: str = typer.Option("even", help="alt: keep the even (F2 F4 F6 F8) or odd modules."),
    from_: Optional[str] = typer.Option(None, "--from", help="ref: a saliency JSON (`firecut saliency`, or {module: score}) \\[default: none; ref needs it]."),
    keep_top: int = typer.Option(4, "--keep-top", help="ref: how many of the most salient modules to keep."),
    keep_old: Optional[int] = typer.Option(None, "--keep", hidden=True, help="Old spelling of --keep-top (--keep is a module list in train)."),
    name: Optional[str] = typer.Option(None, help="Name of the generated schedule \\[default: the rule's]."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Append to this YAML file \\[default: print to stdout]."),
):
    """Generate a schedule by a documented rule and print it as YAML."""
    from firecut import schedules as S

    if family is Family.head:
        sc = S.head(drop, offset)
    elif family is Family.tail:
        sc = S.tail(drop, offset)
    elif family is Family.alt:
        sc = S.alt(parity)
    else:
        if not from_:
            raise FirecutError("--family ref needs --from SALIENCY.json")
        sc = S.ref(_read_scores(from_), keep_old if keep_old is not None else keep_top)
    if name:
        sc = S.Schedule(name, sc.keep, sc.description)
    text = S.dump_schedules([sc])
    if output:
        existing = S.load_schedules(output) if Path(output).is_file() else []
        S.parse_schedules([x.to_dict() for x in existing + [sc]], output)  # refuses duplicates
        from firecut.io import atomic_write_text

        atomic_write_text(output, S.dump_schedules(existing + [sc]))  # a failed write keeps the old file
        print(f"appended '{sc.name}' to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _read_scores(path: str) -> dict[str, float]:
    """Saliency scores from `firecut saliency`'s JSON ({"scores": {...}}) or a plain mapping."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise FirecutError(f"cannot read {path} ({e.strerror})") from None
    except json.JSONDecodeError:
        raise FirecutError(f"{path}: not JSON; expected saliency scores {{module: score}}") from None
    scores = data.get("scores", data) if isinstance(data, dict) else None
    if not isinstance(scores, dict) or not all(isinstance(v, (int, float)) for v in scores.values()):
        raise FirecutError(f"{path}: expected saliency scores {{module: score}} (or under 'scores')")
    return {k: float(v) for k, v in scores.items()}


# ------------------------------------------------------------------------------ export / predict


@app.command(epilog="Example: firecut export runs/snn/best.pt --format onnx -o snn.onnx")
def export(
    checkpoint: str = typer.Argument(..., help="A best.pt/last.pt written by `firecut train`."),
    fmt: str = typer.Option("pt", "--format", help="pt (the firecut model, for firecut.load) | torchscript | onnx (T steps unrolled, BN folded)."),
    fmt_old: Optional[str] = typer.Option(None, "-f", hidden=True, help="Old spelling of --format (-f is --file elsewhere)."),
    output: Optional[str] = typer.Option(None, "-o", "--output", help="Artifact path \\[default: beside the checkpoint: STEM.export.pt, STEM.torchscript.pt or STEM.onnx]."),
    dataset: Optional[str] = typer.Option(None, help="Dataset whose test images to verify on \\[default: the one recorded in the checkpoint]."),
    data_root: Optional[str] = typer.Option(None, "--data-root", "--root", help="Download/cache folder \\[default: the checkpoint's, else $FIRECUT_DATA or ~/.cache/firecut/data]."),
    images: int = typer.Option(1000, help="Test images (class-balanced) the export is verified on."),
):
    """Export a checkpoint as pt, TorchScript or ONNX, verified before it is written.

    The file is reloaded from disk and run on real test images against the checkpoint's model
    (scores, predictions, accuracy; for folded graphs also layer by layer). A failed check leaves
    no file. Prints what was checked and the artifact's path and size.
    """
    from firecut.export import ExportConfig, export_checkpoint, format_report
    from firecut.verify import VerifyConfig

    if images < 1:
        raise FirecutError("--images must be >= 1")
    cfg = ExportConfig(checkpoint, fmt_old or fmt, output, dataset, data_root, VerifyConfig(images=images))
    report = export_checkpoint(cfg, log=lambda m: print(m, file=sys.stderr))
    print(format_report(report))


@app.command(epilog="Example: firecut predict runs/snn/best.onnx cat.png dog.jpg --top 3")
def predict(
    artifact: str = typer.Argument(..., help="A file written by `firecut export` (pt, torchscript or onnx)."),
    images: list[str] = typer.Argument(..., help="Image files (PNG, JPEG: anything PIL reads)."),
    top: int = typer.Option(1, help="Print the K most probable classes per image."),
    trust_torchscript: bool = typer.Option(False, "--trust-torchscript", help="Open a TorchScript artifact: loading one runs code from the file, so only for files you made or whose source you trust \\[default: refused]."),
):
    """Classify image files with an export: one line per image, path, class and probability.

    Images are resized to the model's input size and normalised with the mean/std stored in the
    artifact; the output is tab-separated (path, then class and probability K times).
    """
    from firecut.predict import format_predictions, predict_files

    print(format_predictions(predict_files(artifact, images, top=top, trust_torchscript=trust_torchscript)))


def _stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (a scheduler's preemption, `kill`) stops a run the way Ctrl-C does: cleanly."""
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        code = app(standalone_mode=False)  # usage errors come back here, to be said in one line
        sys.exit(code if isinstance(code, int) else 0)
    except typer.TyperException as e:  # Click's UsageError family: an unknown option, a bad value
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `firecut` / `firecut schedules`: help
            e.show()
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        hint = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        message = " ".join(e.format_message().split())
        print(f"firecut: error: {message}{hint}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Abort:  # Ctrl-C while Click itself was reading input
        print("firecut: interrupted", file=sys.stderr)
        sys.exit(130)
    except FirecutError as e:
        print(f"firecut: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, RuntimeError) as e:  # a write the library did not make atomically
        from firecut.errors import disk_full_error, is_disk_full

        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or "a file firecut was writing"
        print(f"firecut: error: {disk_full_error(where)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # outside a command (typer turns one inside into exit 130)
        print("firecut: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
