"""The backbone benchmark (the paper's Tables 1 and 2), from real runs.

    per model, per seed  OUT/MODEL/cnn-sSEED  the CNN, trained with the shared recipe
                         OUT/MODEL/snn-sSEED  its best checkpoint converted and fine-tuned
    OUT/table1.md        Dataset | Model | Acc | F1 | AC (k) | MAC (k) | Params (k) | Energy (mJ),
                         the SNNs (AC is only meaningful for them)
    OUT/table2.md        Model | CNN Acc | SNN Acc | ΔA | CNN Energy | SNN Energy | Energy Ratio ×
    OUT/benchmark.csv, benchmark.json (every figure, per run too), tradeoff.png

Every step is a resumable run folder: a killed benchmark re-run with the same OUT keeps every
finished run. OUT/benchmark.yaml records the recipe; an OUT holding another recipe is refused
(the model list may change between runs: each model has its own folders).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from firecut.config import ENERGY_PRESETS, MATCHED, RecipeConfig, energy_mj, flat_defaults, flat_settings
from firecut.errors import FirecutError
from firecut.training.recipe import check_data, check_preset, check_recipe, cnn_then_snn, pin_settings
from firecut.io import atomic_write_text
from firecut.runs import folder_lock
from firecut.tables import METRICS, mean_pm, seed_stats

BENCHMARK_MODELS = ("shufflenetv2", "xception", "mnasnet", "mixnet_s", "squeezenet", "squeezenet_p")
DISPLAY = {"shufflenetv2": "ShuffleNetV2", "xception": "Xception", "mnasnet": "MnasNet",
           "mixnet_s": "MixNet-S", "squeezenet": "SqueezeNet", "squeezenet_p": "SqueezeNet-P"}

# The paper's Table 2 on CIFAR-10: (CNN acc %, SNN acc %, CNN energy mJ, SNN energy mJ). Drawn
# as reference marks in tradeoff.png only; never used as a result.
PAPER_TABLE2 = {"shufflenetv2": (70, 40, 0.010, 0.004), "xception": (79, 75, 2.44, 0.444),
                "mnasnet": (83, 78, 0.113, 0.059), "mixnet_s": (82, 73, 0.047, 0.003),
                "squeezenet": (81, 75, 0.252, 0.036), "squeezenet_p": (82, 81, 0.168, 0.030)}

OUTPUTS = ("table1.md", "table2.md", "benchmark.csv", "benchmark.json", "tradeoff.png")


@dataclass
class BenchmarkConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    models: list[str] = field(default_factory=lambda: list(BENCHMARK_MODELS))
    seeds: int = 1  # CNN + SNN trainings per model (seeds 0..N-1)


def parse_models(spec: str) -> list[str]:
    """'all' -> the paper's six; 'a,b' -> those (any registered model), in the order given."""
    from firecut.models import list_models

    if spec.strip() == "all":
        return list(BENCHMARK_MODELS)
    names = list(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if not names:
        raise FirecutError("--models is empty; give 'all' or names such as mnasnet,xception")
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        raise FirecutError(f"unknown model(s) {', '.join(unknown)} in --models; choose 'all' or from: "
                           f"{', '.join(list_models())}")
    return names


def check_values(bc: BenchmarkConfig) -> None:
    """Refuses impossible settings before anything is written to OUT."""
    check_preset(bc.recipe.preset)
    if bc.seeds < 1:
        raise FirecutError("--seeds must be >= 1")
    check_recipe(bc.recipe)


def check_settings(bc: BenchmarkConfig, out: Path) -> None:
    """Records the recipe in OUT/benchmark.yaml; refuses an OUT trained with another one."""
    pin_settings(out, "benchmark.yaml", flat_settings(bc), "a benchmark with a different recipe",
                 flat_defaults(bc), grows=("models", "seeds"))


def run_benchmark(bc: BenchmarkConfig, out: str | Path, fit: Callable | None = None,
                  log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trains (or resumes) every model as CNN and SNN; writes the tables and the plot; returns
    one row per (model, mode)."""
    from firecut.training.loop import fit as default_fit

    fit = fit or default_fit
    out = Path(out)
    check_values(bc)
    check_data(bc.recipe)
    with folder_lock(out):
        return _run_benchmark(bc, out, fit, log)


def _run_benchmark(bc: BenchmarkConfig, out: Path, fit: Callable,
                   log: Callable[[str], None]) -> list[dict[str, Any]]:
    check_settings(bc, out)
    for name in OUTPUTS:  # tables of an earlier invocation must not outlive a killed one
        (out / name).unlink(missing_ok=True)
    runs: list[dict[str, Any]] = []
    total = len(bc.models) * bc.seeds
    for seed in range(bc.seeds):
        for i, name in enumerate(bc.models):
            log(f"model {seed * len(bc.models) + i + 1}/{total}: {name} seed {seed}")
            cnn, snn = cnn_then_snn(bc.recipe, out / name / f"cnn-s{seed}", out / name / f"snn-s{seed}",
                                    fit, log, name, seed)
            runs += [{**cnn, "model": name, "mode": "cnn"}, {**snn, "model": name, "mode": "snn"}]
    rows = aggregate(runs, bc.models)
    write_tables(rows, runs, out, bc)
    plot_tradeoff(rows, out / "tradeoff.png")
    return rows


# ------------------------------------------------------------------------------ tables

def aggregate(runs: list[dict[str, Any]], models: list[str]) -> list[dict[str, Any]]:
    """One row per (model, mode): mean and std over seeds of each metric, per-seed values."""
    rows = []
    for name in models:
        for mode in ("cnn", "snn"):
            mine = [r for r in runs if r["model"] == name and r["mode"] == mode]
            row: dict[str, Any] = {"model": name, "mode": mode, "dataset": mine[0]["dataset"],
                                   "params": mine[0]["params"], "epochs": mine[0]["epochs"],
                                   "timesteps": mine[0]["timesteps"], "seeds": len(mine),
                                   "test_images": mine[0]["test_images"]}
            rows.append({**row, **seed_stats(mine)})
    return rows


def is_cifar10(dataset: str) -> bool:
    """cifar10 or a subset of it saved as cifar10-*.npz (not cifar100)."""
    return dataset == "cifar10" or dataset.startswith(("cifar10-", "cifar10_"))


def display(name: str) -> str:
    return DISPLAY.get(name, name)


TABLE1_HEAD = ("| Dataset | Model | Acc | F1 | AC (k) | MAC (k) | Params (k) | Energy (mJ) |\n"
               "|---|---|---|---|---|---|---|---|\n")


def table1_line(row: dict[str, Any], label: str | None = None) -> str:
    """One Table 1 line; Acc and F1 in percent, counts per test image."""
    cells = [row["dataset"], label or display(row["model"]), mean_pm(row, "acc", ".2f", 100),
             mean_pm(row, "f1", ".2f", 100), f"{row['ac'] / 1e3:,.1f}", f"{row['mac'] / 1e3:,.1f}",
             f"{row['params'] / 1e3:,.1f}", mean_pm(row, "energy_mj", ".4f")]
    return "| " + " | ".join(cells) + " |\n"


def table1_markdown(rows: list[dict[str, Any]]) -> str:
    return TABLE1_HEAD + "".join(table1_line(r) for r in rows if r["mode"] == "snn")


def pairs(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(model, CNN row, SNN row) per model, in table order."""
    by_key = {(r["model"], r["mode"]): r for r in rows}
    return [(name, by_key[(name, "cnn")], by_key[(name, "snn")])
            for name in dict.fromkeys(r["model"] for r in rows)]


def matched_ratio(cnn: dict[str, Any], snn: dict[str, Any]) -> float:
    """CNN / SNN energy with both charged at config.MATCHED (int8) from their counted AC and MAC.
    The run's own preset (the paper's fp32 by default) gives the other ratio."""
    snn_mj = energy_mj(snn["ac"], snn["mac"], *ENERGY_PRESETS[MATCHED])
    return energy_mj(cnn["ac"], cnn["mac"], *ENERGY_PRESETS[MATCHED]) / snn_mj if snn_mj else float("inf")


def table2_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| Model | CNN Acc | SNN Acc | ΔA | CNN Energy (mJ) | SNN Energy (mJ) | Energy Ratio × "
             "| Ratio × (int8, matched) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, cnn, snn in pairs(rows):
        delta = (snn["acc"] - cnn["acc"]) * 100
        ratio = cnn["energy_mj"] / snn["energy_mj"] if snn["energy_mj"] else float("inf")
        cells = [display(name), mean_pm(cnn, "acc", ".2f", 100), mean_pm(snn, "acc", ".2f", 100),
                 f"{delta:+.2f}", mean_pm(cnn, "energy_mj", ".4f"), mean_pm(snn, "energy_mj", ".4f"),
                 f"{ratio:.2f}", f"{matched_ratio(cnn, snn):.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


CSV_KEYS = ["dataset", "model", "mode", "params", "epochs", "timesteps", "seeds", "test_images"] + [
    k for m in METRICS for k in (m, m + "_std")]


def write_tables(rows: list[dict[str, Any]], runs: list[dict[str, Any]], out: Path,
                 bc: BenchmarkConfig) -> None:
    atomic_write_text(out / "table1.md", table1_markdown(rows))
    atomic_write_text(out / "table2.md", table2_markdown(rows))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_KEYS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "benchmark.csv", buf.getvalue())
    per_run = [{k: v for k, v in r.items() if k != "layers"} for r in runs]
    atomic_write_text(out / "benchmark.json", json.dumps(
        {"kind": "firecut-benchmark", "settings": flat_settings(bc), "rows": rows, "runs": per_run},
        indent=2) + "\n")


def plot_tradeoff(rows: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against energy (log scale), a CNN dot and an SNN triangle per model, joined."""
    from firecut.plots import save_tradeoff, tradeoff_axes

    fig, ax = tradeoff_axes()
    colors = iter(["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                   "tab:pink", "tab:olive", "tab:cyan", "tab:gray"] * 4)
    for name, cnn, snn in pairs(rows):
        c = next(colors)
        ax.plot([cnn["energy_mj"], snn["energy_mj"]], [cnn["acc"], snn["acc"]], color=c, lw=1, alpha=0.6)
        ax.scatter([cnn["energy_mj"]], [cnn["acc"]], color=c, marker="o", label=f"{display(name)} CNN")
        ax.scatter([snn["energy_mj"]], [snn["acc"]], color=c, marker="^", label=f"{display(name)} SNN")
        if name in PAPER_TABLE2 and is_cifar10(rows[0]["dataset"]):
            p = PAPER_TABLE2[name]
            ax.scatter([p[2], p[3]], [p[0] / 100, p[1] / 100], color=c, marker="x", alpha=0.5)
    ax.set_xscale("log")
    ax.set_title("CNN (o) and SNN (^) per model; x: the paper's Table 2 (CIFAR-10, reference)",
                 fontsize=9)
    save_tradeoff(fig, ax, path)
