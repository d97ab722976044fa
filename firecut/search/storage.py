"""Where a search's Optuna study lives: a storage URL -> an Optuna storage, with clear errors.

    (none)                      sqlite:///OUT/study.db, one machine, any number of processes
    sqlite:///PATH              a SQLite file
    postgresql://U:P@HOST/DB    several machines (needs psycopg: pip install 'firecut[postgres]')
    mysql://U:P@HOST/DB         several machines (needs a MySQL driver, e.g. pymysql)
    journal:PATH                an append-only journal file: several processes on one machine
                                (or on a shared file system that supports file locks)

Every worker that runs the same `firecut search` against the same storage and study name joins
the same study.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from firecut.errors import FirecutError

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
SCHEMES_HELP = "sqlite:///FILE, postgresql://USER:PASS@HOST/DB, mysql://USER:PASS@HOST/DB or journal:FILE"


PASSWORD_KEYS = {"password", "passwd", "pwd"}  # query parameters some drivers take a password from


def redact(url: str) -> str:
    """The URL with its password hidden (USER:***@; a ?password=... parameter dropped), for
    messages and files. Database URLs are parsed as SQLAlchemy parses them; anything else (journal:FILE, a
    token of a command line) has a USER:PASS@ part masked by pattern."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
    except Exception:  # sqlalchemy.exc.ArgumentError: not a database URL
        url = re.sub(r"(://[^/@]*:)[^@/]*@", r"\1***@", url)
        return re.sub(r"([?&](?:password|passwd|pwd)=)[^&\s]*", r"\1***", url, flags=re.I)
    secret = [k for k in u.query if k.lower() in PASSWORD_KEYS]
    return u.difference_update_query(secret).render_as_string(hide_password=True)


def redact_argv(argv: list[str]) -> list[str]:
    """A command line safe to write to a file: every URL-looking argument redacted."""
    return [redact(a) if "://" in a else a for a in argv]


def default_url(out: str | Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'study.db'}"


def scheme_of(url: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", url)
    if not m:
        raise FirecutError(f"--storage {redact(url)!r} is not a storage URL; use {SCHEMES_HELP}")
    return m.group(1).lower()


def check_url(url: str) -> str:
    """Refuses an unknown scheme (before anything is trained); returns the base scheme."""
    scheme = scheme_of(url)
    base = scheme.split("+", 1)[0]
    if base == "journal":
        if not url[len("journal:"):].lstrip("/"):
            raise FirecutError("--storage journal: needs a file, e.g. journal:runs/search/journal.log")
        return base
    if base not in RDB_SCHEMES:
        raise FirecutError(f"unknown storage scheme '{scheme}' in --storage {redact(url)}; "
                           f"use {SCHEMES_HELP}")
    return base


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Database errors (server down, bad password, missing driver) as one FirecutError line."""
    try:
        yield
    except FirecutError:
        raise
    except ImportError:  # optuna's "Failed to import DB access module": no driver installed
        hint = "pip install pymysql" if "mysql" in url else "pip install 'firecut[postgres]'"
        raise FirecutError(f"--storage {redact(url)} needs a database driver that is not installed: "
                           f"{hint}") from None
    except Exception as e:  # sqlalchemy.exc.OperationalError and friends: not imported up front
        if type(e).__module__.split(".")[0] not in ("sqlalchemy", "psycopg", "pymysql", "sqlite3"):
            raise
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise FirecutError(f"cannot use the study storage {redact(url)} ({reason}); check that the "
                           "database server is running and the URL is right, then re-run: finished "
                           "trials are kept") from None


def open_storage(url: str) -> Any:
    """An Optuna storage for `url` (already checked by check_url)."""
    import optuna

    base = check_url(url)
    if base == "journal":
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):].replace("///", "/", 1) if url.startswith("journal:///")
                    else url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if base == "sqlite":
        file = url[len("sqlite:///"):]
        if file and file != ":memory:":
            Path(file).parent.mkdir(parents=True, exist_ok=True)
        # Several processes on one SQLite file: wait for the write lock instead of failing.
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    if base == "postgres":  # SQLAlchemy only knows the long name
        url = "postgresql" + url[len("postgres"):]
    with storage_errors(url):
        for attempt in range(6):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as e:
                # Workers started together on a fresh database race to create Optuna's tables;
                # the loser sees "duplicate key"/"already exists" and finds the tables next time.
                text = str(e).lower()
                if attempt == 5 or not ("duplicate key" in text or "already exists" in text):
                    raise
                time.sleep(0.5 * (attempt + 1))
