"""The trade-off figure is drawn without touching matplotlib's global state (a notebook's backend)."""

import subprocess
import sys


def test_drawing_the_figure_leaves_the_users_backend_alone(tmp_path):
    code = f"""
import sys, matplotlib
matplotlib.use("svg")  # the user's choice, e.g. a notebook's inline backend
from firecut.plots import save_tradeoff, tradeoff_axes
fig, ax = tradeoff_axes()
ax.scatter([0.01, 0.02], [0.5, 0.6], label="runs")
save_tradeoff(fig, ax, __import__("pathlib").Path(r"{tmp_path / 'f.png'}"))
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["svg", "False"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
