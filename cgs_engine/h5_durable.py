"""HDF5 files (stores, corrections, sessions) written so that a full disk is one line, not a crash.

HDF5 2.0 does not raise when a write fails: it prints tracebacks from object destructors and
then crashes the process (SIGSEGV) when the file is flushed or closed. So h5py writes through a
:class:`~cgs_engine.durable.GuardedFile`: the disk's refusal is remembered, HDF5 is told every
write succeeded and closes normally, and the write is then reported as failed and discarded.
What was written is read back (it opens as HDF5 and holds its root attributes) before it
replaces anything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py

from cgs_engine.durable import GuardedFile, write_atomically


@contextlib.contextmanager
def guarded_h5_file(path: Path, target: Path) -> Iterator[h5py.File]:
    """A new HDF5 file at ``path`` (a temp name for ``target``); WriteError after the block if the
    disk refused any of it."""
    guard = GuardedFile(path)
    try:
        with h5py.File(guard, "w") as file:
            yield file
    finally:
        guard.close()
    guard.raise_if_failed(target)


def hdf5_problem(path: Path) -> str | None:
    """A verifier: the file opens as HDF5 and its objects' headers read back."""
    try:
        with h5py.File(path, "r") as file:
            file.visititems(lambda _name, _item: None)
            dict(file.attrs)
    except (OSError, RuntimeError, KeyError, ValueError) as error:
        return f"it does not read back as HDF5 ({' '.join(str(error).split())[:120]})"
    return None


def write_h5_atomically(target: str | os.PathLike, fill: Callable[[h5py.File], None], **options: Any) -> Path:
    """Create an HDF5 file with ``fill(file)``, check it, and move it over ``target`` atomically."""
    target = Path(target)

    def write(temp: Path) -> None:
        with guarded_h5_file(temp, target) as file:
            fill(file)

    return write_atomically(target, write, verify=hdf5_problem, **options)


def foreign_link(group: h5py.Group, where: str = "") -> str | None:
    """The first object of ``group`` (recursively) that is not its own, in words, or None.

    Our HDF5 files hold their data themselves (hard links only): an external link would make
    HDF5 open another file, anywhere on the disk, and a soft link may loop.
    """
    for name in group:
        link = group.get(name, getlink=True)
        inside = f"{where}/{name}"
        if isinstance(link, h5py.ExternalLink):
            return f"{inside} links to another file ({link.filename})"
        if isinstance(link, h5py.SoftLink):
            return f"{inside} is a soft link to {link.path}"
        item = group.get(name)
        if isinstance(item, h5py.Group):
            found = foreign_link(item, inside)
            if found:
                return found
    return None
