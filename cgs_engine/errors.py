"""Errors the engine reports to users as one line (CLI) or a notification (plugin)."""


class CGSError(Exception):
    """Base class for expected, user-facing failures: the message is one line and names the file."""
