"""Two processes, one --out: the second is refused at once, naming the first; nothing is written."""

import subprocess
import sys
import time

import pytest

from conftest import REPO, assert_user_error, run_cli

HOLD = """
import sys, time
from firecut.runs import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """OUT, held by another process (which `firecut ...` would be) for the test's duration."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    yield out, proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "synthetic", "--cnn", "--epochs", "1"],
    ["ablate", "--dataset", "synthetic"],
    ["benchmark", "--dataset", "synthetic", "--models", "squeezenet"],
])
def test_a_second_process_on_the_same_out_is_refused(held, command):
    out, pid = held
    before = sorted(p.name for p in out.iterdir())
    t0 = time.monotonic()
    proc = run_cli(*command, "--out", str(out))
    assert_user_error(proc, f"{out} is in use by process {pid}", "use another --out")
    assert time.monotonic() - t0 < 60  # refused up front, not after training
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written


def test_the_lock_goes_with_its_holder(held):
    """A holder that dies (kill -9 included) frees the folder for the next run."""
    from firecut.runs import folder_lock

    out, pid = held
    subprocess.run(["kill", "-9", str(pid)], check=True)
    time.sleep(0.5)
    with folder_lock(out):
        assert (out / ".firecut.lock.owner").read_text().startswith("process ")
    assert not (out / ".firecut.lock.owner").exists()
