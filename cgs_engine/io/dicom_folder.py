"""The DICOM image series in a folder, and which one to read.

Every regular file at the top of the folder is opened with pydicom, pixel data deferred (a
header costs a few kilobytes of reading). Files without the DICM marker are not DICOM and are
passed over, unless they hold an image slice's dataset written without preamble; a DICOM file
that cannot be parsed is refused, since it may be one of the slices.
Structure sets, segmentations, doses, reports and other objects that are not slices of a volume
are passed over. A folder holding more than one image series is refused with their list unless
the caller names one: ITK would read the largest one and nobody would know which it was.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import VolumeIOError, one_line

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
DEFER_BYTES = 4096  # longer values (the pixel data) are not read, only located
# Objects with their own series that are not slices of an image volume.
NOT_VOLUME_MODALITIES = frozenset(
    {"RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "SEG", "SR", "PR", "KO", "REG", "DOC", "RWV"}
)
LISTED_SERIES = 4
SERIES_HINT = "pick one with --series UID (series_uid=...), or give each series its own folder"


@dataclass(frozen=True)
class ImageFile:
    path: Path
    header: Any  # pydicom Dataset, pixel data deferred


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns (on stderr) about every odd value it reads; the checks report what matters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def image_series_in(folder: Path) -> dict[str, list[ImageFile]]:
    """The image files at the top of ``folder``, by SeriesInstanceUID ("" for files without one)."""
    found: dict[str, list[ImageFile]] = {}
    with os.scandir(folder) as entries:
        paths = sorted(Path(entry.path) for entry in entries if not entry.name.startswith("."))
    for path in paths:
        if not path.is_file():
            continue
        header = read_header(path)
        if header is None or not _is_volume_slice(header, path):
            continue
        found.setdefault(str(header.get("SeriesInstanceUID", "") or ""), []).append(ImageFile(path, header))
    return found


def series_identity(folder: str | os.PathLike, series_uid: str | None = None) -> dict[str, str]:
    """Which DICOM series, and whose, an image read from ``folder`` is (``series_uid`` as given to the
    reader). Recorded beside labels made on it, so that they are never exported onto another series
    that happens to share its grid."""
    files = pick_series(image_series_in(Path(folder)), os.fspath(folder), series_uid)
    header = files[0].header
    return {
        "dicom_series": str(header.get("SeriesInstanceUID", "") or ""),
        "patient_id": one_line(str(header.get("PatientID", "") or "")),
    }


def read_header(path: Path) -> Any | None:
    """The header of a DICOM file (pixel data located, not read); None for a file that is not DICOM."""
    import pydicom  # lazy: pydicom costs 0.3 s and cgs_engine.io (the napari reader) reads files without it

    try:
        with open(path, "rb") as stream:
            start = stream.read(DICOM_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError as error:
        raise VolumeIOError(path, f"cannot be read ({error.strerror or error})") from None
    if start[DICOM_MAGIC_OFFSET:] != DICOM_MAGIC:
        bare = _bare_dataset(path, start)
        if bare is not None:
            return bare
        # A file named as DICOM, or one holding nothing but a preamble's zeros, is a slice cut short.
        if path.name.lower().endswith(DICOM_SUFFIXES) or (start and not start.strip(b"\0")):
            problem = "not a readable DICOM file (no DICM marker: truncated or another format)"
            raise VolumeIOError(path, problem)
        return None
    try:
        with quiet_pydicom():
            return pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except Exception as error:  # noqa: BLE001 - whatever pydicom trips over in a damaged file
        raise VolumeIOError(path, f"damaged DICOM file ({one_line(str(error))[:160]})") from None


# A dataset written without preamble and marker (older exports, ACR-NEMA style, files such as IM0007)
# starts with its first element's group, little endian: file meta (0002) or identification (0008).
BARE_DATASET_STARTS = (b"\x02\x00", b"\x08\x00")


def _bare_dataset(path: Path, start: bytes) -> Any | None:
    """The header of an image slice stored without preamble and DICM marker, or None. Passed over,
    such slices went missing from their series in silence (ITK's own GDCM reads them); a file that
    does not parse as a slice with pixel data is left to the caller (not DICOM)."""
    import pydicom

    if not start.startswith(BARE_DATASET_STARTS):
        return None
    try:
        with quiet_pydicom():
            header = pydicom.dcmread(path, defer_size=DEFER_BYTES, force=True)
    except Exception:  # noqa: BLE001 - not a dataset after all
        return None
    needed = ("PixelData", "Rows", "Columns", "SOPClassUID")
    return header if all(key in header for key in needed) else None


def _is_volume_slice(header: Any, path: Path) -> bool:
    if str(header.get("Modality", "")).upper() in NOT_VOLUME_MODALITIES:
        return False
    if "PixelData" in header:
        return True
    # The file meta at the start names the kind of object even when the rest was cut off; a file
    # that does not even say that much may have been a slice.
    sop_class = getattr(getattr(header, "file_meta", None), "MediaStorageSOPClassUID", None)
    sop_class = sop_class or header.get("SOPClassUID")
    if not sop_class or len(header) == 0:
        raise VolumeIOError(path, "DICOM file that ends within its header: truncated or damaged")
    if "Image Storage" in str(getattr(sop_class, "name", "")):
        raise VolumeIOError(path, f"{sop_class.name} file without pixel data (truncated?)")
    return False


def pick_series(found: dict[str, list[ImageFile]], name: str, wanted: str | None) -> list[ImageFile]:
    """The files of the one image series to read: the only one, or ``wanted``."""
    if not found:
        raise VolumeIOError(
            name, "no DICOM series found in this folder (no DICOM image files at its top level)"
        )
    if "" in found:
        raise VolumeIOError(found[""][0].path, "DICOM image has no SeriesInstanceUID")
    if wanted is not None:
        wanted = wanted.strip()
        if wanted not in found:
            raise VolumeIOError(name, f"holds no image series {wanted}; it holds {describe_series(found)}")
        return found[wanted]
    if len(found) > 1:
        raise VolumeIOError(name, f"holds {len(found)} image series: {describe_series(found)}; {SERIES_HINT}")
    return next(iter(found.values()))


def describe_series(found: dict[str, list[ImageFile]]) -> str:
    ordered = sorted(found.items(), key=lambda item: -len(item[1]))
    parts = []
    for uid, files in ordered[:LISTED_SERIES]:
        header = files[0].header
        modality = str(header.get("Modality", "") or "").strip()
        description = one_line(str(header.get("SeriesDescription", "") or ""))[:40]
        words = f"{len(files)} {modality} images" if modality else f"{len(files)} images"
        parts.append(f"{uid} ({words}{', ' + repr(description) if description else ''})")
    if len(ordered) > LISTED_SERIES:
        parts.append(f"and {len(ordered) - LISTED_SERIES} more")
    return ", ".join(parts)
