"""Shared test helpers: where the real data lives, and a CLI runner in a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FIRECUT_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"real-data test: {path} is absent (it ships beside the repo in CI; "
                    "set FIRECUT_SHARED_DATA to its folder)")
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m firecut ARGS` as a user runs it: exit code, stdout and stderr."""
    return subprocess.run([sys.executable, "-m", "firecut", *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=cli_env())


def cli_env() -> dict[str, str]:
    """The test process's environment (as a test may have set it), unbuffered, at a fixed width."""
    return dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")


# Runs `firecut.cli.main` once per argv in one interpreter: what a user's shell would show for each
# (exit code, stdout, stderr; an escaping exception as its traceback, exit 1), at one start-up's cost.
_MANY = r"""
import contextlib, io, json, sys, traceback
from firecut.cli import main
results = []
for argv in json.loads(sys.stdin.read()):
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = ["firecut", *argv]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_cli_many(*argvs: list, cwd: Path | None = None,
                 timeout: int = 600) -> list[subprocess.CompletedProcess]:
    """Like run_cli for each argv, in one subprocess (for the quick refusals: a start-up each
    would cost ~3 s of imports)."""
    import json

    argvs = [[str(a) for a in argv] for argv in argvs]
    proc = subprocess.run([sys.executable, "-c", _MANY], input=json.dumps(argvs), cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    return [subprocess.CompletedProcess(["firecut", *argv], code, out, err)
            for argv, (code, out, err) in zip(argvs, json.loads(proc.stdout.splitlines()[-1]), strict=True)]


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, no traceback, and one 'firecut: error:' line naming the problem."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("firecut: error:")]
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def pytest_collection_modifyitems(config, items):
    """GPU-only tests run where torch sees CUDA, and skip (with the reason) elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def experiment(cls, **kw):
    """An ablation/search/benchmark settings object from flat keywords: the recipe's fields go into
    its RecipeConfig, the rest are the experiment's own."""
    from dataclasses import fields

    from firecut.config import RecipeConfig

    names = {f.name for f in fields(RecipeConfig)}
    return cls(RecipeConfig(**{k: v for k, v in kw.items() if k in names}),
               **{k: v for k, v in kw.items() if k not in names})


def quiet_fit(cfg, out):
    """The experiments' `fit`, imported late (torch stays out of collection)."""
    from firecut.training.loop import fit

    return fit(cfg, out)


def counting(trained: list, parts: int = 1):
    """quiet_fit that appends to `trained` the last `parts` components of the folder of each run
    it trains ("run" or "model/run"); a run found complete is only read back."""
    from firecut.runs import RunFolder

    def fit(cfg, out):
        if not RunFolder(out).complete:
            trained.append("/".join(str(out).split("/")[-parts:]))
        return quiet_fit(cfg, out)
    return fit
