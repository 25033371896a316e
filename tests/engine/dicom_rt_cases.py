"""RTSTRUCT and SEG files for the small series of ``dicom_series_cases``, good and damaged.

``rt_files(series_folder, folder)`` exports two organs of a label map as RS.dcm and SEG.dcm and
writes the damaged variants beside them; ``DAMAGED_RT`` says, per variant, whether the import must
refuse it (and with which words) or warn (and about what). Used by the tests and by
``bench/hostile_dicom.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from dicom_series_cases import SHAPE
from pydicom.dataelem import RawDataElement

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import export_rtstruct, export_seg, read_series
from cgs_engine.io import write_volume
from cgs_engine.volume import Volume

TABLE = derive_class_table(openkbp_class_names())


def two_organs(series_volume: Volume) -> Volume:
    """Brainstem (1) and SpinalCord (2) boxes on the series' grid."""
    array = np.zeros(SHAPE, np.uint8)
    array[2:6, 5:15, 8:20] = 1
    array[3:5, 10:20, 20:28] = 2
    return series_volume.like(array, "labels")


def _first_contour(dataset):
    return dataset.ROIContourSequence[0].ContourSequence[0]


def _nan(dataset) -> None:
    contour = _first_contour(dataset)
    values = list(contour.ContourData)
    values[4] = "NaN"
    with warnings.catch_warnings():  # pydicom warns that NaN is no valid DS: that is the point
        warnings.simplefilter("ignore")
        contour.ContourData = values


def _text(dataset) -> None:
    data = b"abc\\1\\2\\x\\y\\z\\1\\2\\3 "
    tag = pydicom.tag.Tag(0x30060050)
    _first_contour(dataset)[tag] = RawDataElement(tag, "DS", len(data), data, 0, False, True)


def _open(dataset) -> None:
    _first_contour(dataset).ContourGeometricType = "OPEN_PLANAR"


def _point(dataset) -> None:
    contour = _first_contour(dataset)
    contour.ContourGeometricType = "POINT"
    contour.ContourData = list(contour.ContourData)[:3]
    contour.NumberOfContourPoints = 1


def _off_image(dataset) -> None:
    contour = _first_contour(dataset)
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 0] += 500.0  # half a metre to the patient's left: beyond the 26 mm wide image
    contour.ContourData = [f"{value:.3f}" for value in points.ravel()]


def _empty(dataset) -> None:
    dataset.StructureSetROISequence = []
    dataset.ROIContourSequence = []
    dataset.RTROIObservationsSequence = []


def _no_frame(dataset) -> None:
    del dataset.ReferencedFrameOfReferenceSequence
    for roi in dataset.StructureSetROISequence:
        del roi.ReferencedFrameOfReferenceUID


def _one_roi_elsewhere(dataset) -> None:
    dataset.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = pydicom.uid.generate_uid()


def _no_per_frame_groups(dataset) -> None:
    del dataset.PerFrameFunctionalGroupsSequence


def _no_shared_groups(dataset) -> None:
    del dataset.SharedFunctionalGroupsSequence


# name -> (source "RS" or "SEG", change, "refuse" or "warn", words in the error or in a warning)
DAMAGED_RT: dict[str, tuple[str, Callable | float, str, str]] = {
    "rtstruct-nan-contour": ("RS", _nan, "refuse", "NaN or infinite"),
    "rtstruct-text-contour": ("RS", _text, "refuse", "ContourData"),
    "rtstruct-truncated-30": ("RS", 0.3, "refuse", "truncated"),
    "rtstruct-truncated-60": ("RS", 0.6, "refuse", "truncated"),
    "rtstruct-truncated-95": ("RS", 0.95, "refuse", "truncated"),
    "rtstruct-no-frame-of-reference": ("RS", _no_frame, "refuse", "names no frame of reference"),
    "rtstruct-open-planar": ("RS", _open, "warn", "not closed"),
    "rtstruct-point": ("RS", _point, "warn", "not closed"),
    "rtstruct-off-the-image": ("RS", _off_image, "warn", "wholly outside the image"),
    "rtstruct-empty": ("RS", _empty, "warn", "the label map is empty"),
    "rtstruct-roi-in-another-frame": ("RS", _one_roi_elsewhere, "warn", "another frame of reference"),
    "seg-truncated-30": ("SEG", 0.3, "refuse", "truncated"),
    "seg-truncated-60": ("SEG", 0.6, "refuse", "truncated"),
    "seg-truncated-95": ("SEG", 0.95, "refuse", "truncated"),
    "seg-no-per-frame-groups": ("SEG", _no_per_frame_groups, "refuse", "PerFrameFunctionalGroupsSequence"),
    "seg-no-shared-groups": ("SEG", _no_shared_groups, "refuse", "not a usable DICOM Segmentation"),
}


def rt_files(series_folder: Path, folder: Path) -> dict[str, Path]:
    """RS.dcm, SEG.dcm, labels.nii.gz and every DAMAGED_RT variant, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    series = read_series(series_folder)
    labels = two_organs(series.volume)
    files = {"labels": write_volume(labels, folder / "labels.nii.gz")}
    files["RS"] = export_rtstruct(labels, series, TABLE, folder / "RS.dcm").path
    files["SEG"] = export_seg(labels, series, TABLE, folder / "SEG.dcm").path
    for name, (source, change, _, _) in DAMAGED_RT.items():
        target = folder / f"{name}.dcm"
        if isinstance(change, float):
            data = files[source].read_bytes()
            target.write_bytes(data[: int(len(data) * change)])
        else:
            dataset = pydicom.dcmread(files[source])
            change(dataset)
            dataset.save_as(target)
        files[name] = target
    return files


def foreign_seg(series, segments: dict[str, np.ndarray], path: Path, kind: str = "BINARY") -> Path:
    """A SEG of one segment per class name (of TABLE), written with highdicom as another system
    may write it (overlapping segments, fractional values); ``kind`` BINARY or FRACTIONAL."""
    import highdicom as hd

    from cgs_engine.dicom.seg import _description  # the segment descriptions our export writes

    entries = {entry.name: entry for entry in TABLE.entries}
    descriptions = [_description(hd, number, entries[name], name) for number, name in enumerate(segments, 1)]
    stacked = np.stack(list(segments.values()), axis=-1)
    fractional = (
        {"fractional_type": "PROBABILITY", "max_fractional_value": 200} if kind == "FRACTIONAL" else {}
    )
    hd.seg.Segmentation(
        source_images=series.headers(),
        pixel_array=stacked.astype(np.float32 if kind == "FRACTIONAL" else np.uint8),
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=5,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
        **fractional,
    ).save_as(path)
    return path
