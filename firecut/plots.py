"""The accuracy-against-energy figure that the ablation and the search both draw.

Object API only (matplotlib.figure.Figure, no pyplot): drawing a file leaves matplotlib's global
backend and figure list alone, so a notebook user's inline plots keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firecut.io import atomic_write_bytes


def tradeoff_axes() -> tuple[Any, Any]:
    """A fresh (figure, axes), not registered with pyplot (no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5))
    return fig, fig.subplots()


def save_tradeoff(fig: Any, ax: Any, path: Path) -> None:
    """Labels, grid and legend; written atomically as PNG."""
    ax.set_xlabel("energy per image (mJ)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=120))
