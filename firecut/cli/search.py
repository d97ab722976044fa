"""`firecut search`: keep masks searched with Optuna."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import command, running, with_recipe
from firecut.config import RecipeConfig


class SearchObjective(str, Enum):
    pareto = "pareto"
    scalar = "scalar"


@command(epilog="Example: firecut search --trials 12 --preset quick --dataset ../shared/data/cifar10-sub.npz "
                    "--base runs/ablate/base-snn/last.pt")
@with_recipe
def search(
    recipe: RecipeConfig,
    trials: int = typer.Option(50, help="optuna: masks to train in the study, all workers together; re-running continues to this total."),
    objective: SearchObjective = typer.Option(SearchObjective.pareto, help="pareto: NSGA-II on (acc, energy) | scalar: TPE on acc - lambda x relative energy."),
    lam: float = typer.Option(0.2, "--lambda", help="scalar: accuracy given up per unit of energy relative to the base."),
    max_energy_mj: Optional[float] = typer.Option(None, help="best.pt: the most accurate mask at or under this energy per image \\[default: the front's knee]."),
    base: Optional[str] = typer.Option(None, help="A trained unpruned SNN checkpoint \\[default: train one in OUT]. Give the same file to every worker."),
    storage: Optional[str] = typer.Option(None, envvar="FIRECUT_STORAGE", show_envvar=True, help="Optuna storage (keep a password off the command line: set $FIRECUT_STORAGE): sqlite:///F, postgresql://U:P@H/DB, mysql://..., journal:FILE \\[default: sqlite:///OUT/study.db]."),
    study: str = typer.Option("firecut-search", help="Study name within the storage."),
    seed: int = typer.Option(0, help="Sampler seed and every mask's fine-tuning seed."),
    saliency_masks: int = typer.Option(3, help="Seed masks from the base's saliency ranking (drop the 1..K least salient modules)."),
    settle_s: float = typer.Option(1.0, hidden=True, help="Seconds between claiming a mask and checking for rivals."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/search-DATASET]."),
):
    """Search keep masks over fire2..fire9 with Optuna; write the Pareto front and best.pt.

    Each trial prunes the base SNN to one mask and fine-tunes it like an ablation schedule. The
    study starts with the paper's schedules and the saliency ranking's top masks; no mask is
    trained twice. Writes OUT/trials.csv, pareto.md, pareto.png and best.pt. Re-running the same
    command continues to --trials; N workers running it against one --storage share the study.
    """
    from firecut.data import dataset_name
    from firecut.pruning.masks import pattern
    from firecut.search.run import SearchConfig, run_search

    cfg = SearchConfig(recipe, trials=trials, objective=objective.value, lam=lam, max_energy_mj=max_energy_mj,
                       base=base, storage=storage, study=study, seed=seed, saliency_masks=saliency_masks,
                       settle_s=settle_s)
    out = out or str(Path("runs") / f"search-{dataset_name(recipe.dataset)}")
    with running(out) as progress:
        report = run_search(cfg, out, fit=progress.fit(), log=progress.log)
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
