"""The Fire-module ablation (the paper's Table 3), from real runs.

    base      the unpruned SNN SqueezeNet: `--base CKPT`, or trained here by the spine's pipeline
              (CNN -> convert -> fine-tune) into OUT/base-cnn and OUT/base-snn
    schedule  re-trained one of three ways (`--retrain`; the paper only says "re-trained"):
                finetune  pruned from the base (every fitting tensor inherited, re-wired convs
                          re-made) and fine-tuned F epochs as an SNN
                recipe    trained as its own network through the whole recipe: CNN E epochs with
                          the schedule's modules, converted, fine-tuned F epochs (no base)
                prune-cnn pruned from the base's CNN (OUT/base-cnn, or a CNN --base) and
                          fine-tuned C epochs as a CNN (--cnn-finetune-epochs), then converted and
                          fine-tuned F epochs as an SNN: the recipe's order at a fraction of its
                          cost (one base CNN for all schedules)
                scratch   an SNN trained from scratch E epochs (no base, no CNN)
              evaluated on the test split with AC/MAC counted; one run folder each:
              OUT/schedules/NAME-sSEED (recipe, prune-cnn: its CNN in OUT/schedules/NAME-sSEED-cnn);
              recipe and scratch train schedules that build the same network (twins: Head-1 and
              Head-2, ...; pruning.twins) once, and the twin's row is that run's, marked "(= NAME)"
    table     OUT/table.md (Table 3's layout), table.csv, table.json, tradeoff.png

Every step is a resumable run folder, so a killed ablation re-run with the same OUT keeps every
finished schedule and ends with the same table, and a re-run with more --seeds adds only the new
seeds' runs. OUT/ablate.yaml records the other settings; an OUT holding an ablation with other
settings is refused.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from firecut.config import (ENERGY_PRESETS, MATCHED, ModelConfig, RecipeConfig, SpikingConfig, child_of,
                            energy_mj, flat_defaults, flat_settings, validate)
from firecut.errors import FirecutError
from firecut.training.recipe import (check_data, check_preset, check_recipe, cnn_then_snn, pin_settings,
                                     snn_from_cnn, step_config)
from firecut.io import atomic_write_text
from firecut.runs import folder_lock
from firecut.tables import METRICS, mean_pm, seed_stats
from firecut.pruning.schedules import FIRE_NAMES, Schedule, load_schedules
from firecut.pruning.twins import architecture_key

# The paper's Table 3 (acc, energy mJ), drawn as a reference series in tradeoff.png only.
PAPER_TABLE3 = {"Baseline": (0.75, 0.0355), "Head-1": (0.77, 0.0241), "Head-2": (0.77, 0.0257),
                "Tail-1": (0.78, 0.0304), "Tail-2": (0.79, 0.0291), "Alt-1": (0.79, 0.0260),
                "Alt-2": (0.76, 0.0226), "Ref-1": (0.81, 0.0295), "Ref-2": (0.79, 0.0279)}


@dataclass
class AblateConfig:
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    schedules: str = "paper.yaml"  # a schedule file (a bare name: a shipped one)
    base: str | None = None  # a trained unpruned checkpoint (RETRAIN says which kind); None = train one
    seeds: int = 1  # re-trainings per schedule (seeds 0..N-1)
    retrain: str = "finetune"  # finetune | recipe | prune-cnn | scratch (RETRAIN)
    cnn_finetune_epochs: int | None = None  # prune-cnn: CNN epochs per schedule [default: E // 6, >= 1]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


# How a schedule is re-trained -> the trained unpruned base it starts from (None: no base)
RETRAIN: dict[str, str | None] = {"finetune": "snn", "recipe": None, "prune-cnn": "cnn", "scratch": None}


def check_values(ac: AblateConfig) -> None:
    """Refuses impossible settings before anything is written to OUT."""
    check_preset(ac.recipe.preset)
    if ac.retrain not in RETRAIN:
        raise FirecutError(f"unknown --retrain '{ac.retrain}'; choose one of: {', '.join(RETRAIN)}")
    if ac.base and not RETRAIN[ac.retrain]:
        raise FirecutError(f"--retrain {ac.retrain} trains every schedule without a base; drop --base")
    if ac.seeds < 1:
        raise FirecutError("--seeds must be >= 1")
    if ac.cnn_finetune_epochs is not None and ac.retrain != "prune-cnn":
        raise FirecutError(f"--cnn-finetune-epochs is for --retrain prune-cnn, not {ac.retrain}")
    check_recipe(ac.recipe, ("--cnn-finetune-epochs", ac.cnn_finetune_epochs))
    if ac.recipe.distill > 0 and (ac.retrain == "scratch" or (ac.retrain == "finetune" and ac.base)):
        raise FirecutError(f"--distill teaches SNNs converted from a CNN, and --retrain {ac.retrain}"
                           f"{' with --base' if ac.base else ''} converts none; drop --distill")


def check_settings(ac: AblateConfig, out: Path) -> None:
    """Records the settings in OUT/ablate.yaml; refuses an OUT holding other settings. --seeds may
    grow (or shrink) between runs: each seed is its own run folder, and the table holds seeds
    0..N-1 of this run."""
    pin_settings(out, "ablate.yaml", flat_settings(ac), "an ablation with different settings",
                 flat_defaults(ac), grows=("seeds",))


def train_base(ac: AblateConfig, out: Path, fit: Callable, log: Callable[[str], None]) -> str:
    """The unpruned base: CNN (E epochs) -> convert -> fine-tune (F epochs), or (prune-cnn) the CNN
    alone. Returns its checkpoint."""
    if RETRAIN[ac.retrain] == "cnn":
        log("base: squeezenet: training the CNN (seed 0)")
        fit(validate(step_config(ac.recipe, "cnn", 0)), str(out / "base-cnn"))
        return str(out / "base-cnn" / "best.pt")
    cnn_then_snn(ac.recipe, out / "base-cnn", out / "base-snn", fit, lambda m: log("base: " + m))
    return str(out / "base-snn" / "last.pt")


def check_base(ac: AblateConfig, base: str) -> tuple[ModelConfig, SpikingConfig]:
    """A --base must be an unpruned SqueezeNet trained on this dataset: spiking, or (prune-cnn) the
    clip-quant CNN."""
    from firecut.checkpoint import configs_of, load_checkpoint
    from firecut.data import dataset_name, num_classes_of

    ckpt = load_checkpoint(base)
    mc, sc = configs_of(ckpt)
    want_snn = RETRAIN[ac.retrain] == "snn"
    if mc.name != "squeezenet" or sc.enabled != want_snn:
        need = ("a spiking squeezenet (firecut train --init CNN.pt)" if want_snn else
                "a squeezenet CNN (firecut train --cnn; its best.pt)")
        raise FirecutError(f"--base {base} is a {'spiking ' if sc.enabled else ''}{mc.name}; "
                           f"--retrain {ac.retrain} needs {need}")
    if mc.target != ac.recipe.target and ac.recipe.target != "any":
        raise FirecutError(f"--base {base} was built for --target {mc.target}, not {ac.recipe.target}; "
                           f"give a base trained with --target {ac.recipe.target}")
    if mc.keep is not None and len(mc.keep) != len(FIRE_NAMES):
        raise FirecutError(f"--base {base} is already pruned ({', '.join(mc.keep)}); "
                           "give the unpruned net")
    same_data = ckpt.get("dataset") == dataset_name(ac.recipe.dataset)
    if ckpt["arch"]["num_classes"] != num_classes_of(ac.recipe.dataset) or not same_data:
        raise FirecutError(f"--base {base} was trained on {ckpt.get('dataset')} "
                           f"({ckpt['arch']['num_classes']} classes), not {dataset_name(ac.recipe.dataset)}; "
                           "give a base trained on this dataset")
    return mc, sc


def run_schedule(ac: AblateConfig, sched: Schedule, seed: int, base: str | None,
                 base_cfgs: tuple[ModelConfig, SpikingConfig] | None, out: Path,
                 fit: Callable, folder: str = "schedules") -> dict[str, Any]:
    """Re-trains schedule `sched` per `ac.retrain` into OUT/FOLDER/NAME-sSEED (see the module
    docstring); returns the SNN's summary with the schedule's name, keep and seed (recipe: and
    its CNN's accuracy, cnn_acc)."""
    run = out / folder / f"{_slug(sched.name)}-s{seed}"
    if ac.retrain == "recipe":
        cnn, snn = cnn_then_snn(ac.recipe, run.with_name(run.name + "-cnn"), run, fit, lambda m: None,
                                seed=seed, keep=list(sched.keep))
        return {"schedule": sched.name, "keep": list(sched.keep), "seed": seed, **snn,
                "cnn_acc": cnn["acc"]}
    if ac.retrain == "prune-cnn":
        return prune_cnn_then_snn(ac, sched, seed, base, base_cfgs, run, fit)
    if ac.retrain == "scratch" or base_cfgs is None:
        cfg = step_config(ac.recipe, "snn-scratch", seed)
        cfg.model.keep = list(sched.keep)
    else:
        cfg = step_config(ac.recipe, "snn", seed)
        timesteps = cfg.spiking.timesteps
        cfg.model, cfg.spiking = child_of(*base_cfgs, base, sched.keep)
        cfg.spiking.timesteps = timesteps
    summary = fit(validate(cfg), str(run))
    return {"schedule": sched.name, "keep": list(sched.keep), "seed": seed, **summary}


def twin_key(ac: AblateConfig, sched: Schedule) -> str:
    """The network a schedule trains from scratch (recipe: its CNN; scratch: its SNN), names
    aside: schedules with one key train identically from one seed (pruning.twins)."""
    cfg = step_config(ac.recipe, "cnn" if ac.retrain == "recipe" else "snn-scratch")
    cfg.model.keep = list(sched.keep)
    return architecture_key(cfg.model, cfg.spiking)


def cnn_finetune_epochs(ac: AblateConfig) -> int:
    """prune-cnn's CNN epochs per schedule: given, else a sixth of the recipe's CNN epochs."""
    if ac.cnn_finetune_epochs is not None:
        return ac.cnn_finetune_epochs
    return max(1, step_config(ac.recipe, "cnn").train.epochs // 6)


def prune_cnn_then_snn(ac: AblateConfig, sched: Schedule, seed: int, base: str,
                       base_cfgs: tuple[ModelConfig, SpikingConfig], run: Path,
                       fit: Callable) -> dict[str, Any]:
    """The base CNN pruned to the schedule (every fitting tensor inherited), fine-tuned C epochs
    with the recipe's CNN settings, its best checkpoint converted and fine-tuned F epochs."""
    cnn = step_config(ac.recipe, "cnn", seed)
    cnn.model, cnn.spiking = child_of(*base_cfgs, base, sched.keep)
    cnn.train.epochs = cnn_finetune_epochs(ac)
    cnn_dir = run.with_name(run.name + "-cnn")
    cnn_summary = fit(validate(cnn), str(cnn_dir))
    summary = snn_from_cnn(ac.recipe, cnn, cnn_dir, run, fit, seed)
    return {"schedule": sched.name, "keep": list(sched.keep), "seed": seed, **summary,
            "cnn_acc": cnn_summary["acc"]}


def run_ablation(ac: AblateConfig, out: str | Path, fit: Callable | None = None,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Runs (or resumes) every schedule; writes the tables and plot; returns one row per schedule."""
    from firecut.training.loop import fit as default_fit

    fit = fit or default_fit
    out = Path(out)
    check_values(ac)
    schedules = load_schedules(ac.schedules)
    check_data(ac.recipe)
    with folder_lock(out):
        return _run_ablation(ac, out, schedules, fit, log)


def _run_ablation(ac: AblateConfig, out: Path, schedules: list[Schedule], fit: Callable,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    check_settings(ac, out)
    base, base_cfgs = None, None
    if RETRAIN[ac.retrain]:
        base = ac.base or train_base(ac, out, fit, log)
        base_cfgs = check_base(ac, base)
    runs: list[dict[str, Any]] = []
    first: dict[tuple[str, int], dict[str, Any]] = {}  # (architecture, seed) -> its run (twins)
    total = len(schedules) * ac.seeds
    for seed in range(ac.seeds):
        for i, sched in enumerate(schedules):
            n = seed * len(schedules) + i + 1
            note = "  (keeps no Fire module: stem -> classifier)" if not sched.keep else ""
            log(f"schedule {n}/{total}: {sched.name} [{sched.pattern()}] seed {seed}{note}")
            key = (twin_key(ac, sched), seed) if ac.retrain in ("recipe", "scratch") else None
            if key in first:
                twin = first[key]
                log(f"  the same network as {twin['schedule']} (pruning.twins): its run stands for this one")
                runs.append({**twin, "schedule": sched.name, "keep": list(sched.keep),
                             "twin_of": twin["schedule"]})
                continue
            runs.append(run_schedule(ac, sched, seed, base, base_cfgs, out, fit))
            if key is not None:
                first[key] = runs[-1]
    rows = aggregate(runs, schedules)
    write_tables(rows, runs, out)
    plot_tradeoff(rows, out / "tradeoff.png")
    return rows


# ------------------------------------------------------------------------------ tables


def aggregate(runs: list[dict[str, Any]], schedules: list[Schedule]) -> list[dict[str, Any]]:
    """One row per schedule: mean and std over seeds of each metric, the per-seed values, and
    whether the schedule is on the accuracy-energy Pareto front (`pareto`)."""
    rows = []
    for sched in schedules:
        mine = [r for r in runs if r["schedule"] == sched.name]
        row: dict[str, Any] = {"schedule": sched.name, "keep": list(sched.keep),
                               "params": mine[0]["params"], "epochs": mine[0]["epochs"],
                               "timesteps": mine[0]["timesteps"], "seeds": len(mine),
                               "twin_of": mine[0].get("twin_of")}
        int8 = [{"energy_int8_mj": energy_mj(r["ac"], r["mac"], *ENERGY_PRESETS[MATCHED])} for r in mine]
        rows.append({**row, **seed_stats(mine), **seed_stats(int8, ("energy_int8_mj",))})
    front = set(pareto_front([(r["energy_mj"], r["acc"]) for r in rows]))  # on the means
    for i, r in enumerate(rows):
        r["pareto"] = i in front
    return rows


def table_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| Schedule | " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES)
            + " | Acc | Params | Energy (mJ) | Energy, int8 (mJ) | Pareto |")
    lines = [head, "|" + "---|" * (len(FIRE_NAMES) + 6)]
    for r in rows:
        marks = " | ".join("✓" if m in r["keep"] else "–" for m in FIRE_NAMES)
        name = r["schedule"] + (f" (= {r['twin_of']})" if r.get("twin_of") else "")
        lines.append(f"| {name} | {marks} | {mean_pm(r, 'acc', '.4f')} | {r['params']:,} | "
                     f"{mean_pm(r, 'energy_mj', '.5f')} | {mean_pm(r, 'energy_int8_mj', '.6f')} | "
                     f"{'★' if r.get('pareto') else ''} |")
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], runs: list[dict[str, Any]], out: Path) -> None:
    atomic_write_text(out / "table.md", table_markdown(rows))
    keys = ["schedule", "keep", "params", "epochs", "timesteps", "seeds", "pareto"] + [
        k for m in METRICS for k in (m, m + "_std")]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "keep": " ".join(r["keep"])})
    atomic_write_text(out / "table.csv", buf.getvalue())
    per_run = [{k: v for k, v in r.items() if k != "layers"} for r in runs]
    atomic_write_text(out / "table.json", json.dumps({"schedules": rows, "runs": per_run}, indent=2) + "\n")


def dominates(p: tuple[float, float], q: tuple[float, float]) -> bool:
    """(energy, acc) p is at least as cheap and as accurate as q, and strictly better in one."""
    return p[0] <= q[0] and p[1] >= q[1] and (p[0] < q[0] or p[1] > q[1])


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (energy, acc) that no other point dominates."""
    return [i for i, q in enumerate(points)
            if not any(dominates(p, q) for j, p in enumerate(points) if j != i)]


def plot_tradeoff(rows: list[dict[str, Any]], path: Path) -> None:
    from firecut.plots import save_tradeoff, tradeoff_axes

    pts = [(r["energy_mj"], r["acc"]) for r in rows]
    front = sorted((i for i, r in enumerate(rows) if r["pareto"]), key=lambda i: pts[i][0])
    fig, ax = tradeoff_axes()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue", label="firecut (measured)")
    for r, (e, a) in zip(rows, pts, strict=True):
        ax.annotate(r["schedule"], (e, a), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="tab:blue", lw=1,
            ls="--", label="Pareto front")
    paper = [(PAPER_TABLE3[r["schedule"]], r["schedule"]) for r in rows if r["schedule"] in PAPER_TABLE3]
    if paper:
        ax.scatter([p[0][1] for p in paper], [p[0][0] for p in paper], marker="x", color="tab:gray",
                   label="paper, Table 3 (reference)")
    save_tradeoff(fig, ax, path)
