"""A DICOM image series with what contour and segmentation files must reference.

:func:`read_series` runs the one series check that every reader of a DICOM folder runs
(:mod:`cgs_engine.io.dicom_series_checks`: one series, one regular grid, complete pixel data,
one frame of reference), so a series that ``cgs predict`` reads can also be exported to, and the
Volume and its Geometry are exactly what ``cgs predict`` sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom

from cgs_engine.io.dicom_series_checks import check_dicom_series, read_checked_series
from cgs_engine.io.errors import one_line, require_utf8_path
from cgs_engine.io.readers import volume_of
from cgs_engine.volume import Volume

from .errors import DicomError


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
        # force: slices written without preamble and DICM marker are part of the series too
        return [pydicom.dcmread(item.path, stop_before_pixels=True, force=True) for item in self.slices]

    def describe(self) -> str:
        return f"{len(self.slices)} {self.modality} slices, series {self.series_instance_uid}"

    def identity(self) -> dict[str, str]:
        """What labels made on this series record of it (``made_on``, as ``io.series_identity``)."""
        patient = one_line(str(self.header.get("PatientID", "") or ""))
        return {"dicom_series": self.series_instance_uid, "patient_id": patient}

    def check_made_on(self, made_on: dict[str, str] | None, labels: str | os.PathLike, record: str) -> None:
        """Refuse labels whose class file (``record``) says they were made on another series: on a
        grid of the same size, spacing and origin nothing else would tell one patient's contours
        written onto another's images."""
        recorded = (made_on or {}).get("dicom_series")
        if not recorded or recorded == self.series_instance_uid:
            return
        theirs = _whose(made_on.get("patient_id", ""))
        ours = _whose(str(self.header.get("PatientID", "") or ""))
        raise DicomError(
            labels,
            f"was made on DICOM series {recorded}{theirs}, not on the series in {self.folder} "
            f"({self.series_instance_uid}{ours}); give the series it was made on (if these labels "
            f"truly belong to this one, remove 'made_on' from {Path(record).name})",
        )


def _whose(patient_id: str) -> str:
    return f", patient {patient_id}" if patient_id.strip() else ""


def read_series(folder: str | os.PathLike, series_uid: str | None = None) -> DicomSeries:
    """The image series in ``folder`` (``series_uid`` picks one of several); :class:`DicomError` or
    :class:`~cgs_engine.io.VolumeIOError` if it is unusable."""
    name = os.fspath(folder)
    location = Path(name)
    if not location.is_dir():
        raise DicomError(name, "not a folder (give the folder that holds the DICOM image series)")
    require_utf8_path(name)
    checked = check_dicom_series(location, name, series_uid)
    volume = volume_of(read_checked_series(checked, name), name, "image")
    slices = tuple(
        SeriesSlice(
            path=path,
            sop_class_uid=str(header.SOPClassUID),
            sop_instance_uid=str(header.SOPInstanceUID),
            position=tuple(float(v) for v in header.ImagePositionPatient),
        )
        for path, header in zip(checked.files, checked.headers, strict=True)
    )
    first = checked.headers[0]
    return DicomSeries(
        folder=location,
        volume=volume,
        slices=slices,
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        series_instance_uid=checked.series_uid,
        frame_of_reference_uid=str(first.FrameOfReferenceUID),
        modality=str(first.get("Modality", "")),
        header=first,
    )
