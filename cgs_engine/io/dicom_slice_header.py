"""One slice's header, as the series check needs it: parsed, with every value checked.

pydicom converts values only when they are used, so any value may fail there (a DS of "abc");
each failure becomes a one-line error naming the file and the attribute. The pixel data is
located, not read: its declared length must fit the slice's size and the file must hold it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .dicom_folder import ImageFile
from .errors import VolumeIOError, one_line

REQUIRED_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "FrameOfReferenceUID")
BITS_ALLOCATED = (8, 16, 32)
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class SliceHeader:
    image: ImageFile
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    size: tuple[int, int]  # rows, columns
    pixel_format: tuple[Any, ...]
    rescale: tuple[float, float]

    @property
    def name(self) -> str:
        return self.image.path.name


def _empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip()
    return False


def parsed_slice(image: ImageFile) -> SliceHeader:
    header = image.header
    # present but empty counts as missing: an empty FrameOfReferenceUID or SOPInstanceUID was
    # taken as given, and the RTSTRUCT and SEG written on it referenced '' (ours refused to read it)
    # (only the UIDs are looked into here: a damaged number is parsed, and refused, below)
    missing = [
        tag
        for tag in REQUIRED_TAGS
        if tag not in header or (tag in REQUIRED_UIDS and _empty(header.get(tag)))
    ]
    if missing:
        problem = f"image lacks {', '.join(missing)}, so it cannot be placed in 3D or referenced"
        raise VolumeIOError(image.path, problem)
    pixel_spacing = _numbers(image, "PixelSpacing", 2)
    if min(pixel_spacing) <= 0:
        raise VolumeIOError(image.path, f"PixelSpacing {pixel_spacing} is not positive")
    size = (_integer(image, "Rows"), _integer(image, "Columns"))
    if min(size) < 1:
        raise VolumeIOError(image.path, f"image has {size[0]} rows and {size[1]} columns")
    bits = _integer(image, "BitsAllocated")
    if bits not in BITS_ALLOCATED:
        raise VolumeIOError(image.path, f"BitsAllocated {bits} is not one of {BITS_ALLOCATED}")
    slope, intercept = _number(image, "RescaleSlope", 1.0), _number(image, "RescaleIntercept", 0.0)
    if slope == 0:
        raise VolumeIOError(image.path, "RescaleSlope is 0, which makes every voxel the same value")
    pixel_format = (
        bits,
        _integer(image, "BitsStored", bits),
        _integer(image, "PixelRepresentation", 0),
        _integer(image, "SamplesPerPixel", 1),
        str(header.get("PhotometricInterpretation", "")),
    )
    if _integer(image, "NumberOfFrames", 1) != 1:
        problem = "multi-frame (enhanced) DICOM images are not supported; export single-frame slices"
        raise VolumeIOError(image.path, problem)
    return SliceHeader(
        image=image,
        position=np.array(_numbers(image, "ImagePositionPatient", 3)),
        orientation=np.array(_numbers(image, "ImageOrientationPatient", 6)),
        pixel_spacing=(pixel_spacing[0], pixel_spacing[1]),
        size=size,
        pixel_format=pixel_format,
        rescale=(slope, intercept),
    )


def _value(image: ImageFile, keyword: str) -> Any:
    try:
        return image.header.get(keyword)
    except Exception as error:  # noqa: BLE001 - pydicom converts values on access; any failure is damage
        raise VolumeIOError(image.path, f"{keyword} cannot be read ({one_line(str(error))[:120]})") from None


def _numbers(image: ImageFile, keyword: str, count: int) -> list[float]:
    value = _value(image, keyword)
    items = [value] if isinstance(value, str | bytes) or not hasattr(value, "__len__") else list(value)
    try:
        numbers = [float(item) for item in items]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != count or not all(math.isfinite(number) for number in numbers):
        shown = one_line(str(value))[:80]
        raise VolumeIOError(image.path, f"{keyword} is not {count} finite numbers ({shown})")
    return numbers


def _number(image: ImageFile, keyword: str, default: float) -> float:
    if keyword not in image.header or _value(image, keyword) in (None, ""):
        return default
    return _numbers(image, keyword, 1)[0]


def _integer(image: ImageFile, keyword: str, default: int | None = None) -> int:
    value = _value(image, keyword) if keyword in image.header else None
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        shown = one_line(str(value))[:40]
        raise VolumeIOError(image.path, f"{keyword} is not a whole number ({shown})") from None


def check_pixel_data(item: SliceHeader) -> None:
    """Every slice's pixel data present and as long as its size says (uncompressed files)."""
    header, path = item.image.header, item.image.path
    element = header.get_item("PixelData", keep_deferred=True)
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    declared, present = _pixel_data_length(element, path)
    if declared == UNDEFINED_LENGTH or (syntax is not None and syntax.is_encapsulated):
        return  # compressed fragments: the decoder refuses what is cut short
    if present < declared:
        raise VolumeIOError(path, f"file is truncated: its pixel data ends {declared - present} bytes early")
    rows, columns = item.size
    bits, samples = item.pixel_format[0], item.pixel_format[3]
    needed = rows * columns * samples * bits // 8
    if not needed <= declared <= needed + 1:
        raise VolumeIOError(
            path,
            f"pixel data holds {declared} bytes, but {rows} rows x {columns} columns x {bits} bits "
            f"need {needed} (Rows, Columns or BitsAllocated are wrong)",
        )


def _pixel_data_length(element: Any, path: Path) -> tuple[int, int]:
    """(bytes the header declares, bytes the file holds) of the pixel data element."""
    value = getattr(element, "value", None)
    declared = getattr(element, "length", None)  # only a raw (not yet converted) element has one
    if declared is None:
        size = len(value) if isinstance(value, bytes | bytearray) else 0
        return size, size
    if value is not None:  # read, possibly cut short by the end of the file
        return int(declared), len(value)
    return int(declared), max(0, path.stat().st_size - int(element.value_tell))
