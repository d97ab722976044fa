"""Errors the user can fix: the CLI prints them as one line on stderr and exits 2."""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class FirecutError(Exception):
    """A problem with the user's input (a flag, a file, a folder), with the fix in its message."""


def is_disk_full(exc: BaseException | None) -> bool:
    """True if `exc`, or an exception it was raised from or during, is 'no space left' (or
    'quota exceeded'). torch.save reports a failed write as a RuntimeError whose context is the
    OSError, hence the walk down the chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(where: object) -> FirecutError:
    return FirecutError(f"no space left on the device holding {where}: free some space and re-run "
                        "the same command (it resumes; every finished file is whole)")
