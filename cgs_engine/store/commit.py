"""How a new slice store reaches its path: written to a hidden ``.partial`` file next to the
target, checked, and moved into place on close. An existing file is replaced only with
``overwrite``; a file that appears meanwhile is never clobbered."""

from __future__ import annotations

import os
from pathlib import Path

import h5py

from cgs_engine.durable import GuardedFile, check_written, remove_stale_temp_files, temp_path_for
from cgs_engine.errors import first_line
from cgs_engine.h5_durable import hdf5_problem
from cgs_engine.store._checks import SliceStoreError


def open_partial(path: Path) -> tuple[h5py.File, GuardedFile, Path]:
    """A new, empty HDF5 file at the partial path of ``path``, on a guarded disk."""
    remove_stale_temp_files(path.parent, name=path.name)
    partial = temp_path_for(path)
    try:
        guard = GuardedFile(partial)
    except OSError as error:
        raise SliceStoreError(f"{path}: cannot write ({first_line(error)})") from None
    try:
        file = h5py.File(guard, "w")
    except OSError as error:
        guard.close()
        partial.unlink(missing_ok=True)
        raise SliceStoreError(f"{path}: cannot write ({first_line(error)})") from None
    return file, guard, partial


def check_partial(guard: GuardedFile, partial: Path, path: Path) -> None:
    """The new store reached the disk whole (no refused write, and it reads back), or WriteError."""
    guard.close()
    try:
        guard.raise_if_failed(path)
        check_written(partial, path, hdf5_problem)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def commit_partial(partial: Path, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(partial, path)
        return
    try:
        # A hard link fails if the target exists, so a file created meanwhile is never clobbered.
        os.link(partial, path)
    except FileExistsError:
        raise SliceStoreError(
            f"{path}: appeared while this store was written; the new store is kept at {partial}"
        ) from None
    except OSError:
        if path.exists():
            raise SliceStoreError(
                f"{path}: appeared while this store was written; the new store is kept at {partial}"
            ) from None
        os.replace(partial, path)
        return
    partial.unlink()
