"""The one check of a DICOM image series, for every command that reads one, and its reading.

ITK builds a box from whatever files GDCM lists: a missing slice is averaged into the spacing, a
duplicate becomes one more slice, a gantry tilt is read as if the slices were stacked straight
(tens of millimetres off at the far end), a slice whose pixel data is cut short is left out, and a
slice of another orientation or pixel spacing is read on the first slice's grid. So the headers
are read first (pydicom) and the series is refused, in one line naming the folder or the slice,
unless

* every slice has one orientation (two perpendicular unit vectors), pixel spacing, size, pixel
  format and frame of reference, and complete pixel data;
* the slice positions (Image Position (Patient) along the slice normal) lie on one regular grid,
  each within SLICE_TOLERANCE of a voxel of its place, no two at one position;
* the slices are stacked along their normal: a sideways shift from slice to slice (gantry tilt)
  would shear the volume, so such a series is refused with its tilt angle, unless the caller
  resamples it on purpose (:mod:`.dicom_tilt`).

The volume then gets the headers' geometry, not ITK's estimate of it; slices with their own
rescale slope or intercept are read as float32, so that each keeps its own values.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..volume import Geometry
from .dicom_folder import ImageFile, image_series_in, pick_series, quiet_pydicom
from .errors import VolumeIOError, itk_reason, one_line, require_utf8_path

SLICE_TOLERANCE = 0.05  # a slice may lie this fraction of a voxel off its place on the grid
ORIENTATION_TOLERANCE = 1e-4  # between slices, per direction cosine
UNIT_TOLERANCE = 1e-3  # row and column directions: unit length and perpendicular
PIXEL_SPACING_RTOL = 1e-4
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
BITS_ALLOCATED = (8, 16, 32)
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class CheckedSeries:
    """A series that passed: its files and headers in slice order, and the headers' geometry."""

    folder: Path
    series_uid: str
    files: tuple[Path, ...]
    headers: tuple[Any, ...]  # pydicom Datasets, pixel data not read
    geometry: Geometry  # of the slices' own grid; for a tilt, of the regular grid it is resampled on
    rescale_per_slice: bool
    tilt: Tilt | None = None  # only where the caller allowed one


@dataclass(frozen=True)
class _Slice:
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


def check_dicom_series(
    folder: Path, name: str, series_uid: str | None = None, allow_tilt: bool = False
) -> CheckedSeries:
    """The one image series of ``folder`` (or ``series_uid``), checked; :class:`VolumeIOError` if not.

    ``allow_tilt``: a gantry tilt is returned (``CheckedSeries.tilt``) for resampling, not refused.
    """
    with quiet_pydicom():
        images = pick_series(image_series_in(folder), name, series_uid)
        if len(images) < 2:
            raise VolumeIOError(name, "the series has a single slice; a 3D volume needs at least 2")
        slices = [_parsed(image) for image in images]
    _check_alike(name, slices)
    row, column, normal = _directions(slices[0])
    along = np.array([float(item.position @ normal) for item in slices])
    order = np.argsort(along, kind="stable")
    slices, along = [slices[i] for i in order], along[order]
    spacing = _check_positions(name, slices, along)
    tilt = _tilt(name, slices, normal, along)
    if tilt is not None and not allow_tilt:
        raise VolumeIOError(
            name,
            f"slices are not stacked straight: {tilt.describe()}; read as a box the volume would be "
            f"sheared by up to {tilt.largest_shift:.3g} mm (cgs convert --resample-tilt makes a "
            "regular volume of it)",
        )
    for item in slices:
        _check_pixel_data(item)
    rows_apart, columns_apart = slices[0].pixel_spacing
    geometry = Geometry(
        spacing=(columns_apart, rows_apart, spacing),
        origin=tuple(slices[0].position),
        direction=tuple(np.column_stack([row, column, normal]).ravel()),
    )
    return CheckedSeries(
        folder=folder,
        series_uid=str(slices[0].image.header.SeriesInstanceUID),
        files=tuple(item.image.path for item in slices),
        headers=tuple(item.image.header for item in slices),
        geometry=geometry,
        rescale_per_slice=len({item.rescale for item in slices}) > 1,
        tilt=tilt,
    )


def read_checked_series(series: CheckedSeries, name: str) -> sitk.Image:
    """The pixels of a checked series with the headers' geometry."""
    files = [require_utf8_path(path) for path in series.files]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if series.rescale_per_slice:  # else ITK casts every slice to the first one's integer type
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        with itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as error:
        raise VolumeIOError(name, f"DICOM series could not be read ({itk_reason(error)})") from None
    header = series.headers[0]
    expected = (int(header.Columns), int(header.Rows), len(files))
    if image.GetDimension() != 3 or tuple(image.GetSize()) != expected:
        raise VolumeIOError(name, f"read {image.GetSize()} voxels from a series of {expected} (x, y, slices)")
    image.SetSpacing(series.geometry.spacing)
    image.SetOrigin(series.geometry.origin)
    image.SetDirection(series.geometry.direction)
    return image


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK prints its own warnings on stderr (e.g. "Non uniform sampling"); the checks decide."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


# --- one slice's header ------------------------------------------------------------------------


def _parsed(image: ImageFile) -> _Slice:
    header = image.header
    missing = [tag for tag in REQUIRED_TAGS if tag not in header]
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
    return _Slice(
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


# --- the series ----------------------------------------------------------------------------------


def _check_alike(name: str, slices: list[_Slice]) -> None:
    first = slices[0]
    row, column = first.orientation[:3], first.orientation[3:]
    lengths_off = max(abs(np.linalg.norm(row) - 1), abs(np.linalg.norm(column) - 1))
    if lengths_off > UNIT_TOLERANCE or abs(float(row @ column)) > UNIT_TOLERANCE:
        shown = [round(float(v), 4) for v in first.orientation]
        raise VolumeIOError(
            first.image.path, f"ImageOrientationPatient {shown} is not two perpendicular unit vectors"
        )
    frames = {str(item.image.header.FrameOfReferenceUID) for item in slices}
    if len(frames) > 1:
        raise VolumeIOError(name, f"the series mixes {len(frames)} frames of reference (scanner coordinates)")
    if len({str(item.image.header.SOPInstanceUID) for item in slices}) < len(slices):
        raise VolumeIOError(name, "two images of the series share one SOPInstanceUID (a copied slice)")
    for item in slices[1:]:
        if np.abs(item.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise VolumeIOError(
                name,
                f"slice {item.name} has another orientation than {first.name} "
                "(a rotated image or a localizer in the series)",
            )
        if not np.allclose(item.pixel_spacing, first.pixel_spacing, rtol=PIXEL_SPACING_RTOL, atol=0):
            raise VolumeIOError(
                name,
                f"slice {item.name} has pixel spacing {list(item.pixel_spacing)} mm, "
                f"{first.name} {list(first.pixel_spacing)} mm",
            )
        if item.size != first.size:
            raise VolumeIOError(
                name,
                f"slice {item.name} has {item.size[0]} rows x {item.size[1]} columns, "
                f"{first.name} {first.size[0]} x {first.size[1]}",
            )
        if item.pixel_format != first.pixel_format:
            raise VolumeIOError(
                name, f"slice {item.name} stores its pixels otherwise than {first.name} (bits or photometry)"
            )


def _directions(first: _Slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column directions made exactly orthonormal, and the slice normal (right-handed)."""
    row = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    column = first.orientation[3:] - (first.orientation[3:] @ row) * row
    column /= np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _check_positions(name: str, slices: list[_Slice], along: np.ndarray) -> float:
    """The slice spacing, if every slice lies on one regular grid along the normal."""
    span = float(along[-1] - along[0])
    if span < 1e-3:
        where = [round(float(v), 3) for v in slices[0].position]
        raise VolumeIOError(name, f"all {len(slices)} slices lie at one position {where}; no 3D volume")
    spacing = span / (len(slices) - 1)
    steps = np.diff(along)
    tolerance = SLICE_TOLERANCE * spacing
    if steps.min() < tolerance:
        index = int(np.argmin(steps))
        raise VolumeIOError(
            name,
            f"slices {slices[index].name} and {slices[index + 1].name} share one position "
            "(duplicate slices, or several echoes, phases or time points in one series)",
        )
    usual = float(np.median(steps))
    off_grid = np.abs(along - (along[0] + spacing * np.arange(len(along))))
    if np.abs(steps - usual).max() > SLICE_TOLERANCE * usual or off_grid.max() > tolerance:
        index = int(np.argmax(np.abs(steps - usual)))
        raise VolumeIOError(
            name,
            f"slices are not evenly spaced: {steps[index]:.4g} mm between {slices[index].name} and "
            f"{slices[index + 1].name}, {usual:.4g} mm elsewhere (missing slices?)",
        )
    return spacing


@dataclass(frozen=True)
class Tilt:
    """A series whose slices are shifted sideways by one step each: a tilted gantry."""

    step: tuple[float, float, float]  # the sideways shift from one slice to the next (LPS mm)
    degrees: float
    largest_shift: float  # mm, of the last slice against the first
    stated: str  # GantryDetectorTilt as the header gives it ("" if absent)

    def describe(self) -> str:
        said = f"; GantryDetectorTilt says {self.stated}" if self.stated else ""
        return (
            f"a gantry tilt of {self.degrees:.3g} deg (each slice shifted {np.linalg.norm(self.step):.3g} mm "
            f"sideways{said})"
        )


def _tilt(name: str, slices: list[_Slice], normal: np.ndarray, along: np.ndarray) -> Tilt | None:
    """None for slices stacked along their normal, the tilt for slices shifted by one step each;
    :class:`VolumeIOError` for other sideways shifts, which no box and no shear would place."""
    offsets = np.array([item.position for item in slices]) - slices[0].position
    sideways = offsets - np.outer(offsets @ normal, normal)
    tolerance = SLICE_TOLERANCE * min(slices[0].pixel_spacing)
    if np.linalg.norm(sideways, axis=1).max() <= tolerance:
        return None
    # A tilted gantry shifts each slice by the same step: sideways = slope * distance along the normal.
    distance = along - along[0]
    slope = sideways.T @ distance / float(distance @ distance)
    astray = np.linalg.norm(sideways - np.outer(distance, slope), axis=1)
    if astray.max() > tolerance:
        off = np.linalg.norm(sideways - np.median(sideways, axis=0), axis=1)
        worst = int(np.argmax(off))
        raise VolumeIOError(
            name,
            f"slice {slices[worst].name} lies {off[worst]:.3g} mm sideways of the others "
            "(the slices are not stacked along their normal)",
        )
    stated = slices[0].image.header.get("GantryDetectorTilt")
    return Tilt(
        step=tuple(float(v) for v in slope * distance[-1] / (len(slices) - 1)),
        degrees=math.degrees(math.atan(float(np.linalg.norm(slope)))),
        largest_shift=float(np.linalg.norm(sideways, axis=1).max()),
        stated="" if stated in (None, "") else str(stated),
    )


def _check_pixel_data(item: _Slice) -> None:
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
