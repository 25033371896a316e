"""Expanding command-line path arguments: files as given, folders to the images inside them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cgs_engine.errors import CGSError
from cgs_engine.io.formats import extension_of, is_image_file

SERIES_HELP = "the DICOM series to read (its SeriesInstanceUID) where a folder holds several"


def add_series_option(parser) -> None:
    """``--series UID``: which image series of a DICOM folder to read (the error lists them)."""
    parser.add_argument("--series", metavar="UID", help=SERIES_HELP)


def expand_images(arguments: list[str] | None, what: str) -> list[Path]:
    """Files stay; a folder becomes its image files (sorted); a missing path is a one-line error."""
    found: list[Path] = []
    for argument in arguments or []:
        path = Path(argument)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                # a link to a scan moved or deleted: skipped, a case vanished from the batch unsaid
                if entry.is_symlink() and not entry.exists() and extension_of(entry.name):
                    raise CGSError(f"{entry}: a link to a file that does not exist ({what})")
            inside = sorted(p for p in path.iterdir() if is_image_file(p))
            if not inside:
                raise CGSError(f"{path}: no NIfTI/MHA/NRRD images in this folder ({what})")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise CGSError(f"{path}: no such file or folder ({what})")
    return found


def check_json_target(path: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """A --json output can be written: checked before any work, so a refusal comes first. It may
    not be one of the command's ``inputs``, even with ``--overwrite``, nor lie in an input that is a
    folder (a DICOM series' slice, a project's records)."""
    for source in inputs:
        if same_file(path, Path(source)):
            raise CGSError(f"{path}: is one of this command's inputs; --json must name another file")
        if Path(source).is_dir() and _inside(path, Path(source)):
            raise CGSError(
                f"{path}: lies in {source}, one of this command's inputs; --json must name a file elsewhere"
            )
    if path.is_dir():
        raise CGSError(f"{path}: is a folder; give a file name such as report.json")
    if path.exists() and not overwrite:
        raise CGSError(f"{path}: already exists (pass --overwrite to replace it)")
    folder = path.parent
    if not folder.is_dir():
        raise CGSError(f"{path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CGSError(f"{path}: no permission to write in {folder}")


def same_file(first: Path, second: Path) -> bool:
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a link loop: not inside anything it could replace
        return False
