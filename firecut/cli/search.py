"""`firecut search`: keep masks searched with Optuna."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import command, running, with_recipe
from firecut.config import RecipeConfig


class SearchRetrain(str, Enum):
    recipe = "recipe"
    finetune = "finetune"


class SearchObjective(str, Enum):
    pareto = "pareto"
    scalar = "scalar"


@command(epilog="Example: firecut search --preset quick --dataset ../shared/data/cifar10-sub.npz --out runs/search-quick "
                "(finetune mode: firecut search --retrain finetune --trials 12 --preset quick --dataset ../shared/data/cifar10-sub.npz)")
@with_recipe
def search(
    recipe: RecipeConfig,
    retrain: SearchRetrain = typer.Option(SearchRetrain.recipe, help="recipe: every network trained as its own net, ranked by successive halving | finetune: masks pruned from a trained base SNN and fine-tuned, sampled by Optuna."),
    trials: Optional[int] = typer.Option(None, help="recipe: networks judged at the first rung \\[default: all 81] | finetune: masks to train, all workers together; re-running continues to this total \\[default: 50]."),
    rungs: int = typer.Option(3, help="recipe: successive-halving rungs; rung k of R trains ceil(E / eta^(R-1-k)) CNN and ceil(F / eta^(R-1-k)) SNN epochs, the last the full recipe."),
    eta: int = typer.Option(3, help="recipe: each rung promotes the best 1/eta of the one below (non-dominated rank on accuracy and energy, then accuracy)."),
    confirm: int = typer.Option(3, help="recipe: the last rung's most accurate networks trained again with seed + 1 (0: none)."),
    objective: SearchObjective = typer.Option(SearchObjective.pareto, help="finetune: pareto: NSGA-II on (acc, energy) | scalar: TPE on acc - lambda x relative energy."),
    lam: float = typer.Option(0.2, "--lambda", help="finetune, scalar: accuracy given up per unit of energy relative to the base."),
    max_energy_mj: Optional[float] = typer.Option(None, help="best.pt: the most accurate network at or under this energy per image \\[default: the front's knee]."),
    base: Optional[str] = typer.Option(None, help="finetune: a trained unpruned SNN checkpoint \\[default: train one in OUT]. Give the same file to every worker."),
    storage: Optional[str] = typer.Option(None, envvar="FIRECUT_STORAGE", show_envvar=True, help="Optuna storage (keep a password off the command line: set $FIRECUT_STORAGE): sqlite:///F, postgresql://U:P@H/DB, mysql://..., journal:FILE \\[default: sqlite:///OUT/study.db]."),
    study: str = typer.Option("firecut-search", help="Study name within the storage."),
    seed: int = typer.Option(0, help="Every network's training seed (finetune: and the sampler's)."),
    saliency_masks: int = typer.Option(3, help="finetune: seed masks from the base's saliency ranking (drop the 1..K least salient modules)."),
    settle_s: float = typer.Option(1.0, hidden=True, help="Seconds between claiming a mask and checking for rivals."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/search-DATASET]."),
):
    """Search keep masks over fire2..fire9; write the accuracy-energy front and best.pt.

    --retrain recipe (the default) trains each mask as its own network, the mode in which pruning
    helps at full scale. The 256 masks build 81 distinct networks (twins share a run); all are
    judged by successive halving: with --preset cpu (30 CNN + 8 SNN epochs) and eta 3, rung 0
    trains all 81 for 4 + 1 epochs, rung 1 the best 27 for 10 + 3, rung 2 the best 9 for the
    full 30 + 8, and the 3 most accurate again with seed + 1. Promotion is on the
    accuracy-energy front (non-dominated rank, then accuracy). pareto.md reports each rung's
    Kendall tau against the full recipe beside energy alone's.

    --retrain finetune prunes a trained base SNN (--base, or trained in OUT) to each mask and
    fine-tunes it; Optuna samples the masks, the paper's schedules first.

    best.pt is the chosen network's checkpoint: the most accurate at or under --max-energy-mj,
    else the knee of the front (recipe: among the full-budget networks). Writes OUT/pareto.md,
    pareto.png, best.json and networks.csv (recipe) or trials.csv (finetune). Re-running the same
    command resumes; N workers running it against one --storage share the study.
    """
    from firecut.data import dataset_name
    from firecut.pruning.masks import pattern
    from firecut.search.run import SearchConfig, run_search

    cfg = SearchConfig(recipe, trials=trials, retrain=retrain.value, rungs=rungs, eta=eta, confirm=confirm,
                       objective=objective.value, lam=lam, max_energy_mj=max_energy_mj,
                       base=base, storage=storage, study=study, seed=seed, saliency_masks=saliency_masks,
                       settle_s=settle_s)
    out = out or str(Path("runs") / f"search-{dataset_name(recipe.dataset)}")
    with running(out) as progress:
        report = run_search(cfg, out, fit=progress.fit(), log=progress.log)
    sys.stdout.write((Path(out) / "pareto.md").read_text())
    b = report["best"]
    where = f"wrote {report['best_pt']}" if report["best_pt"] else report["note"]
    name = f"network {b['network']}" if "network" in b else f"trial {b['trial']}"
    print(f"best: {name} [{pattern(b['mask'])}] acc {b['acc']:.4f}, {b['energy_mj']:.5f} mJ: "
          f"{report['reason']}; {where}", file=sys.stderr)
    table = "networks.csv" if cfg.retrain == "recipe" else "trials.csv"
    print(f"wrote {out}/{table}, pareto.md, pareto.png, best.json", file=sys.stderr)
    if report["best_pt"]:
        import shlex

        print(f"next: firecut export {shlex.quote(str(report['best_pt']))} --format onnx  "
              "# a verified deployable file (pt | torchscript | onnx)", file=sys.stderr)
