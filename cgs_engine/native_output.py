"""Catching what C libraries print on the process's stderr (ITK, niftilib, MetaIO, GDCM).

SimpleITK's readers and writers report some problems only by printing to file descriptor 2
("** ERROR: NWAD: wrote only 4096 of 393216 bytes", "WARNING: In .../itkNiftiImageIO.cxx ...")
and then carry on, so a user saw raw library lines above (or instead of) our one-line message.
Python's ``sys.stderr`` cannot catch them: they bypass it. ``captured_native_stderr`` points
descriptor 2 at a temporary file for the duration of a library call and hands the text back,
for the caller to fold into its own message.

Several threads may capture at once (``cgs predict`` writes its maps in parallel): the first
one in redirects, the last one out restores, and each gets everything printed while it ran.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_sink = None

_LOCATION = re.compile(r"^(?:WARNING|ERROR|Warning|Error): In .*(?:, line \d+)?$")
_OBJECT = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\):\s*")
_PREFIX = re.compile(r"^(?:\*\* ?)?(?:ERROR|WARNING|Warning|Error)\s*[:\-]?\s*")
MAX_SUMMARY = 300


class Captured:
    """The text the C libraries printed while the capture was open (set when it closes)."""

    def __init__(self) -> None:
        self.text = ""

    def summary(self) -> str:
        return summarise(self.text)


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[Captured]:
    captured = Captured()
    start = _begin()
    try:
        yield captured
    finally:
        captured.text = _end(start)


def _begin() -> int | None:
    global _depth, _saved_fd, _sink
    with _lock:
        if _depth == 0:
            try:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                sink = tempfile.TemporaryFile()  # noqa: SIM115 - open across calls, closed in _end
                saved = os.dup(2)
                os.dup2(sink.fileno(), 2)
            except (OSError, ValueError):
                return None  # no descriptor 2 to redirect (embedded interpreters): print as before
            _saved_fd, _sink = saved, sink
        _depth += 1
        return os.lseek(_sink.fileno(), 0, os.SEEK_END)


def _end(start: int | None) -> str:
    global _depth, _saved_fd, _sink
    if start is None:
        return ""
    with _lock:
        sink = _sink
        end = os.lseek(sink.fileno(), 0, os.SEEK_END)
        text = os.pread(sink.fileno(), end - start, start).decode("utf-8", "replace") if end > start else ""
        _depth -= 1
        if _depth == 0:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(_saved_fd, 2)
            os.close(_saved_fd)
            sink.close()
            _saved_fd, _sink = None, None
    return text


def summarise(text: str) -> str:
    """The informative lines of library output as one line: no source locations, addresses or
    ``ERROR:`` prefixes, each distinct line once."""
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _LOCATION.match(line):
            continue
        line = _PREFIX.sub("", _OBJECT.sub("", line)).strip()
        if line and line not in kept:
            kept.append(line)
    summary = "; ".join(kept)
    return summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 3] + "..."
