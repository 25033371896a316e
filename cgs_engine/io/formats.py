"""Which paths hold volumes we can read: file extensions and DICOM series folders."""

from __future__ import annotations

import os
from pathlib import Path

# Longest first, so that ".nii.gz" is matched before ".nii".
SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_FILES_TO_PROBE = 64


def extension_of(path: str | os.PathLike) -> str | None:
    """The supported extension ``path`` ends with, in lower case whatever the name's case, or None.

    ``SCAN.NII.GZ`` is read like ``scan.nii.gz``: the reader names ITK's reader for the extension
    (:func:`itk_image_io`), since ITK's own guess fails for upper-case MetaImage names. Writing
    needs the lower-case name (:func:`output_name_problem`).
    """
    name = Path(path).name
    lower = name.lower()
    for extension in SUPPORTED_EXTENSIONS:
        if lower.endswith(extension) and len(name) > len(extension):
            return extension
    return None


# ITK's reader for each extension, named rather than guessed: its guess goes by the lower-case
# extension, so an upper-case ".MHA" found no reader at all.
_ITK_IMAGE_IO = {
    ".nii.gz": "NiftiImageIO",
    ".nii": "NiftiImageIO",
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
    ".nrrd": "NrrdImageIO",
    ".nhdr": "NrrdImageIO",
}


def itk_image_io(path: str | os.PathLike) -> str:
    """The ITK ImageIO that reads ``path`` ("" for a name without a supported extension: ITK guesses)."""
    extension = extension_of(path)
    return _ITK_IMAGE_IO[extension] if extension else ""


def output_name_problem(path: str | os.PathLike) -> str | None:
    """Why a volume cannot be written under this name, or None.

    ITK writes only lower-case extensions: its NIfTI writer refuses ``OUT.NII.GZ`` ("Bad Nifti file
    name") and its MetaImage writer does not recognise ``OUT.MHA``.
    """
    extension = extension_of(path)
    if extension is None:
        return f"unsupported output type (use one of {', '.join(SUPPORTED_EXTENSIONS)})"
    name = Path(path).name
    if not name.endswith(extension):
        stem = name[: -len(extension)]
        return f"the image library writes only lower-case extensions; name it {stem}{extension}"
    return None


def strip_image_suffix(name: str) -> str:
    """``name`` without its image extension (any case); unchanged when it has none."""
    suffix = extension_of(name)
    return name[: -len(suffix)] if suffix else name


def is_image_file(path: Path) -> bool:
    """A file (not a folder) whose name ends with an image extension, in any case."""
    return path.is_file() and extension_of(path.name) is not None


def describe_supported() -> str:
    return ", ".join(SUPPORTED_EXTENSIONS) + " or a DICOM series folder"


def is_supported_path(path: str | os.PathLike) -> bool:
    """True for a file with a supported extension or a folder that holds DICOM files.

    Cheap and never raises: the napari reader calls it to decide whether to claim a path.
    """
    try:
        location = Path(os.fspath(path))
        if location.is_dir():
            return folder_has_dicom_files(location)
    except (TypeError, OSError):
        return False
    return extension_of(location) is not None


def folder_has_dicom_files(folder: Path) -> bool:
    """Whether one of the first files in ``folder`` (not its subfolders) looks like DICOM."""
    try:
        with os.scandir(folder) as entries:
            probed = 0
            for entry in entries:
                if probed >= _FILES_TO_PROBE:
                    break
                if not entry.is_file():
                    continue
                probed += 1
                if entry.name.lower().endswith(".dcm") or _has_dicom_preamble(entry.path):
                    return True
    except OSError:
        return False
    return False


def _has_dicom_preamble(path: str) -> bool:
    try:
        with open(path, "rb") as stream:
            stream.seek(_DICOM_MAGIC_OFFSET)
            return stream.read(len(_DICOM_MAGIC)) == _DICOM_MAGIC
    except OSError:
        return False
