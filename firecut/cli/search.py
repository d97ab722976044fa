"""`firecut search`: keep masks searched with Optuna."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import Device, command, resumable
from firecut.config import ENERGY_HELP, PRESET_HELP


class SearchObjective(str, Enum):
    pareto = "pareto"
    scalar = "scalar"


@command(epilog="Example: firecut search --trials 12 --preset quick --dataset ../shared/data/cifar10-sub.npz "
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
    from firecut.pruning.masks import pattern
    from firecut.search.run import SearchConfig, run_search

    cfg = SearchConfig(dataset=dataset, root=data_root or default_data_root(), trials=trials,
                       objective=objective.value, lam=lam, max_energy_mj=max_energy_mj, base=base,
                       storage=storage, study=study, seed=seed, preset=preset, epochs=epochs,
                       finetune_epochs=finetune_epochs, timesteps=timesteps, batch_size=batch_size,
                       train_subset=train_subset, test_subset=test_subset, width=width,
                       device=device.value, saliency_masks=saliency_masks, settle_s=settle_s,
                       energy_preset=energy_preset, e_ac_pj=e_ac_pj, e_mac_pj=e_mac_pj)
    out = out or str(Path("runs") / f"search-{dataset_name(dataset)}")
    with resumable(out):
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
