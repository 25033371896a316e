"""An RT Structure Set's contours as a label map on its image series' grid.

ROIs become classes of a class table by name (TG-263, the class name or a known alias) or by
their SNOMED CT code; ROIs that match no class are reported and left out. Where ROIs overlap,
the lower class id wins (as in the OpenKBP label maps). The structure set must belong to the
series: same frame of reference, the same series if it names one, and contours on its slices.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cgs_engine.volume import Volume

from .class_table import ClassEntry, ClassTable, Code
from .contours import fill_contours
from .errors import DicomError
from .series import DicomSeries

# A contour may lie this fraction of the slice spacing off its slice's plane.
PLANE_TOLERANCE = 0.1


@dataclass
class ImportedROI:
    roi_name: str
    entry: ClassEntry
    contours: int
    voxels: int = 0


@dataclass
class RTStructImport:
    labels: Volume
    rois: list[ImportedROI] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # ROI names no class stands for
    empty: list[str] = field(default_factory=list)  # matched ROIs without contours


def read_rtstruct(path: str | os.PathLike):
    """The pydicom Dataset of an RTSTRUCT file, or :class:`DicomError`."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    name = os.fspath(path)
    if not Path(name).is_file():
        raise DicomError(name, "no such file")
    try:
        dataset = pydicom.dcmread(name)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise DicomError(name, f"not a readable DICOM file ({error})") from None
    if dataset.get("Modality") != "RTSTRUCT" or "StructureSetROISequence" not in dataset:
        raise DicomError(name, f"not an RT Structure Set (Modality {dataset.get('Modality', 'missing')})")
    return dataset


def import_rtstruct(path: str | os.PathLike, series: DicomSeries, table: ClassTable) -> RTStructImport:
    """The label map (uint8/uint16, on ``series.volume``'s geometry) of the RTSTRUCT at ``path``."""
    name = os.fspath(path)
    dataset = read_rtstruct(name)
    check_references(dataset, series, name)
    names = {int(roi.ROINumber): str(roi.get("ROIName", "")) for roi in dataset.StructureSetROISequence}
    codes = _identification_codes(dataset)
    rois, unmatched, empty = [], [], []
    contours_by_roi = {int(item.ReferencedROINumber): item for item in dataset.get("ROIContourSequence", [])}
    masks: dict[int, np.ndarray] = {}
    for number, roi_name in names.items():
        entry = table.match(roi_name, *codes.get(number, (None, None)))
        if entry is None:
            unmatched.append(roi_name)
            continue
        contours = list(contours_by_roi.get(number, {}).get("ContourSequence", []))
        if not contours:
            empty.append(roi_name)
            continue
        mask = _roi_mask(contours, series, name, roi_name)
        masks[entry.id] = masks[entry.id] | mask if entry.id in masks else mask
        rois.append(ImportedROI(roi_name, entry, len(contours), int(mask.sum())))
    top = max(masks, default=0)
    array = np.zeros(series.volume.shape, dtype=np.uint8 if top <= 255 else np.uint16)
    for class_id in sorted(masks, reverse=True):  # lower ids painted last: they win on overlap
        array[masks[class_id]] = class_id
    return RTStructImport(series.volume.like(array, "labels"), rois, unmatched, empty)


def check_references(dataset, series: DicomSeries, name: str) -> None:
    """:class:`DicomError` unless the structure set was drawn on ``series``."""
    frames = [frame for frame in dataset.get("ReferencedFrameOfReferenceSequence", [])]
    frame_uids = {str(frame.get("FrameOfReferenceUID", "")) for frame in frames}
    roi_frames = {
        str(roi.get("ReferencedFrameOfReferenceUID", "")) for roi in dataset.StructureSetROISequence
    }
    uids = (frame_uids | roi_frames) - {""}
    if uids and series.frame_of_reference_uid not in uids:
        raise DicomError(
            name,
            f"drawn in frame of reference {sorted(uids)[0]}, but the series in {series.folder} is in "
            f"{series.frame_of_reference_uid} (another scan or patient)",
        )
    referenced = {
        str(item.SeriesInstanceUID)
        for frame in frames
        for study in frame.get("RTReferencedStudySequence", [])
        for item in study.get("RTReferencedSeriesSequence", [])
        if "SeriesInstanceUID" in item
    }
    if referenced and series.series_instance_uid not in referenced:
        raise DicomError(
            name,
            f"made for series {sorted(referenced)[0]}, not for the series in {series.folder} "
            f"({series.series_instance_uid})",
        )


def _identification_codes(dataset) -> dict[int, tuple[Code | None, Code | None]]:
    codes = {}
    for observation in dataset.get("RTROIObservationsSequence", []):
        items = observation.get("RTROIIdentificationCodeSequence", [])
        if "ReferencedROINumber" not in observation or not items:
            continue
        code, modifiers = _code(items[0]), items[0].get("SegmentedPropertyTypeModifierCodeSequence", [])
        codes[int(observation.ReferencedROINumber)] = (code, _code(modifiers[0]) if modifiers else None)
    return codes


def _code(item) -> Code | None:
    if "CodeValue" not in item or "CodingSchemeDesignator" not in item:
        return None
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")))


def _roi_mask(contours: list, series: DicomSeries, name: str, roi_name: str) -> np.ndarray:
    geometry = series.volume.geometry
    depth, rows, columns = series.volume.shape
    world_to_index = np.linalg.inv(geometry.direction_matrix @ np.diag(geometry.spacing))
    slice_of_uid = {item.sop_instance_uid: index for index, item in enumerate(series.slices)}
    per_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    for contour in contours:
        kind = str(contour.get("ContourGeometricType", "CLOSED_PLANAR"))
        data = np.asarray([float(value) for value in contour.get("ContourData", [])], dtype=float)
        if data.size % 3:
            raise DicomError(name, f"ROI {roi_name}: a contour has {data.size} coordinates, not 3 per point")
        if kind != "CLOSED_PLANAR" or data.size < 9:
            continue  # points, open curves and contours of 1-2 points enclose no area
        index = (
            data.reshape(-1, 3) - np.asarray(geometry.origin)
        ) @ world_to_index.T  # (x, y, z) voxel indices
        plane = int(round(float(np.median(index[:, 2]))))
        if np.abs(index[:, 2] - plane).max() > PLANE_TOLERANCE or not 0 <= plane < depth:
            raise DicomError(
                name,
                f"ROI {roi_name}: a contour does not lie on a slice of the series in {series.folder} "
                f"(slice index {float(np.median(index[:, 2])):.2f} of 0..{depth - 1})",
            )
        _check_image_reference(contour, slice_of_uid, plane, series, name, roi_name)
        per_slice[plane].append(index[:, [1, 0]])  # (row, column)
    mask = np.zeros((depth, rows, columns), dtype=bool)
    for plane, polygons in per_slice.items():
        mask[plane] = fill_contours(polygons, (rows, columns))
    return mask


def _check_image_reference(contour, slice_of_uid, plane, series, name, roi_name) -> None:
    references = contour.get("ContourImageSequence", [])
    if not references or "ReferencedSOPInstanceUID" not in references[0]:
        return
    uid = str(references[0].ReferencedSOPInstanceUID)
    if uid not in slice_of_uid:
        raise DicomError(
            name, f"ROI {roi_name}: a contour references image {uid}, which is not in {series.folder}"
        )
    if slice_of_uid[uid] != plane:
        raise DicomError(
            name, f"ROI {roi_name}: a contour lies on slice {plane} but references slice {slice_of_uid[uid]}"
        )
