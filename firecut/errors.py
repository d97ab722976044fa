"""Errors the user can fix: the CLI prints them as one line on stderr and exits 2."""


class FirecutError(Exception):
    """A problem with the user's input (a flag, a file, a folder), with the fix in its message."""
