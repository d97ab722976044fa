"""`firecut benchmark` and `report`: Tables 1 and 2, and one Table 1 from several runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from firecut.cli.common import command, running, with_recipe
from firecut.config import ENERGY_HELP, RecipeConfig


@command(epilog="Example: firecut benchmark --preset quick --dataset ../shared/data/cifar10-sub.npz --models all")
@with_recipe
def benchmark(
    recipe: RecipeConfig,
    models: str = typer.Option("all", help="all (the paper's six) or a comma list of registered models (see `firecut models`)."),
    seeds: int = typer.Option(1, help="CNN + SNN trainings per model (mean ± std in the tables)."),
    out: Optional[str] = typer.Option(None, help="Output folder \\[default: runs/benchmark-DATASET]."),
):
    """Tables 1 and 2: train each model as a CNN and as its spiking twin with one shared recipe.

    Per model: the CNN, then its best checkpoint converted and fine-tuned as an SNN; each
    evaluated on the test split with AC/MAC counted. Writes OUT/table1.md, table2.md,
    benchmark.csv, benchmark.json and tradeoff.png and prints both tables. Re-running the same
    command resumes: every finished run is kept.
    """
    from firecut.benchmark import BenchmarkConfig, parse_models, run_benchmark, table1_markdown, table2_markdown
    from firecut.data import dataset_name

    bc = BenchmarkConfig(recipe, models=parse_models(models), seeds=seeds)
    out = out or str(Path("runs") / f"benchmark-{dataset_name(recipe.dataset)}")
    with running(out) as progress:
        rows = run_benchmark(bc, out, fit=progress.fit(), log=progress.log)
    sys.stdout.write(table1_markdown(rows) + "\n" + table2_markdown(rows))
    print(f"wrote {out}/table1.md, table2.md, benchmark.csv, benchmark.json, tradeoff.png", file=sys.stderr)


@command(epilog="Example: firecut report runs/benchmark-cifar10 runs/benchmark-cifar100 runs/ablate-cifar10")
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
