"""The recipe-mode search's outputs, read back from its study: networks.csv, pareto.md, pareto.png,
best.json and best.pt.

    a network's figures   those of the highest rung it reached (at the full budget: the mean over
                          the seeds it was trained with, its confirm run included)
    front                 the networks of the last rung that no other one beats on both accuracy
                          and energy
    best                  among the last rung's networks, search.report.choose_best's rule (the
                          most accurate at or under --max-energy-mj, else the front's knee)
    tau                   for each lower rung, Kendall's tau between its accuracies and the last
                          rung's, over the networks trained at both, beside energy alone's (the
                          rung's energies, in whichever direction agrees better): a rung that does
                          not beat energy alone is not a ranking
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from firecut.ablate import pareto_front
from firecut.io import atomic_write_text
from firecut.pruning.masks import keep_of, pattern
from firecut.pruning.schedules import FIRE_NAMES
from firecut.search.ladder import Ladder, Rung, kendall_tau
from firecut.search.storage import redact

COLUMNS = ("network", "masks", "names", "modules", "rung", "epochs", "seeds", "acc", "acc_std", "f1",
           "energy_mj", "ac", "mac", "params", "firing_rate", "cnn_acc", "cpu_seconds", "wall_seconds",
           "on_front", "run")


def network_rows(lad: Ladder) -> list[dict[str, Any]]:
    """One row per network judged at some rung, in the space's order (see the module docstring)."""
    top = max(r.index for r in lad.rungs if not r.confirm)
    rows = []
    for net in lad.networks:
        done = [(r, lad.trial(net.bits, r.index)) for r in lad.rungs if lad.result(net.bits, r.index)]
        if not done:
            continue
        reached = max(r.index for r, _ in done if not r.confirm)
        final = [t.user_attrs for r, t in done if r.index == reached or (r.confirm and reached == top)]
        rung = lad.rungs[reached]
        row: dict[str, Any] = {
            "network": net.bits, "masks": list(net.masks), "names": list(net.names),
            "modules": len(keep_of(net.bits)), "rung": reached,
            "epochs": f"{rung.cnn_epochs}+{rung.snn_epochs}", "seeds": len(final),
            "acc": mean(a["acc"] for a in final),
            "acc_std": stdev([a["acc"] for a in final]) if len(final) > 1 else None,
            "cpu_seconds": sum(float(t.user_attrs.get("cpu_seconds", 0.0)) for _, t in done),
            "wall_seconds": sum(float(t.user_attrs.get("wall_seconds", 0.0)) for _, t in done),
            "run": final[0].get("run"), "host": final[0].get("host"),
            "by_rung": {r.index: {"acc": t.user_attrs["acc"], "energy_mj": t.user_attrs["energy_mj"],
                                  "cnn_acc": t.user_attrs.get("cnn_acc")} for r, t in done},
        }
        for k in ("f1", "energy_mj", "ac", "mac", "firing_rate", "cnn_acc"):
            row[k] = mean(float(a[k]) for a in final)
        row["params"] = final[0]["params"]
        rows.append(row)
    at_top = [r for r in rows if r["rung"] == top]
    front = {at_top[i]["network"] for i in pareto_front([(r["energy_mj"], r["acc"]) for r in at_top])}
    for r in rows:
        r["on_front"] = r["network"] in front
    return rows


def tau_table(rows: list[dict[str, Any]], rungs: list[Rung]) -> list[dict[str, Any]]:
    """Per lower rung: tau of its accuracy and of energy alone against the last rung's accuracy,
    over the networks that reached the last rung (see the module docstring)."""
    top = max(r.index for r in rungs if not r.confirm)
    final = [r for r in rows if r["rung"] == top]
    out = []
    for rung in rungs:
        if rung.confirm or rung.index == top:
            continue
        both = [r for r in final if rung.index in r["by_rung"]]
        truth = [r["acc"] for r in both]
        acc = [r["by_rung"][rung.index]["acc"] for r in both]
        energy = [r["by_rung"][rung.index]["energy_mj"] for r in both]
        cnn = [r["by_rung"][rung.index]["cnn_acc"] for r in both]
        out.append({"rung": rung.index, "networks": len(both), "tau_acc": kendall_tau(acc, truth),
                    "tau_cnn_acc": kendall_tau(cnn, truth),
                    "tau_energy": abs(kendall_tau(energy, truth)) if len(both) > 1 else float("nan")})
    return out


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None or x != x else format(x, spec)


def _row_md(r: dict[str, Any]) -> str:
    marks = " | ".join("✓" if b == "1" else "–" for b in r["network"])
    twins = ", ".join(m for m in r["masks"][1:]) or "–"
    acc = f"{r['acc']:.4f}" + (f" ± {r['acc_std']:.4f}" if r["acc_std"] is not None else "")
    return (f"| {marks} | {', '.join(r['names']) or '–'} | {acc} | {r['energy_mj']:.5f} | {r['params']:,} | "
            f"{r['epochs']} | {twins} |")


HEAD = ("| " + " | ".join(f"F{m[4:]}" for m in FIRE_NAMES) + " | Paper name | SNN acc | Energy (mJ) | "
        "Params | Epochs (CNN+SNN) | Twin masks |\n|" + "---|" * (len(FIRE_NAMES) + 6))


def pareto_markdown(rows, rungs: list[Rung], lad: Ladder, best, reason, cfg, url: str) -> str:
    top = max(r.index for r in rungs if not r.confirm)
    hours = sum(r["wall_seconds"] for r in rows) / 3600
    steps = sum(r["cpu_seconds"] for r in rows) / 3600
    lines = [f"# Network search: {cfg.study} (each network trained as its own net, successive halving)", "",
             f"{len(lad.networks)} distinct networks in the space ({sum(len(n.masks) for n in lad.networks)} "
             f"keep masks); {len(rows)} judged in {redact(url)}; {hours:.2f} hours of the workers' time "
             f"in all ({steps:.2f} of them training steps, the rest test passes and counting).", "",
             "| Rung | CNN + SNN epochs | Seed | Networks | Finished |", "|---|---|---|---|---|"]
    for r, mem in zip(rungs, lad.members, strict=True):
        done = sum(lad.result(b, r.index) is not None for b in mem) if mem else 0
        name = "confirm" if r.confirm else str(r.index)
        lines.append(f"| {name} | {r.cnn_epochs} + {r.snn_epochs} | {r.seed} | {r.size} | {done} |")
    at_top = sorted((r for r in rows if r["rung"] == top), key=lambda r: -r["acc"])
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["energy_mj"])
    lines += ["", "## The last rung's networks (full budget), most accurate first", "", HEAD,
              *map(_row_md, at_top), "", "## Pareto front (last rung: accuracy up, energy down)", "", HEAD,
              *map(_row_md, front), ""]
    if best is not None:
        lines += ["## Chosen (best.pt)", "", HEAD, _row_md(best), "", f"Chosen as {reason}.", ""]
    taus = tau_table(rows, rungs)
    if taus:
        lines += ["## Does a low rung rank like the full recipe?", "",
                  "Kendall's tau against the last rung's SNN accuracy, over the networks trained at both:",
                  "", "| Rung | Networks | SNN accuracy | its CNN's accuracy | energy alone |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t['rung']} | {t['networks']} | {_fmt(t['tau_acc'], '.2f')} | "
                  f"{_fmt(t['tau_cnn_acc'], '.2f')} | {_fmt(t['tau_energy'], '.2f')} |" for t in taus]
        lines.append("")
    return "\n".join(lines)


def networks_csv(rows: list[dict[str, Any]], rungs: list[Rung]) -> str:
    """COLUMNS, then each rung's figures: acc@K, cnn_acc@K, energy_mj@K (empty where not reached)."""
    per = [f"{k}@{r.index}" for r in rungs if not r.confirm for k in ("acc", "cnn_acc", "energy_mj")]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, *per], extrasaction="ignore")
    w.writeheader()
    for r in rows:
        at = {f"{k}@{i}": v for i, got in r["by_rung"].items() for k, v in got.items()}
        w.writerow({**r, **at, "masks": " ".join(r["masks"]), "names": " ".join(r["names"])})
    return buf.getvalue()


def plot_networks(rows: list[dict[str, Any]], rungs: list[Rung], best, path: Path) -> None:
    """Every judged network at the budget it reached (one colour per rung), the last rung's front."""
    from firecut.plots import save_tradeoff, tradeoff_axes

    fig, ax = tradeoff_axes()
    for rung in (r for r in rungs if not r.confirm):
        mine = [r for r in rows if r["rung"] == rung.index]
        if mine:
            label = f"stopped at rung {rung.index} ({rung.cnn_epochs}+{rung.snn_epochs} epochs)"
            ax.scatter([r["energy_mj"] for r in mine], [r["acc"] for r in mine], s=14 + 10 * rung.index,
                       alpha=0.7, label=label)
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["energy_mj"])
    ax.plot([r["energy_mj"] for r in front], [r["acc"] for r in front], color="tab:red", lw=1.2,
            label="front (full budget)")
    for r in rows:
        if r["names"] and r["on_front"] or (best is not None and r is best):
            ax.annotate(pattern(r["network"]), (r["energy_mj"], r["acc"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=6)
    if best is not None:
        ax.scatter([best["energy_mj"]], [best["acc"]], marker="*", s=220, color="gold", edgecolors="k",
                   zorder=5, label="chosen (best.pt)")
    save_tradeoff(fig, ax, path)


def write_ladder_reports(cfg, lad: Ladder, url: str, out: Path) -> dict[str, Any]:
    """pareto.md, networks.csv, pareto.png, best.json and (when the last rung has finished
    networks) best.pt; returns the report the command prints from."""
    from firecut.search.report import choose_best, write_best

    rows = network_rows(lad)
    top = max(r.index for r in lad.rungs if not r.confirm)
    at_top = [{**r, "state": "complete", "trial": r["network"], "mask": r["network"]}
              for r in rows if r["rung"] == top]
    best, reason, note = None, "the last rung has no finished network yet", None
    if at_top:
        best, reason = choose_best(at_top, "pareto", cfg.max_energy_mj)
        reason = reason.replace("masks", "networks").replace("-mask", "-network")
    atomic_write_text(out / "networks.csv", networks_csv(rows, lad.rungs))
    atomic_write_text(out / "pareto.md", pareto_markdown(rows, lad.rungs, lad, best, reason, cfg, url))
    plot_networks(rows, lad.rungs, best, out / "pareto.png")
    if best is not None:
        note = write_best(best, reason, out)
    else:
        (out / "best.pt").unlink(missing_ok=True)
    atomic_write_text(out / "best.json", json.dumps({"best": best, "reason": reason, "note": note},
                                                    indent=2, default=str) + "\n")
    return {"rows": rows, "front": [r for r in rows if r["on_front"]], "best": best, "reason": reason,
            "best_pt": None if (note or best is None) else str(out / "best.pt"), "note": note,
            "taus": tau_table(rows, lad.rungs), "networks": len(lad.networks)}
