"""Checking an output path, and saving a pydicom Dataset atomically (temp file, fsync, rename)."""

from __future__ import annotations

import os
from pathlib import Path

from cgs_engine.durable import write_atomically

from .errors import DicomError

OVERWRITE_HINT = "pass --overwrite (overwrite=True) to replace it"


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """The path to write, or :class:`DicomError` before anything is computed or written."""
    target = Path(path)
    if target.is_dir():
        raise DicomError(target, "is a folder; give a file name such as RS.dcm")
    if not target.parent.is_dir():
        raise DicomError(target, f"output folder {target.parent} does not exist")
    if target.exists() and not overwrite:
        raise DicomError(target, f"already exists ({OVERWRITE_HINT})")
    return target


def save_dataset(dataset, path: str | os.PathLike, overwrite: bool) -> Path:
    """Write ``dataset`` as a DICOM file; the file appears complete or not at all."""
    target = check_output(path, overwrite)
    return write_atomically(
        target,
        lambda temp: dataset.save_as(temp, enforce_file_format=True),
        overwrite=overwrite,
        exists_error=lambda existing: DicomError(existing, f"already exists ({OVERWRITE_HINT})"),
    )
