"""A search's outputs, read back from its study: trials.csv, pareto.md, pareto.png, best.pt.

    front   masks that no other trained mask beats on both accuracy and energy
    best    the most accurate mask at or under --max-energy-mj; else, for the scalar objective,
            the highest J; else the front's knee: with accuracy and energy scaled to [0, 1] over
            the front, the point farthest from the chord joining its cheapest and its most
            accurate ends (where giving up energy stops buying accuracy)
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from firecut.ablate import dominates, pareto_front
from firecut.errors import FirecutError
from firecut.pruning.masks import keep_of
from firecut.io import atomic_write_text
from firecut.pruning.schedules import FIRE_NAMES
from firecut.search.storage import redact, storage_errors

COLUMNS = ("trial", "mask", "source", "state", "acc", "f1", "energy_mj", "ac", "mac", "params",
           "firing_rate", "train_seconds", "objective", "on_front", "host", "run")


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per trained mask (repeats, yields and failures left out), in trial order."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if a.get("status") == "repeat" or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        row = {"trial": t.number, "mask": a["mask"], "keep": list(keep_of(a["mask"])),
               "source": a.get("source", "sampler"), "state": t.state.name.lower(),
               "host": a.get("host"), "run": a.get("run")}
        for k in ("acc", "f1", "energy_mj", "ac", "mac", "params", "firing_rate", "train_seconds"):
            row[k] = a.get(k)
        if row["acc"] is None and t.intermediate_values:  # pruned: its last report
            row["objective"] = t.intermediate_values[max(t.intermediate_values)]
        else:
            row["objective"] = t.values[0] if t.values and len(t.values) == 1 else None
        rows.append(row)
    complete = [r for r in rows if r["state"] == "complete"]
    front = {complete[i]["trial"] for i in pareto_front([(r["energy_mj"], r["acc"]) for r in complete])}
    for r in rows:
        r["on_front"] = r["trial"] in front
    return rows


def knee(front: list[dict[str, Any]]) -> dict[str, Any]:
    """The front point farthest from the chord between its cheapest and most accurate ends."""
    pts = sorted(front, key=lambda r: r["energy_mj"])
    if len(pts) <= 2:
        return max(pts, key=lambda r: r["acc"])
    e0, e1 = pts[0]["energy_mj"], pts[-1]["energy_mj"]
    a0, a1 = min(r["acc"] for r in pts), max(r["acc"] for r in pts)

    def unit(r):  # (energy, acc) scaled to [0, 1] over the front
        return ((r["energy_mj"] - e0) / ((e1 - e0) or 1.0), (r["acc"] - a0) / ((a1 - a0) or 1.0))

    (x0, y0), (x1, y1) = unit(pts[0]), unit(pts[-1])
    norm = math.hypot(x1 - x0, y1 - y0) or 1.0
    def distance(r):  # from the chord, in scaled units
        x, y = unit(r)
        return abs((y1 - y0) * x - (x1 - x0) * y + x1 * y0 - y1 * x0) / norm

    return max(pts, key=distance)


def choose_best(rows: list[dict[str, Any]], objective: str, max_energy_mj: float | None):
    """(row, reason) per the module docstring's rule."""
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        raise FirecutError("the study holds no finished trial yet; re-run the search to train some")
    front = [r for r in done if r["on_front"]]
    if max_energy_mj is not None:
        fits = [r for r in done if r["energy_mj"] <= max_energy_mj]
        if fits:
            best = max(fits, key=lambda r: (r["acc"], -r["energy_mj"]))
            return best, (f"the most accurate of {len(fits)} masks at or under --max-energy-mj "
                          f"{max_energy_mj:g} mJ")
        cheapest = min(r["energy_mj"] for r in done)
        reason = (f"no mask is at or under --max-energy-mj {max_energy_mj:g} mJ (the cheapest uses "
                  f"{cheapest:.5f} mJ), so the front's knee")
        return knee(front), reason
    if objective == "scalar":
        best = max(done, key=lambda r: r["objective"])
        return best, "the highest J = acc - lambda x relative energy"
    return knee(front), (f"the knee of the {len(front)}-mask Pareto front (farthest from the chord "
                         "between its cheapest and most accurate masks)")


def paper_front_beaten(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Masks not from the paper that no paper schedule (trained in this study) dominates."""
    paper = [r for r in rows if r["state"] == "complete" and r["source"].startswith("paper:")]
    found = [r for r in rows if r["state"] == "complete" and not r["source"].startswith("paper:")]
    point = lambda r: (r["energy_mj"], r["acc"])
    return [r for r in found if not any(dominates(point(p), point(r)) for p in paper)] if paper else []


def _row_md(r: dict[str, Any]) -> str:
    marks = " | ".join("✓" if b == "1" else "–" for b in r["mask"])
    return (f"| {r['trial']} | {marks} | {r['acc']:.4f} | {r['params']:,} | {r['energy_mj']:.5f} | "
            f"{r['source']} |")


def pareto_markdown(rows, best, reason, cfg, url: str, running: int = 0) -> str:
    head = ("| Trial | " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES) +
            " | Acc | Params | Energy (mJ) | Source |\n|" + "---|" * (len(FIRE_NAMES) + 5))
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["energy_mj"])
    done = [r for r in rows if r["state"] == "complete"]
    lines = [f"# Mask search: {cfg.study} ({cfg.objective})", "",
             f"{len(rows)} masks trained ({len(done)} finished, {len(rows) - len(done)} pruned) in "
             f"{redact(url)}; {len(front)} on the Pareto front (accuracy up, energy down).", "",
             *([f"{running} more trial(s) are still training on other workers: the last worker to "
                "stop writes the complete report (or re-run this search to refresh it).", ""]
               if running else []),
             "## Pareto front", "", head, *map(_row_md, front), "",
             "## Chosen (best.pt)", "", head, _row_md(best), "", f"Chosen as {reason}.", ""]
    beaten = paper_front_beaten(rows)
    paper = [r for r in done if r["source"].startswith("paper:")]
    if paper:
        lines += ["## Against the paper's schedules (trained in this study, same settings)", "",
                  f"{len(beaten)} found mask(s) on or beyond the front of the {len(paper)} paper "
                  "schedules (no paper schedule is both as accurate and as cheap):", ""]
        lines += [head, *map(_row_md, sorted(beaten, key=lambda r: r["energy_mj"]))] if beaten else ["(none)"]
        lines.append("")
    return "\n".join(lines)


def trials_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot_pareto(rows: list[dict[str, Any]], best: dict[str, Any], path: Path) -> None:
    from firecut.plots import save_tradeoff, tradeoff_axes

    done = [r for r in rows if r["state"] == "complete"]
    front = sorted((r for r in done if r["on_front"]), key=lambda r: r["energy_mj"])
    fig, ax = tradeoff_axes()
    ax.scatter([r["energy_mj"] for r in done], [r["acc"] for r in done], s=18, color="tab:blue",
               alpha=0.6, label="trained masks")
    ax.plot([r["energy_mj"] for r in front], [r["acc"] for r in front], color="tab:red", lw=1.5,
            marker="o", label="Pareto front")
    paper = [r for r in done if r["source"].startswith("paper:")]
    if paper:
        ax.scatter([r["energy_mj"] for r in paper], [r["acc"] for r in paper], marker="s",
                   facecolors="none", edgecolors="k", s=60, label="paper schedules (same settings)")
        for r in paper:
            ax.annotate(r["source"][6:], (r["energy_mj"], r["acc"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
    ax.scatter([best["energy_mj"]], [best["acc"]], marker="*", s=220, color="gold", edgecolors="k",
               zorder=5, label="chosen (best.pt)")
    save_tradeoff(fig, ax, path)


def write_best(best: dict[str, Any], reason: str, out: Path) -> str | None:
    """OUT/best.pt: the chosen mask's final checkpoint (without optimizer state). Returns a note
    when the chosen mask was trained on another machine and its checkpoint is not here."""
    from firecut.checkpoint import load_checkpoint, save_checkpoint

    src = Path(best["run"] or "") / "last.pt"
    if not src.is_file():
        (out / "best.pt").unlink(missing_ok=True)  # never leave another mask's checkpoint as best
        import socket

        where = "" if best["host"] == socket.gethostname() else f" on {best['host']}"
        return (f"no best.pt: the chosen mask's checkpoint (trial {best['trial']}) is {src}{where}, "
                "not here; copy it from there")
    ckpt = load_checkpoint(src)
    for k in ("optimizer", "scheduler"):
        ckpt.pop(k, None)
    ckpt["search"] = {"trial": best["trial"], "mask": best["mask"], "reason": reason}
    save_checkpoint(ckpt, out / "best.pt")
    return None


def write_reports(cfg, study, url: str, out: Path) -> dict[str, Any]:
    from optuna.trial import TrialState

    with storage_errors(url):
        rows = trial_rows(study)
        running = sum(t.state == TrialState.RUNNING and t.user_attrs.get("status") == "confirmed"
                      for t in study.get_trials(deepcopy=False))
    best, reason = choose_best(rows, cfg.objective, cfg.max_energy_mj)
    atomic_write_text(out / "trials.csv", trials_csv(rows))
    atomic_write_text(out / "pareto.md", pareto_markdown(rows, best, reason, cfg, url, running))
    plot_pareto(rows, best, out / "pareto.png")
    note = write_best(best, reason, out)
    report = {"rows": rows, "front": [r for r in rows if r["on_front"]], "best": best, "reason": reason,
              "best_pt": None if note else str(out / "best.pt"), "note": note,
              "beyond_paper": paper_front_beaten(rows), "running": running}
    atomic_write_text(out / "best.json", json.dumps({"best": best, "reason": reason, "note": note},
                                                    indent=2) + "\n")
    return report
