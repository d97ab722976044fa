"""Two `firecut search` worker processes on one study: a real PostgreSQL server, and a journal file
(finetune mode: masks sampled by Optuna; recipe mode: the ladder, and a kill -9 of one worker).

Each test starts both workers at once on tiny settings and checks that the study ends with exactly
the requested number of trained masks, that no mask was trained twice, and that both workers
trained some. The PostgreSQL server is Debian's `postgresql` package (`.ci/run` installs it),
started here in a temporary folder on a free port and stopped afterwards.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from firecut.ablate import AblateConfig, train_base

from conftest import REPO, experiment

TRIALS = 6


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return os.path.dirname(found[-1])
    return os.path.dirname(shutil.which("pg_ctl")) if shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """postgresql://firecut@127.0.0.1:PORT/firecut on a throwaway cluster."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs Debian's postgresql package")
        pytest.skip("PostgreSQL server binaries are absent (apt-get install postgresql); CI installs them")
    # Not under pytest's tmp folder: that is private to root, and the server may run as postgres.
    root = Path(tempfile.mkdtemp(prefix="firecut-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
        pw = pwd.getpwnam("postgres")
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o755)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def pg(*cmd):
        subprocess.run([*run_as, *cmd], check=True, capture_output=True, text=True, timeout=120)

    pg(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "firecut", "--no-sync")
    pg(f"{bindir}/pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"), "-o",
       f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        pg(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "firecut", "firecut")
        yield f"postgresql://firecut@127.0.0.1:{port}/firecut"
    finally:
        pg(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    ac = experiment(AblateConfig, dataset="synthetic", root="", epochs=1, finetune_epochs=1, batch_size=64,
                    width=0.25, device="cpu", timesteps=2)
    from firecut.training.loop import fit

    return train_base(ac, out, lambda c, o: fit(c, o), lambda m: None)


def _two_workers(base, storage: str, outs) -> list[tuple[int, subprocess.CompletedProcess]]:
    """Both workers started at once; (pid, result) of each."""
    args = ["search", "--retrain", "finetune", "--dataset", "synthetic", "--trials", TRIALS, "--base", base,
            "--storage", storage,
            "--width", 0.25, "--timesteps", 2, "--finetune-epochs", 1, "--batch-size", 64,
            "--saliency-masks", 0, "--settle-s", 0.3, "--device", "cpu"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen([sys.executable, "-m", "firecut", *map(str, args), "--out", str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for out in outs]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        done.append((p.pid, subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)))
    return done


def _check_study(storage, procs):
    import optuna

    from firecut.search.storage import open_storage

    for _, p in procs:
        assert p.returncode == 0, p.stderr
    study = optuna.load_study(study_name="firecut-search", storage=open_storage(storage))
    trials = study.get_trials()
    trained = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
               and t.user_attrs.get("status") != "repeat"]
    masks = [t.user_attrs["mask"] for t in trained]
    assert len(trained) == TRIALS  # exactly the requested number, across both workers
    assert len(set(masks)) == TRIALS  # no mask trained twice
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert {t.user_attrs["pid"] for t in trained} == {pid for pid, _ in procs}  # both trained masks
    # Each worker reports the shared study as it stands when it stops: the last one all of it,
    # an earlier one says how many trials are still training elsewhere.
    reports = [p.stdout for _, p in procs]
    assert any(f"{TRIALS} masks trained" in r for r in reports)
    for r in reports:
        assert f"{TRIALS} masks trained" in r or "still training on other workers" in r
    return masks


def test_two_workers_share_a_postgresql_study(postgres, base, tmp_path):
    procs = _two_workers(base, postgres, [tmp_path / "w1", tmp_path / "w2"])
    _check_study(postgres, procs)


def test_two_workers_share_a_journal_file(base, tmp_path):
    storage = f"journal:{tmp_path / 'study.log'}"
    procs = _two_workers(base, storage, [tmp_path / "w", tmp_path / "w"])  # one OUT, shared
    masks = _check_study(storage, procs)
    assert all((tmp_path / "w" / "masks" / f"{m}-s0" / "summary.json").is_file() for m in masks)
    assert (tmp_path / "w" / "best.pt").is_file()


# ------------------------------------------------------------------------------ --retrain recipe

LADDER = ["search", "--study", "ladder", "--dataset", "synthetic", "--trials", 3, "--rungs", 2, "--eta", 3,
          "--confirm", 1, "--width", 0.25, "--timesteps", 2, "--epochs", 3, "--finetune-epochs", 1,
          "--batch-size", 64, "--device", "cpu"]
ITEMS = 3 + 1 + 1  # rung 0 (1 + 1 epochs), rung 1 (3 + 1), the confirm run (seed 1)


def _start(args, out) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="400")  # Rich wraps at 80 without it
    return subprocess.Popen([sys.executable, "-m", "firecut", *map(str, args), "--out", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def _ladder_trials(storage, study="ladder"):
    import optuna

    from firecut.search.storage import open_storage

    try:  # the PostgreSQL server is the module's: the finetune tests' study is beside this one
        return optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()
    except KeyError:  # no worker has created the study yet
        return []


def test_two_ladder_workers_on_postgresql_train_each_network_once(postgres, tmp_path):
    from firecut.search.ladder import promote

    procs = [_start([*LADDER, "--storage", postgres], tmp_path / "w") for _ in range(2)]
    done = [(p.pid, _finish(p)) for p in procs]
    for _, p in done:
        assert p.returncode == 0, p.stderr
    trials = [t for t in _ladder_trials(postgres) if t.user_attrs.get("status") == "done"]
    items = [(t.user_attrs["net"], t.user_attrs["rung"]) for t in trials]
    assert len(items) == len(set(items)) == ITEMS  # each (network, rung) trained once
    assert {t.user_attrs["pid"] for t in trials} == {pid for pid, _ in done}  # both workers trained
    runs = sorted((tmp_path / "w" / "nets").glob("*/summary.json"))
    assert len(runs) == 2 * ITEMS  # a CNN and an SNN folder per item, nothing else
    for run in runs:  # trained once: one metrics row per epoch, no restart
        cfg = yaml.safe_load((run.parent / "config.yaml").read_text())
        assert len((run.parent / "metrics.csv").read_text().splitlines()) == 1 + cfg["train"]["epochs"]
    # the rung above holds what one worker would have promoted from these results
    rung0 = {t.user_attrs["net"]: (t.values[0], t.values[1]) for t in trials if t.user_attrs["rung"] == 0}
    assert [n for n, r in items if r == 1] == promote(rung0, 1)
    for _, p in done:  # every worker waits for the whole ladder, so each reports all of it
        assert "## Pareto front" in p.stdout and p.stdout == done[0][1].stdout


def test_a_ladder_worker_killed_mid_run_is_resumed_by_the_other(tmp_path):
    """kill -9 of a worker whose CNN has finished an epoch but not its run: the other worker fails
    its trial (its pid is gone), trains the network again from its run folder (it resumes), and
    finishes the ladder."""
    import signal
    import time

    storage = f"journal:{tmp_path / 'study.log'}"
    args = ["search", "--study", "ladder", "--dataset", "synthetic", "--trials", 2, "--rungs", 1,
            "--confirm", 0, "--width", 0.25, "--timesteps", 2, "--epochs", 4, "--finetune-epochs", 1,
            "--batch-size", 64, "--device", "cpu", "--storage", storage]
    procs = {p.pid: p for p in (_start(args, tmp_path / "w") for _ in range(2))}
    victim, folder, deadline = None, None, time.time() + 300
    while victim is None and time.time() < deadline:
        time.sleep(0.2)
        for t in _ladder_trials(storage):
            a = t.user_attrs
            if t.state.name != "RUNNING" or a.get("pid") not in procs:
                continue
            cnn = tmp_path / "w" / "nets" / f"{a['net']}-e4f1-s0-cnn"
            rows = (cnn / "metrics.csv").read_text().splitlines() if (cnn / "metrics.csv").is_file() else []
            if len(rows) >= 2 and not (cnn / "summary.json").exists():  # an epoch done, the run not
                victim, folder = a["pid"], cnn
                os.kill(victim, signal.SIGKILL)
                break
    assert victim is not None, "no worker was caught mid-run"
    killed = _finish(procs.pop(victim))
    assert killed.returncode == -signal.SIGKILL
    (survivor,) = procs.values()
    other = _finish(survivor)
    assert other.returncode == 0, other.stderr
    assert "stopped without finishing" in other.stderr
    assert f"resuming {folder} after epoch" in other.stderr  # not trained again from scratch
    trials = _ladder_trials(storage)
    done = [(t.user_attrs["net"], t.user_attrs["rung"]) for t in trials
            if t.user_attrs.get("status") == "done"]
    assert len(done) == len(set(done)) == 2
    assert [t.user_attrs.get("status") for t in trials].count("stale") == 1
    assert len((folder / "metrics.csv").read_text().splitlines()) == 1 + 4
    assert (tmp_path / "w" / "best.pt").is_file()
