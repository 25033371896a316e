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
from .dicom_folder import image_series_in, pick_series, quiet_pydicom
from .dicom_grey import undo_inverted_grey
from .dicom_slice_header import SliceHeader, check_pixel_data, parsed_slice
from .errors import VolumeIOError, itk_reason, require_utf8_path

SLICE_TOLERANCE = 0.05  # a slice may lie this fraction of a voxel off its place on the grid
ORIENTATION_TOLERANCE = 1e-4  # between slices, per direction cosine
UNIT_TOLERANCE = 1e-3  # row and column directions: unit length and perpendicular
PIXEL_SPACING_RTOL = 1e-4


@dataclass(frozen=True)
class CheckedSeries:
    """A series that passed: its files and headers in slice order, and the headers' geometry."""

    folder: Path
    series_uid: str
    files: tuple[Path, ...]
    headers: tuple[Any, ...]  # pydicom Datasets, pixel data not read
    geometry: Geometry  # of the slices' own grid; for a tilt, of the regular grid it is resampled on
    rescales: tuple[tuple[float, float], ...]  # each slice's (slope, intercept), as checked
    tilt: Tilt | None = None  # only where the caller allowed one


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
        slices = [parsed_slice(image) for image in images]
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
        check_pixel_data(item)
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
        rescales=tuple(item.rescale for item in slices),
        tilt=tilt,
    )


def read_checked_series(series: CheckedSeries, name: str) -> sitk.Image:
    """The pixels of a checked series with the headers' geometry."""
    files = [require_utf8_path(path) for path in series.files]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    if len(set(series.rescales)) > 1:  # else ITK casts every slice to the first one's integer type
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
    return undo_inverted_grey(image, series.files, series.headers, series.rescales)


@contextlib.contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK prints its own warnings on stderr (e.g. "Non uniform sampling"); the checks decide."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


# --- the series ----------------------------------------------------------------------------------


def _check_alike(name: str, slices: list[SliceHeader]) -> None:
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


def _directions(first: SliceHeader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column directions made exactly orthonormal, and the slice normal (right-handed)."""
    row = first.orientation[:3] / np.linalg.norm(first.orientation[:3])
    column = first.orientation[3:] - (first.orientation[3:] @ row) * row
    column /= np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _check_positions(name: str, slices: list[SliceHeader], along: np.ndarray) -> float:
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


def _tilt(name: str, slices: list[SliceHeader], normal: np.ndarray, along: np.ndarray) -> Tilt | None:
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
