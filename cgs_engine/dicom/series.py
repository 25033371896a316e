"""A DICOM image series with what contour and segmentation files must reference.

:func:`read_series` reads the pixels through :func:`cgs_engine.io.read_volume` (so the Volume and
its Geometry are exactly what ``cgs predict`` sees) and the headers with pydicom, and checks
that the two agree: one orientation, evenly spaced slices (a missing slice is an error, not an
averaged spacing), one frame of reference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgs_engine.io import VolumeIOError, read_volume
from cgs_engine.io.readers import largest_dicom_series
from cgs_engine.volume import Volume

from .errors import DicomError

# Slice positions may differ from an even grid by this fraction of the spacing (rounding in DS strings).
SPACING_TOLERANCE = 0.05
ORIENTATION_TOLERANCE = 1e-4
REQUIRED_TAGS = ("SOPInstanceUID", "SOPClassUID", "ImagePositionPatient", "ImageOrientationPatient")


@dataclass(frozen=True)
class SeriesSlice:
    """One image of the series, in the volume's slice order."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    position: tuple[float, float, float]


@dataclass(frozen=True)
class DicomSeries:
    folder: Path
    volume: Volume
    slices: tuple[SeriesSlice, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    header: object  # the first slice's pydicom Dataset without pixels: patient and study attributes

    @property
    def sop_instance_uids(self) -> list[str]:
        return [item.sop_instance_uid for item in self.slices]

    def headers(self) -> list:
        """Every slice's pydicom Dataset without pixel data, in slice order."""
        import pydicom

        return [pydicom.dcmread(item.path, stop_before_pixels=True) for item in self.slices]

    def describe(self) -> str:
        return f"{len(self.slices)} {self.modality} slices, series {self.series_instance_uid}"


def read_series(folder: str | os.PathLike) -> DicomSeries:
    """The largest image series in ``folder``; :class:`DicomError` / :class:`VolumeIOError` if unusable."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = os.fspath(folder)
    location = Path(name)
    if not location.is_dir():
        raise DicomError(name, "not a folder (give the folder that holds the DICOM image series)")
    files = largest_dicom_series(location)
    if not files:
        raise DicomError(name, "no DICOM image series found in this folder")
    headers = []
    for file in files:
        try:
            headers.append(pydicom.dcmread(file, stop_before_pixels=True))
        except (InvalidDicomError, OSError, ValueError) as error:
            raise DicomError(file, f"not a readable DICOM file ({error})") from None
    for file, header in zip(files, headers, strict=True):
        missing = [tag for tag in REQUIRED_TAGS if tag not in header]
        if missing:
            raise DicomError(file, f"image lacks {', '.join(missing)}; it cannot be placed in 3D")
    _check_one_value(name, files, headers, "SeriesInstanceUID", "series")
    _check_one_value(name, files, headers, "FrameOfReferenceUID", "frame of reference")
    normal = _check_orientation(name, files, headers)
    _check_even_spacing(name, files, headers, normal)
    volume = read_volume(location, kind="image")
    _check_volume_agrees(name, volume, headers)
    slices = tuple(
        SeriesSlice(
            path=Path(file),
            sop_class_uid=str(header.SOPClassUID),
            sop_instance_uid=str(header.SOPInstanceUID),
            position=tuple(float(v) for v in header.ImagePositionPatient),
        )
        for file, header in zip(files, headers, strict=True)
    )
    first = headers[0]
    return DicomSeries(
        folder=location,
        volume=volume,
        slices=slices,
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        series_instance_uid=str(first.SeriesInstanceUID),
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        modality=str(first.get("Modality", "")),
        header=first,
    )


def _check_one_value(name: str, files: list[str], headers: list, keyword: str, what: str) -> None:
    values = {str(header.get(keyword, "")) for header in headers}
    if "" in values:
        where = next(file for file, header in zip(files, headers, strict=True) if not header.get(keyword))
        raise DicomError(where, f"image has no {keyword}; contours and segments must reference one")
    if len(values) > 1:
        raise DicomError(name, f"the series mixes {len(values)} {what} UIDs; one is needed")


def _check_orientation(name: str, files: list[str], headers: list) -> np.ndarray:
    orientations = np.array([[float(v) for v in header.ImageOrientationPatient] for header in headers])
    if orientations.shape[1] != 6:
        raise DicomError(files[0], "ImageOrientationPatient does not hold 6 values")
    changed = np.abs(orientations - orientations[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if changed.any():
        raise DicomError(name, f"slice {Path(files[int(np.argmax(changed))]).name} has another orientation")
    row, column = orientations[0, :3], orientations[0, 3:]
    return np.cross(row, column)


def _check_even_spacing(name: str, files: list[str], headers: list, normal: np.ndarray) -> None:
    if len(headers) < 2:
        raise DicomError(name, "the series has a single slice; a 3D volume is needed")
    along = np.array([np.dot(normal, [float(v) for v in header.ImagePositionPatient]) for header in headers])
    steps = np.diff(along)
    if np.any(np.abs(steps) < 1e-3):
        index = int(np.argmin(np.abs(steps)))
        raise DicomError(
            name, f"two slices share one position ({Path(files[index + 1]).name}); duplicate slices"
        )
    spacing = float(np.median(np.abs(steps)))
    uneven = np.abs(np.abs(steps) - spacing) > SPACING_TOLERANCE * spacing
    if uneven.any() or np.unique(np.sign(steps)).size > 1:
        index = int(np.argmax(uneven)) if uneven.any() else 0
        gap = abs(float(steps[index]))
        raise DicomError(
            name,
            f"slices are not evenly spaced: {gap:g} mm between {Path(files[index]).name} and "
            f"{Path(files[index + 1]).name}, {spacing:g} mm elsewhere (missing slices?)",
        )


def _check_volume_agrees(name: str, volume: Volume, headers: list) -> None:
    """The geometry ITK derived must put slice k where its header says it is."""
    if volume.shape[0] != len(headers):
        raise VolumeIOError(name, f"read {volume.shape[0]} slices from {len(headers)} DICOM files")
    geometry = volume.geometry
    step = geometry.direction_matrix[:, 2] * geometry.spacing[2]
    for index in (0, len(headers) - 1):
        expected = np.asarray(geometry.origin) + step * index
        actual = np.array([float(v) for v in headers[index].ImagePositionPatient])
        if np.abs(expected - actual).max() > SPACING_TOLERANCE * geometry.spacing[2]:
            raise DicomError(
                name, f"slice {index} lies at {actual.round(3)} but the volume puts it at {expected.round(3)}"
            )
