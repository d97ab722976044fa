"""A full disk: every file firecut writes is whole or untouched, the user reads one line, and the
same command resumes once space is free."""

import errno
import io
import subprocess
import sys

import pytest
import torch

from firecut.errors import FirecutError
from firecut.io import atomic_write_bytes, atomic_write_text

from conftest import REPO, assert_user_error


def enospc():
    return OSError(errno.ENOSPC, "No space left on device")


class FillsUp(io.RawIOBase):
    """A file that takes `room` bytes, then reports a full disk."""

    def __init__(self, inner, room: int):
        self.inner, self.room = inner, room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            raise enospc()
        self.room -= len(b)
        return self.inner.write(b)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "table.md"
    atomic_write_text(path, "old, whole\n")
    with pytest.raises(FirecutError, match="no space left on the device holding .*re-run the same command"):
        atomic_write_bytes(path, lambda f: FillsUp(f, 3).write(b"new and longer"))
    assert path.read_text() == "old, whole\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]


def test_torch_save_reporting_a_full_disk_as_runtime_error_is_recognised(tmp_path):
    """torch.save raises RuntimeError('unexpected pos ...') with the OSError as its context."""
    with pytest.raises(FirecutError, match="no space left"):
        atomic_write_bytes(tmp_path / "last.pt", lambda f: torch.save({"w": torch.zeros(10_000)},
                                                                      FillsUp(f, 1000)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code,what,fix", [
    (errno.EDQUOT, "the disk quota is exceeded on the device holding", "raise the quota"),
    (errno.EFBIG, "a file outgrew the file-size limit (ulimit -f) in", "ulimit -f unlimited"),
    (errno.EROFS, "the file system is read-only at", "a writable file system"),
    (errno.EIO, "an input/output error while writing in", "check the disk"),
    (errno.EACCES, "permission denied writing in", "make the folder writable"),
])
def test_every_failed_write_is_one_line_naming_the_folder_and_the_cause(tmp_path, code, what, fix):
    """Raised by a write, and (torch.save's way) as the context of a RuntimeError."""
    def fails(f):
        raise OSError(code, "the OS's words")

    def torch_fails(f):
        try:
            fails(f)
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")  # noqa: B904

    for writer in (fails, torch_fails):
        with pytest.raises(FirecutError) as e:
            atomic_write_bytes(tmp_path / "x", writer)
        assert str(e.value).startswith(f"{what} {tmp_path}: ") and fix in str(e.value)
        assert "re-run the same command" in str(e.value)
        assert list(tmp_path.iterdir()) == []


def test_a_failed_write_of_another_kind_is_not_dressed_up(tmp_path):
    def fails(f):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError, match="Bad file descriptor"):
        atomic_write_bytes(tmp_path / "x", fails)


# A subprocess whose writes into files whose path contains FULL fail with ENOSPC (Linux: the path
# of an open descriptor is read from /proc), then runs the CLI's main.
FULL_DISK = """
import errno, io, os, sys
FULL = sys.argv.pop(1)
real_fdopen = os.fdopen
class Full(io.BufferedWriter):
    def write(self, b):
        raise OSError(errno.ENOSPC, "No space left on device")
def fdopen(fd, mode="r", *a, **k):
    if "w" in mode and FULL in os.readlink(f"/proc/self/fd/{fd}"):
        return Full(io.FileIO(fd, "w"))
    return real_fdopen(fd, mode, *a, **k)
os.fdopen = fdopen
real_open = io.open
def open_(file, mode="r", *a, **k):
    if "w" in mode and FULL in str(file):
        raise OSError(errno.ENOSPC, "No space left on device", str(file))
    return real_open(file, mode, *a, **k)
io.open = open_
import builtins; builtins.open = open_
from firecut.cli import main
sys.argv[0] = "firecut"
main()
"""


def run_with_full_disk(full: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FULL_DISK, full, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)


needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


@needs_proc
def test_schedules_generate_on_a_full_disk_keeps_the_users_file(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("- name: Mine\n  keep: [fire2, fire3]\n")
    proc = run_with_full_disk("mine.yaml", "schedules", "generate", "--family", "head", "-o", str(mine))
    assert_user_error(proc, "no space left", str(tmp_path))
    assert mine.read_text() == "- name: Mine\n  keep: [fire2, fire3]\n"  # not truncated
    assert [p.name for p in tmp_path.iterdir()] == ["mine.yaml"]


@needs_proc
def test_training_on_a_full_disk_stops_in_one_line_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--cnn", "--epochs", "2", "--batch-size", "128",
            "--device", "cpu", "--quiet", "--out", str(out)]
    proc = run_with_full_disk("best.pt", *args)  # the first checkpoint of the first epoch
    assert_user_error(proc, "no space left", "re-run the same command")
    left = {p.name for p in out.iterdir()}
    assert "summary.json" not in left and "best.pt" not in left
    assert not [n for n in left if n.endswith(".tmp")]
    again = subprocess.run([sys.executable, "-m", "firecut", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (out / "summary.json").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 2


def test_a_write_into_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(FirecutError, match="cannot write .*t1.md .*check that its folder exists"):
        atomic_write_text(tmp_path / "no" / "such" / "t1.md", "table")


def test_an_unwritable_lock_is_one_line(tmp_path):
    from firecut.runs import folder_lock

    (tmp_path / "out" / ".firecut.lock").mkdir(parents=True)  # the lock file cannot be opened
    with pytest.raises(FirecutError, match="cannot write to --out .*choose a writable folder"):
        with folder_lock(tmp_path / "out"):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE as on Linux")
def test_a_file_size_limit_stops_training_in_one_line_and_the_same_command_resumes(tmp_path):
    """`ulimit -f` below a checkpoint's size: torch.save fails with EFBIG (Python ignores SIGXFSZ),
    which used to end in torch's 'unexpected pos' traceback."""
    import resource

    out = tmp_path / "run"
    args = [sys.executable, "-m", "firecut", "train", "--dataset", "synthetic", "--cnn", "--epochs", "1",
            "--set", "model.width=0.25", "--batch-size", "128", "--device", "cpu", "--quiet",
            "--out", str(out)]

    def limit():  # 64 kB: config and logs fit, a checkpoint (200 kB at width 0.25) does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))

    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert_user_error(proc, f"a file outgrew the file-size limit (ulimit -f) in {out}",
                      "re-run the same command")
    assert not (out / "summary.json").exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (out / "summary.json").is_file()
