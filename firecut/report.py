"""`firecut report`: benchmark and ablation runs of several datasets merged into one Table 1.

A benchmark folder contributes its SNN rows (benchmark.json); an ablation folder one row per
schedule, named "SqueezeNet [schedule]" (table.json, with the dataset from ablate.yaml). Only
finished runs have those files: a folder without them is refused, not half-read.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from firecut.benchmark import TABLE1_HEAD, table1_line
from firecut.config import energy_mj
from firecut.errors import FirecutError


def _read_json(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FirecutError(f"{path}: cannot read it ({e.__class__.__name__}); re-run the command "
                           "that wrote it") from None
    if not isinstance(d, dict):
        raise FirecutError(f"{path}: not a firecut result file")
    return d


def rows_of(folder: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, row) pairs of Table 1 from a benchmark or ablation folder."""
    from firecut.benchmark import display
    from firecut.data import dataset_name

    folder = Path(folder)
    if not folder.is_dir():
        raise FirecutError(f"{folder}: no such folder; give folders written by firecut benchmark "
                           "or firecut ablate")
    if (folder / "benchmark.json").is_file():
        d = _read_json(folder / "benchmark.json")
        if d.get("kind") != "firecut-benchmark" or not isinstance(d.get("rows"), list):
            raise FirecutError(f"{folder}/benchmark.json: not a firecut benchmark")
        return [(display(r["model"]), r) for r in d["rows"] if r.get("mode") == "snn"]
    if (folder / "table.json").is_file() and (folder / "ablate.yaml").is_file():
        d = _read_json(folder / "table.json")
        settings = yaml.safe_load((folder / "ablate.yaml").read_text()) or {}
        dataset = dataset_name(str(settings.get("dataset", "?")))
        return [(f"SqueezeNet [{r['schedule']}]", {**r, "dataset": dataset})
                for r in d.get("schedules", [])]
    if (folder / "benchmark.yaml").is_file() or (folder / "ablate.yaml").is_file():
        raise FirecutError(f"{folder}: the run has not finished (no tables yet); re-run its "
                           "command to complete it")
    raise FirecutError(f"{folder}: neither a benchmark nor an ablation folder; give folders written "
                       "by firecut benchmark or firecut ablate")


def recharge(row: dict[str, Any], e_ac_pj: float, e_mac_pj: float) -> dict[str, Any]:
    """The row's energy under other costs per op, from its counted AC and MAC per seed:
    E = (AC * e_AC + MAC * e_MAC) * 1e-9 mJ."""
    per_seed = [energy_mj(a, m, e_ac_pj, e_mac_pj)
                for a, m in zip(row["ac_per_seed"], row["mac_per_seed"], strict=True)]
    std = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    return {**row, "energy_mj": statistics.fmean(per_seed), "energy_mj_std": std,
            "energy_mj_per_seed": per_seed}


def merged_table1(folders: list[str], energy: tuple[float, float] | None = None) -> str:
    """Table 1 with every folder's rows, in the order given; `energy` (pJ per AC, per MAC)
    re-prices every row from its counts (default: as each run was priced)."""
    if not folders:
        raise FirecutError("give at least one run folder (firecut report runs/bench-cifar10 ...)")
    rows = [(label, row) for folder in folders for label, row in rows_of(folder)]
    if energy is not None:
        rows = [(label, recharge(row, *energy)) for label, row in rows]
    return TABLE1_HEAD + "".join(table1_line(row, label) for label, row in rows)
