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
    """`python -m firecut ARGS` as a user runs it: exit code, stdout and stderr, from a process of
    its own (forked from a zygote that has imported torch once, see _Zygote)."""
    return _zygote().run([str(a) for a in args], cwd=cwd or REPO, env=cli_env(), timeout=timeout)


# `import torch` costs 2-4 s on the 2-core CI machine, the first optimizer another 2 (torch.optim
# imports torch._dynamo), and the suite starts ~60 CLI processes. The zygote is one interpreter that
# imports torch, torch._dynamo and numpy (nothing of firecut's, and runs no op, so it holds no
# thread pool) and forks a child per call. The child is a fresh process in every way a
# test can see: its own pid, argv, cwd, environment, stdin (/dev/null), stdout and stderr (files),
# exit code and signals; it imports firecut itself and runs `python -m firecut` via runpy, then
# Python's own shutdown steps (non-daemon threads joined, atexit handlers) before it exits.
_ZYGOTE = r"""
import atexit, json, os, runpy, sys, threading, traceback
import numpy, torch, torch._dynamo  # the shared cost, paid once (torch.optim imports _dynamo: 2 s)
for line in sys.stdin:
    argv, cwd, env, out, err = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY), (2, err, os.O_WRONLY)):
            f = os.open(path, mode)
            os.dup2(f, fd)
            os.close(f)
        sys.stdin = open(0, closefd=False)
        enc = sys.stdout.encoding  # what a piped python would pick: the locale's
        sys.stdout = open(1, "w", encoding=enc, buffering=1, closefd=False)
        sys.stderr = open(2, "w", encoding=enc, errors="backslashreplace", buffering=1, closefd=False)
        sys.argv, sys.path[0] = ["-m", *argv], cwd
        code = 0
        try:
            runpy.run_module("firecut", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        try:
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class _Zygote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=REPO, env=cli_env())

    def run(self, argv: list[str], cwd: Path, env: dict[str, str],
            timeout: float) -> subprocess.CompletedProcess:
        import json
        import select
        import signal
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            out.touch()
            err.touch()
            self.proc.stdin.write(json.dumps([argv, str(cwd), env, str(out), str(err)]) + "\n")
            self.proc.stdin.flush()
            pid = int(self.proc.stdout.readline())
            timed_out = not select.select([self.proc.stdout], [], [], timeout)[0]
            if timed_out:
                os.kill(pid, signal.SIGKILL)
            code = int(self.proc.stdout.readline())
            stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if timed_out:
            raise subprocess.TimeoutExpired(["firecut", *argv], timeout, stdout, stderr)
        return subprocess.CompletedProcess(["firecut", *argv], code, stdout, stderr)


_ZYGOTES: list[_Zygote] = []


def _zygote() -> _Zygote:
    """One per test session, started on first use (a test that runs no command pays nothing)."""
    if not _ZYGOTES or _ZYGOTES[0].proc.poll() is not None:
        _ZYGOTES[:] = [_Zygote()]
    return _ZYGOTES[0]


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
