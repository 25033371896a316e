"""Errors the engine reports to users as one line (CLI) or a notification (plugin), and how such a
line prints the file it names."""

from __future__ import annotations

import os


class CGSError(Exception):
    """Base class for expected, user-facing failures: the message is one line and names the file."""


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 are shown as \\xNN escapes.

    Python keeps such bytes of a file name as lone surrogates, which cannot be printed (and
    which make ITK abort the process when it is handed them).
    """
    text = os.fspath(path)
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
