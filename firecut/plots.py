"""The accuracy-against-energy figure that the ablation and the search both draw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firecut.runs import atomic_write_bytes


def tradeoff_axes() -> tuple[Any, Any]:
    """A fresh (figure, axes), with matplotlib on its file-only backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 5))


def save_tradeoff(fig: Any, ax: Any, path: Path) -> None:
    """Labels, grid and legend; written atomically as PNG; the figure closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("energy per image (mJ)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
