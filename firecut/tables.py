"""Table helpers the ablation and the benchmark share: per-seed statistics and their cells."""

from __future__ import annotations

import statistics
from typing import Any

METRICS = ("acc", "f1", "ac", "mac", "energy_mj", "firing_rate", "train_seconds")


def seed_stats(runs: list[dict[str, Any]], metrics: tuple[str, ...] = METRICS) -> dict[str, Any]:
    """For each metric over the runs of one row (one per seed): mean, std (0 for one seed) and
    the per-seed values, as METRIC, METRIC_std, METRIC_per_seed."""
    row: dict[str, Any] = {}
    for m in metrics:
        values = [float(r[m] or 0.0) for r in runs]
        row[m] = statistics.fmean(values)
        row[m + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row[m + "_per_seed"] = values
    return row


def mean_pm(row: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
    """'mean' for one seed, 'mean ± std' for several; both times `scale` (100: percent)."""
    text = format(row[key] * scale, fmt)
    return text + (" ± " + format(row[key + "_std"] * scale, fmt) if row.get("seeds", 1) > 1 else "")
