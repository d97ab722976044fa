"""Table 3 from several finished experiments: each way of re-training side by side, with the paper.

A full-scale Table 3 is too long for one session of a 2-core CPU, so its runs sit in several
output folders: `firecut ablate` folders (OUT/table.json), `firecut train --init` SNN run
folders (OUT/summary.json: one more seed of one schedule) and `firecut benchmark` folders
(OUT/benchmark.json, whose SNN runs are the `recipe` runs of the schedules with their masks:
squeezenet is Baseline, squeezenet_p is Ref-1). This reads them, matches every SNN run to a
schedule by its keep mask, keeps one run per (schedule, seed) (the first folder given wins),
and prints one markdown table: per way of re-training, SNN accuracy (mean ± std over seeds,
with the seed count), energy per image and ★ on that way's accuracy-energy Pareto front, and
"(= NAME)" where an ablation trained the schedule's twin for it; then the paper's Table 3 row.
A schedule with no run yet shows "–"; an ablation still running (no table.json yet) gives the
schedules it has finished.

    python benchmarks/table3_full.py finetune=runs/ablate-finetune-full,runs/ablate-finetune-pair \
        recipe=runs/bench-full,runs/ablate-recipe-rest [--schedules paper.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from firecut.ablate import PAPER_TABLE3, aggregate
from firecut.pruning.schedules import FIRE_NAMES, Schedule, load_schedules
from firecut.tables import mean_pm


def snn_runs(folder: Path) -> list[dict[str, Any]]:
    """The SNN runs of an ablation or benchmark folder, each with its keep mask and seed."""
    if (folder / "table.json").is_file():
        return json.loads((folder / "table.json").read_text())["runs"]
    if (folder / "benchmark.json").is_file():
        runs = json.loads((folder / "benchmark.json").read_text())["runs"]
        cnn = {(r["model"], r["seed"]): r["acc"] for r in runs if r["mode"] == "cnn"}
        return [{**r, "cnn_acc": cnn.get((r["model"], r["seed"]))} for r in runs if r["mode"] == "snn"]
    if (folder / "schedules").is_dir():
        return finished_schedules(folder / "schedules")
    if (folder / "summary.json").is_file():
        return single_run(folder)
    sys.exit(f"{folder} holds neither an ablation (table.json, or schedules/ while it runs), "
             "a benchmark (benchmark.json) nor a finished `firecut train` SNN run (summary.json)")


def single_run(folder: Path) -> list[dict[str, Any]]:
    """A `firecut train --init CNN` run folder: its SNN, with the CNN's accuracy from the
    summary.json beside the CNN checkpoint it converted (a seed the ablation did not train)."""
    run = json.loads((folder / "summary.json").read_text())
    if not run.get("spiking") or not run.get("init"):
        sys.exit(f"{folder}: not an SNN converted from a CNN (give the --init run's folder)")
    run["cnn_acc"] = accuracy_in(Path(run["init"]).parent)
    return [run]


def accuracy_in(run_folder: Path) -> float | None:
    """The test accuracy of a finished run folder (its summary.json), None if there is none."""
    summary = run_folder / "summary.json"
    return json.loads(summary.read_text())["acc"] if summary.is_file() else None


def finished_schedules(schedules: Path) -> list[dict[str, Any]]:
    """The finished SNN runs of an ablation still running (no table.json yet): every
    schedules/NAME-sSEED/summary.json, with its CNN's accuracy from NAME-sSEED-cnn (recipe)."""
    runs = []
    for summary in sorted(schedules.glob("*/summary.json")):
        run = json.loads(summary.read_text())
        if not run.get("spiking"):
            continue  # a recipe schedule's CNN: read below, beside its SNN
        run["cnn_acc"] = accuracy_in(summary.parent.with_name(summary.parent.name + "-cnn"))
        runs.append(run)
    print(f"{schedules.parent}: no table.json yet; {len(runs)} finished SNN run(s) read from "
          f"{schedules}", file=sys.stderr)
    return runs


def mode_rows(folders: list[Path], schedules: list[Schedule]) -> dict[str, dict[str, Any]]:
    """Schedule name -> its aggregated row over the runs found in `folders` (absent: no runs)."""
    by_keep = {frozenset(s.keep): s.name for s in schedules}
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    for folder in folders:
        for r in snn_runs(folder):
            keep = frozenset(r.get("keep") or FIRE_NAMES)
            name = by_keep.get(keep)
            if name is not None:
                runs.setdefault((name, r["seed"]), {**r, "schedule": name})
    present = [s for s in schedules if any(k[0] == s.name for k in runs)]
    rows = aggregate(list(runs.values()), present)  # marks the front among the schedules run
    for row in rows:
        cnn = [r["cnn_acc"] for (n, _), r in runs.items() if n == row["schedule"] and r.get("cnn_acc")]
        row["cnn_acc"] = sum(cnn) / len(cnn) if cnn else None
    return {row["schedule"]: row for row in rows}


def markdown(modes: dict[str, dict[str, dict[str, Any]]], schedules: list[Schedule]) -> str:
    head = "| Schedule | " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES) + " |"
    for mode in modes:
        head += f" {mode}: SNN acc (seeds) | {mode}: CNN acc | {mode}: mJ |"
    head += " paper: acc | paper: mJ |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in schedules:
        cells = [s.name] + ["✓" if m in s.keep else "–" for m in FIRE_NAMES]
        for rows in modes.values():
            r = rows.get(s.name)
            if r is None:
                cells += ["–", "–", "–"]
                continue
            star = " ★" if r["pareto"] else ""
            twin = f" (= {r['twin_of']})" if r.get("twin_of") else ""  # trained once (pruning.twins)
            cells += [f"{mean_pm(r, 'acc', '.4f')} ({r['seeds']}){star}{twin}",
                      "–" if r["cnn_acc"] is None else f"{r['cnn_acc']:.4f}", f"{r['energy_mj']:.4f}"]
        acc, mj = PAPER_TABLE3.get(s.name, (None, None))
        cells += ["–", "–"] if acc is None else [f"{acc:.2f}", f"{mj:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modes", nargs="+", metavar="MODE=DIR[,DIR...]")
    ap.add_argument("--schedules", default="paper.yaml")
    args = ap.parse_args()
    schedules = load_schedules(args.schedules)
    modes = {}
    for spec in args.modes:
        mode, _, dirs = spec.partition("=")
        if not dirs:
            ap.error(f"'{spec}': give MODE=DIR[,DIR...]")
        modes[mode] = mode_rows([Path(d) for d in dirs.split(",")], schedules)
    sys.stdout.write(markdown(modes, schedules))


if __name__ == "__main__":
    main()
