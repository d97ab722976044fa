"""Storage URLs: a password never reaches a message or a file; the URL may come from the environment."""

import os
import subprocess
import sys

import pytest

from firecut.config import RunConfig
from firecut.runs import RunFolder
from firecut.search.storage import redact, redact_argv

from conftest import REPO, assert_user_error


@pytest.mark.parametrize("url, shown", [
    ("postgresql://alice:s3cret@db.lab:5432/studies", "postgresql://alice:***@db.lab:5432/studies"),
    ("postgresql://:s3cret@db.lab/studies", "postgresql://:***@db.lab/studies"),
    ("postgresql://alice@db.lab/studies?password=s3cret&sslmode=require",
     "postgresql://alice@db.lab/studies?sslmode=require"),
    ("mysql+pymysql://alice:s3%40cret@db.lab/studies", "mysql+pymysql://alice:***@db.lab/studies"),
    ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
    ("journal:runs/search/journal.log", "journal:runs/search/journal.log"),
])
def test_redact_hides_every_form_of_password(url, shown):
    assert redact(url) == shown


def test_command_line_tokens_are_redacted_even_glued_to_their_flag():
    argv = ["search", "--storage=postgresql://alice:s3cret@h/db", "--storage",
            "postgresql://h/db?PASSWORD=s3cret", "--trials", "3"]
    assert "s3cret" not in " ".join(redact_argv(argv))
    assert redact_argv(argv)[-2:] == ["--trials", "3"]


def test_a_run_folder_never_records_the_password(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["firecut", "search", "--storage", "postgresql://:s3cret@h/db",
                                      "--storage=postgresql://a@h/db?password=s3cret"])
    RunFolder(tmp_path / "run").open(RunConfig())
    text = "".join(p.read_text() for p in (tmp_path / "run").iterdir())
    assert "s3cret" not in text
    assert "postgresql://:***@h/db" in (tmp_path / "run" / "command.txt").read_text()


def test_the_storage_url_can_come_from_the_environment(tmp_path):
    """FIRECUT_STORAGE is read (here: refused for its scheme, naming it without the password)."""
    env = dict(os.environ, FIRECUT_STORAGE="oracle://alice:s3cret@h/db")
    proc = subprocess.run([sys.executable, "-m", "firecut", "search", "--dataset", "synthetic",
                           "--out", str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=120)
    assert_user_error(proc, "unknown storage scheme 'oracle'", "alice:***@h")
    assert "s3cret" not in proc.stderr + proc.stdout
