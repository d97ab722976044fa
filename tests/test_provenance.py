"""env.json names the commit a run's code came from, so that a figure can be traced to it."""

import subprocess

from firecut.runs import source_commit


def git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_and_whether_tracked_files_changed_since(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "new.txt").write_text("untracked files do not make it dirty\n")
    assert source_commit(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == {"commit": head, "dirty": True}


def test_no_commit_outside_its_own_checkout(tmp_path):
    assert source_commit(tmp_path) == {}  # not a repository at all
    git(tmp_path, "init", "-q")
    (tmp_path / "site-packages").mkdir()
    assert source_commit(tmp_path / "site-packages") == {}  # inside some other repository
