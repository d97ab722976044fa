"""Run folders: config snapshot, command, environment, metrics log, summary; resumable.

    DIR/config.yaml    the full RunConfig (re-running with other settings is refused)
    DIR/command.txt    the command line
    DIR/env.json       python, torch, device, firecut version, and its git commit when it runs from one
    DIR/metrics.csv    one row per finished epoch
    DIR/last.pt        written atomically after every epoch (resume point)
    DIR/best.pt        the epoch with the best test accuracy
    DIR/summary.json   written atomically, last: its presence means the run is complete
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

import firecut
from firecut.config import RunConfig, save_yaml, settings_diff
from firecut.errors import FirecutError
from firecut.io import atomic_write_text
from firecut.search.storage import redact_argv

IGNORED_ON_RESUME = ("train.device", "data.root")  # may change between a run and its resumption


def _flat(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml's sections as one mapping of SECTION.KEY, the form settings_diff compares."""
    return {f"{s}.{k}": v for s, sec in cfg.items() for k, v in (sec or {}).items()}


def command_line() -> str:
    """This process's command line as recorded (command.txt, a lock's owner): passwords in
    URL-looking arguments redacted."""
    return " ".join(["firecut"] + redact_argv(sys.argv[1:]))


LOCK = ".firecut.lock"  # held while a process works in a folder; OWNER beside it says who
OWNER = ".firecut.lock.owner"


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """One firecut process per output folder: a second `train`, `ablate` or `benchmark` on the
    same --out (on this machine, or another that shares the file system with working locks) is
    refused, naming the process that holds it. The OS drops the lock when its holder dies."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    lock = FileLock(folder / LOCK, timeout=0)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except Timeout:
        owner = folder / OWNER
        who = owner.read_text().strip() if owner.is_file() else "another process"
        raise FirecutError(f"{folder} is in use by {who}; wait for it to finish, or use another "
                           "--out") from None
    except OSError as e:  # a read-only or missing parent: not a traceback
        raise FirecutError(f"cannot write to --out {folder} ({e.strerror or e}); "
                           "choose a writable folder") from None
    try:
        atomic_write_text(folder / OWNER, f"process {os.getpid()} on {socket.gethostname()} "
                                          f"({command_line()})\n")
        yield
    finally:
        (folder / OWNER).unlink(missing_ok=True)
        lock.release()


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def complete(self) -> bool:
        return self.file("summary.json").is_file()

    def open(self, cfg: RunConfig, restart: bool = False) -> str:
        """Prepares the folder; returns 'new', 'resume' (last.pt present) or 'done'."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise FirecutError(f"cannot write to --out {self.path} ({e.strerror or e}); "
                               "choose a writable folder") from None
        cfg_file = self.file("config.yaml")
        has_work = self.complete or self.file("last.pt").is_file()
        if cfg_file.is_file() and has_work and not restart:
            # a setting the stored config lacks (added to RunConfig since) counts as its default
            diff = settings_diff(_flat(yaml.safe_load(cfg_file.read_text()) or {}),
                                 _flat(cfg.to_dict()), ignore=IGNORED_ON_RESUME,
                                 defaults=_flat(RunConfig().to_dict()))
            if diff:
                raise FirecutError(f"{self.path} holds a run with different settings "
                                   f"({', '.join(diff)}); use another --out, "
                                   "or --restart to replace it")
            return "done" if self.complete else "resume"
        if restart:
            for name in ("summary.json", "metrics.csv", "last.pt", "best.pt"):
                if self.file(name).exists():
                    self.file(name).unlink()
        save_yaml(cfg, cfg_file)
        atomic_write_text(self.file("command.txt"), command_line() + "\n")
        atomic_write_text(self.file("env.json"), json.dumps(environment(), indent=2) + "\n")
        if self.file("metrics.csv").exists():
            self.file("metrics.csv").unlink()
        return "new"

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Appends one row; the file is rewritten atomically, so a failed write (a full disk)
        leaves the rows before it whole."""
        f = self.file("metrics.csv")
        old = f.read_text() if f.exists() else ""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(row))
        if not old:
            w.writeheader()
        w.writerow(row)
        atomic_write_text(f, old + buf.getvalue())

    def truncate_log(self, epochs: int) -> None:
        """Keeps the first `epochs` rows (an epoch logged after the last checkpoint is redone)."""
        f = self.file("metrics.csv")
        if not f.exists():
            return
        rows = list(csv.DictReader(f.open()))
        if len(rows) > epochs:
            f.unlink()
            for r in rows[:epochs]:
                self.log_epoch(r)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.file("summary.json"), json.dumps(summary, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.file("summary.json").read_text())


def environment() -> dict[str, Any]:
    import torch

    env = {"firecut": firecut.__version__, "python": platform.python_version(),
           "torch": torch.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    env.update(source_commit(Path(firecut.__file__).resolve().parent.parent))
    return env


def source_commit(root: Path) -> dict[str, Any]:
    """The git commit firecut runs from, {"commit": sha, "dirty": bool} (dirty: tracked files
    changed since it), or {} where it is not a git checkout (an installed wheel) or git is absent."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:
            return {}  # firecut sits inside some other repository, not its own checkout
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {}
