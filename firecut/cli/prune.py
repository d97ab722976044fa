"""`firecut ablate`, `saliency` and `schedules`: which Fire modules to keep."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import Device, command, running, with_recipe
from firecut.config import RecipeConfig
from firecut.errors import FirecutError


@command(epilog="Example: firecut ablate --preset quick --dataset ../shared/data/cifar10-sub.npz --out runs/ablate")
@with_recipe
def ablate(
    recipe: RecipeConfig,
    schedules: str = typer.Option("paper.yaml", help="Schedule file (a bare name: a shipped one; see `firecut schedules list`)."),
    base: Optional[str] = typer.Option(None, help="A trained unpruned SNN checkpoint (prune-cnn: the CNN's) \\[default: train one here]."),
    seeds: int = typer.Option(1, help="Re-trainings per schedule, seeds 0..N-1 (mean ± std in the table); "
                               "re-run with more to add seeds."),
    retrain: str = typer.Option("finetune", help="How each schedule is re-trained: finetune (prune the base SNN, fine-tune) | recipe (its own CNN, converted, fine-tuned) | prune-cnn (prune the base CNN, fine-tune it, convert, fine-tune) | scratch (an SNN from scratch)."),
    cnn_finetune_epochs: Optional[int] = typer.Option(None, help="prune-cnn: CNN fine-tuning epochs per schedule \\[default: the CNN epochs // 6, at least 1]."),
    from_scratch: bool = typer.Option(False, "--from-scratch", hidden=True, help="Old spelling of --retrain scratch."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/ablate-DATASET]."),
):
    """The Fire-module ablation (Table 3): re-train each schedule (--retrain), evaluate, count.

    Writes OUT/table.md, table.csv, table.json and tradeoff.png and prints the table. Re-running
    the same command resumes: every finished schedule is kept.
    """
    from firecut.ablate import AblateConfig, run_ablation, table_markdown
    from firecut.data import dataset_name

    ac = AblateConfig(recipe, schedules=schedules, base=base, seeds=seeds,
                      retrain="scratch" if from_scratch else retrain, cnn_finetune_epochs=cnn_finetune_epochs)
    out = out or str(Path("runs") / f"ablate-{dataset_name(recipe.dataset)}")
    with running(out) as progress:
        rows = run_ablation(ac, out, fit=progress.fit(), log=progress.log)
    sys.stdout.write(table_markdown(rows))
    print(f"wrote {out}/table.md, table.csv, table.json, tradeoff.png", file=sys.stderr)


@command(epilog="Example: firecut saliency runs/snn/best.pt --dataset cifar10 --batches 8")
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
    from firecut.pruning.saliency import format_ranking, saliency_of_checkpoint

    result = saliency_of_checkpoint(checkpoint, dataset, data_root or default_data_root(),
                                    batches=batches, batch_size=batch_size, device=device.value)
    print(format_ranking(result))
    out = Path(output) if output else Path(checkpoint).parent / "saliency.json"
    try:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    except OSError as e:
        raise FirecutError(f"cannot write {out} ({e.strerror or e})") from None
    print(f"wrote {out}", file=sys.stderr)


class Family(str, Enum):
    head = "head"
    tail = "tail"
    alt = "alt"
    ref = "ref"


def _schedule_files(file: Optional[str]):
    from firecut.pruning.schedules import shipped_files

    return [Path(file)] if file else shipped_files()


@command(name="list", group="schedules", epilog="Example: firecut schedules list --file schedules/paper.yaml")
def schedules_list(file: Optional[str] = typer.Option(None, "--file", "-f", help="A schedule file \\[default: the shipped ones].")):
    """List schedules with their keep pattern (✓ kept, – dropped) over fire2..fire9."""
    from firecut.pruning.schedules import load_schedules

    for path in _schedule_files(file):
        print(f"# {path.name}")
        print(f"{'schedule':<14} F2 F3 F4 F5 F6 F7 F8 F9  kept")
        for sc in load_schedules(path):
            print(f"{sc.name:<14} {sc.pattern().replace(' ', '  ')}  {len(sc.keep)}")


@command(name="show", group="schedules", epilog="Example: firecut schedules show Ref-1")
def schedules_show(name: str = typer.Argument(..., help="Schedule name."),
                   file: Optional[str] = typer.Option(None, "--file", "-f", help="A schedule file \\[default: the shipped ones].")):
    """Print one schedule as YAML (kept and dropped modules)."""
    from firecut.pruning.schedules import dump_schedules, load_schedules

    for path in _schedule_files(file):
        for sc in load_schedules(path):
            if sc.name == name:
                sys.stdout.write(dump_schedules([sc]))
                print(f"# drops: {', '.join(sc.drop) or 'nothing'}  ({path})")
                return
    raise FirecutError(f"no schedule named '{name}'; see `firecut schedules list`")


@command(name="validate", group="schedules", epilog="Example: firecut schedules validate my_schedules.yaml")
def schedules_validate(files: list[str] = typer.Argument(..., help="Schedule files to check.")):
    """Check schedule files; the first problem is reported as one line (exit 2)."""
    from firecut.pruning.schedules import load_schedules

    for f in files:
        print(f"{f}: {len(load_schedules(f))} schedules, valid")


@command(name="generate", group="schedules", epilog="Example: firecut schedules generate --family ref --from saliency.json --keep-top 4")
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
    from firecut.pruning import schedules as S

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
