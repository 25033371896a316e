"""Expanding command-line path arguments: files as given, folders to the images inside them."""

from __future__ import annotations

from pathlib import Path

from cgs_engine.errors import CGSError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def expand_images(arguments: list[str] | None, what: str) -> list[Path]:
    """Files stay; a folder becomes its image files (sorted); a missing path is a one-line error."""
    found: list[Path] = []
    for argument in arguments or []:
        path = Path(argument)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if is_image_file(p))
            if not inside:
                raise CGSError(f"{path}: no NIfTI/MHA/NRRD images in this folder ({what})")
            found.extend(inside)
        elif path.exists():
            found.append(path)
        else:
            raise CGSError(f"{path}: no such file or folder ({what})")
    return found
