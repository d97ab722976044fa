"""Errors the user can fix: the CLI prints them as one line on stderr and exits 2."""

from __future__ import annotations

import errno

# A failed write, by errno: (what happened, to the folder named after it; the fix). Each ends a
# command in one line (io.atomic_write_bytes, cli.app), and the same command then resumes.
WRITE_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device holding", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded on the device holding",
                   "free some space or raise the quota"),
    errno.EFBIG: ("a file outgrew the file-size limit (ulimit -f) in",
                  "raise the limit (ulimit -f unlimited)"),
    errno.EROFS: ("the file system is read-only at", "give an --out on a writable file system"),
    errno.EIO: ("an input/output error while writing in", "check the disk or the network mount"),
    errno.EACCES: ("permission denied writing in", "make the folder writable or give another --out"),
    errno.EPERM: ("not permitted to write in", "make the folder writable or give another --out"),
}


class FirecutError(Exception):
    """A problem with the user's input (a flag, a file, a folder), with the fix in its message."""


def write_errno(exc: BaseException | None) -> int | None:
    """The errno of WRITE_ERRORS that `exc`, or an exception it was raised from or during, carries
    (else None). torch.save reports a failed write as a RuntimeError ('unexpected pos ...') whose
    context is the OSError, hence the walk down the chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(where: object, code: int) -> FirecutError:
    """One line: what happened where, the fix, and that the same command resumes."""
    what, fix = WRITE_ERRORS[code]
    return FirecutError(f"{what} {where}: {fix}, then re-run the same command (it resumes; every "
                        "finished file is whole)")
