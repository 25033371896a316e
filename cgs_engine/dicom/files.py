"""Checking an output path, and saving a pydicom Dataset atomically (temp file, fsync, rename)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cgs_engine.durable import write_atomically
from cgs_engine.io.formats import extension_of

from .errors import DicomError

OVERWRITE_HINT = "pass --overwrite (overwrite=True) to replace it"
CLASS_TABLE_SUFFIX = ".json"


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike | None] = (),
    series_folder: str | os.PathLike | None = None,
) -> Path:
    """The path to write, or :class:`DicomError` before anything is computed or written.

    Refused even with ``overwrite``: a name of an image, label map or class table (a DICOM file
    under such a name would pass for one), one of ``inputs``, and anything inside
    ``series_folder`` (an export must leave the series it references as it was).
    """
    target = Path(path)
    if target.is_dir():
        raise DicomError(target, "is a folder; give a file name such as RS.dcm")
    suffix = extension_of(target.name) or (
        CLASS_TABLE_SUFFIX if target.name.lower().endswith(CLASS_TABLE_SUFFIX) else None
    )
    if suffix:
        raise DicomError(target, f"a DICOM file cannot be written under a {suffix} name; give a .dcm name")
    for source in inputs:
        if source is not None and _same_file(target, Path(source)):
            raise DicomError(target, f"is the input {source}; write the DICOM file under another name")
    if series_folder is not None and _inside(target, Path(series_folder)):
        raise DicomError(
            target, f"lies in the series folder {series_folder}; write the DICOM file outside the series"
        )
    if not target.parent.is_dir():
        raise DicomError(target, f"output folder {target.parent} does not exist")
    if target.exists() and not overwrite:
        raise DicomError(target, f"already exists ({OVERWRITE_HINT})")
    return target


def _same_file(one: Path, other: Path) -> bool:
    try:
        if one.exists() and other.exists():
            return os.path.samefile(one, other)
        return one.resolve() == other.resolve()
    except (OSError, RuntimeError):  # unreadable or a symlink loop: not provably the same file
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.resolve() in path.resolve().parents
    except (OSError, RuntimeError):
        return False


def save_dataset(dataset, path: str | os.PathLike, overwrite: bool) -> Path:
    """Write ``dataset`` as a DICOM file; the file appears complete or not at all."""
    target = check_output(path, overwrite)
    return write_atomically(
        target,
        lambda temp: dataset.save_as(temp, enforce_file_format=True),
        overwrite=overwrite,
        exists_error=lambda existing: DicomError(existing, f"already exists ({OVERWRITE_HINT})"),
    )
