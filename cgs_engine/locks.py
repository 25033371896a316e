"""Inter-process locks on project state and run folders (the ``filelock`` package: flock on POSIX).

The OS drops such a lock when its process dies, even by kill -9, so a crash never leaves a
project locked. By default a lock is per path and per process, so code holding one may take
it again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from cgs_engine.errors import CGSError


class Busy(CGSError):
    """Another process holds the lock; the message says who and what to do."""


@contextmanager
def exclusive(
    lock_file: str | os.PathLike,
    busy: str | Callable[[], Exception],
    wait_s: float = 0,
    reentrant: bool = True,
) -> Iterator[None]:
    """Hold ``lock_file`` exclusively. Not free within ``wait_s`` seconds: raises ``Busy(busy)``, or
    ``busy()`` when it is a callable making the caller's own error (only then, never for errors
    raised while the lock is held).

    ``reentrant=False``: this process too is refused while it holds the lock (one retrain at a
    time, even from one process).
    """
    folder = Path(lock_file).parent
    if not folder.is_dir():  # FileLock would make it (and its parents): a deleted folder came back
        raise FileNotFoundError(errno.ENOENT, "no such folder (deleted or moved?)", str(folder))
    lock = FileLock(Path(lock_file), is_singleton=reentrant, preserve_lock_file=True)
    try:
        lock.acquire(timeout=wait_s)
    except Timeout:
        raise (busy() if callable(busy) else Busy(busy)) from None
    try:
        yield
    finally:
        lock.release()
