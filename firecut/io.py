"""Atomic file writes: a reader (or a re-run after a crash or a full disk) sees the old file or
the whole new one, never a part. A leaf module: imports nothing from firecut but its errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from firecut.errors import FirecutError, write_errno, write_error


def atomic_write_bytes(path: str | os.PathLike, writer: Callable[[BinaryIO], Any]) -> None:
    """Calls writer(file) on a temp file in the same folder, then renames it over `path`: a
    reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        code = write_errno(e)
        if code is not None:
            raise write_error(path.parent, code) from None
        raise FirecutError(f"cannot write {path} ({e.strerror or e}); check that its folder exists "
                           "and is writable") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        code = write_errno(e)
        if code is not None:
            raise write_error(path.parent, code) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
