"""Inter-process locks on project state and run folders (the ``filelock`` package: flock on POSIX).

The OS drops such a lock when its process dies, even by kill -9, so a crash never leaves a
project locked. By default a lock is per path and per process, so code holding one may take
it again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cgs_engine.errors import CGSError


class Busy(CGSError):
    """Another process holds the lock; the message says who and what to do."""


@contextmanager
def exclusive(
    lock_file: str | os.PathLike, busy_message: str, wait_s: float = 0, reentrant: bool = True
) -> Iterator[None]:
    """Hold ``lock_file`` exclusively; ``Busy(busy_message)`` if not free within ``wait_s`` seconds.

    ``reentrant=False``: this process too is refused while it holds the lock (one retrain at a
    time, even from one process).
    """
    lock = FileLock(Path(lock_file), is_singleton=reentrant, preserve_lock_file=True)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise Busy(busy_message) from None
    try:
        yield
    finally:
        lock.release()
