"""Does a search rung rank networks as the full recipe does? Kendall's tau on networks whose
full-recipe SNN accuracy was measured elsewhere (Table 3 by the recipe, BENCHMARKS.md).

Reads a `firecut search --retrain recipe` folder's networks.csv (each network's accuracy, its CNN's
accuracy and its energy at every rung it reached) and NAME=ACC pairs: a Table 3 schedule name (or
a keep mask as 8 bits) and its full-recipe SNN accuracy. Prints, for each rung, the networks it
judged of those given and the tau of its SNN accuracy, of its CNN's accuracy and of energy alone
(in whichever direction agrees better; "lower first" is given too) against the given accuracies.

    python benchmarks/search_tau.py runs/search-full Baseline=0.805 Head-1=0.830 Tail-1=0.817 \
        Alt-1=0.833 Ref-1=0.800 Ref-2=0.814
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from firecut.pruning.masks import bits_of
from firecut.pruning.schedules import load_schedules
from firecut.search.ladder import kendall_tau


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="a recipe-mode search folder (its networks.csv)")
    ap.add_argument("full", nargs="+",
                    help="NAME=ACC: a schedule name or 8-bit mask, and its full-recipe SNN accuracy")
    args = ap.parse_args()
    named = {s.name: bits_of(s.keep) for s in load_schedules("paper.yaml")}
    truth: dict[str, tuple[str, float]] = {}
    for pair in args.full:
        name, acc = pair.split("=")
        bits = named.get(name, name)
        truth[bits] = (name, float(acc))
    rows = list(csv.DictReader((args.out / "networks.csv").open()))
    by_mask = {m: r for r in rows for m in r["masks"].split()}
    rungs = sorted({int(k.split("@")[1]) for k in rows[0] if k.startswith("acc@")}) if rows else []
    print("| rung | networks | SNN acc | CNN acc | energy alone | energy, lower first |")
    print("|---|---|---|---|---|---|")
    for k in rungs:
        have = [(by_mask[b], acc) for b, (_, acc) in truth.items() if b in by_mask and by_mask[b][f"acc@{k}"]]
        if len(have) < 2:
            continue
        full = [acc for _, acc in have]
        col = lambda key: [float(r[f"{key}@{k}"]) for r, _ in have]  # noqa: E731
        e = col("energy_mj")
        taus = (kendall_tau(col("acc"), full), kendall_tau(col("cnn_acc"), full), abs(kendall_tau(e, full)),
                kendall_tau([-x for x in e], full))
        print(f"| {k} | {len(have)} | " + " | ".join(f"{t:.2f}" for t in taus) + " |")
    for b, (name, acc) in truth.items():
        r = by_mask.get(b)
        got = (" ".join(f"r{k}: {float(r[f'acc@{k}']):.4f}" for k in rungs if r[f"acc@{k}"]) if r
               else "not judged")
        print(f"  {name:9s} full {acc:.4f}  {got}")


if __name__ == "__main__":
    main()
