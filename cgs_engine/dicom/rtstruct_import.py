"""An RT Structure Set's contours as a label map on its image series' grid.

ROIs become classes of a class table by name (TG-263, the class name or a known alias) or by
their SNOMED CT code, one ROI per class (:mod:`cgs_engine.dicom.matching`); ROIs that match no
class, or a class another ROI gives, are reported and left out. Where ROIs overlap,
the lower class id wins (as in the OpenKBP label maps). The structure set must belong to the
series: same frame of reference, the same series if it names one, and contours on its slices.
Every contour that does not reach the label map is counted by reason (:class:`DroppedContours`)
and reported, never lost silently: open curves and points, contours of fewer than 3 points,
contours wholly off the image (and, separately, those cut at its edge), contours enclosing no
pixel centre, ROIs of another frame of reference, contours of ROIs the set does not name. Contours
of one ROI on one slice that repeat or partly overlap each other are read as their union (a
contour inside another is a hole) and reported by slice.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable
from cgs_engine.volume import Volume

from .contours import fill_slice
from .errors import DicomError
from .matching import label_map, match_structure, one_per_class, overlap_warning
from .names import shown_name, structure_names
from .object_file import read_dicom_object
from .rtstruct_frames import check_unique_numbers, roi_frames
from .series import DicomSeries

# A contour may lie this fraction of the slice spacing off its slice's plane.
PLANE_TOLERANCE = 0.1
CLOSED = "CLOSED_PLANAR"
# pixels: a contour point this close to a pixel centre is on it (see on_pixel_centres); coordinates
# written with 3 decimals of a millimetre are a thousandth of a pixel off at 0.5 mm pixels
CENTRE_SNAP = 2e-3
EDGE_TOLERANCE = 1e-2  # pixels a contour may reach beyond the outer pixels' edge without "cut" (3 decimals)
DROP_REASONS = {
    "not closed": "not closed (OPEN_PLANAR, OPEN_NONPLANAR or POINT), so enclosing no area",
    "too few points": "with fewer than 3 points",
    "off the image": "wholly outside the image",
    # Reported, not widened: no rule of the project gives a structure narrower than a pixel the
    # pixel nearest to it (SEG and the editors have none either).
    "no voxel": "enclosing no pixel centre (narrower than a pixel), so reaching no voxel",
    "other frame": "of ROIs drawn in another frame of reference",
    "unnamed ROI": "of ROI numbers the structure set does not name",
    "no class": "of ROIs that no class of the table stands for",
    "class taken": "of ROIs standing for a class that another ROI gives",
}


@dataclass
class ImportedROI:
    roi_name: str
    entry: ClassEntry
    contours: int
    voxels: int = 0


@dataclass
class DroppedContours:
    """Contours left out of the label map: reason -> ROI name -> count (and those cut at the edge,
    and the slices where contours repeat or overlap and were read as their union)."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    clipped: dict[str, int] = field(default_factory=dict)
    # ROI name -> slice indices where two of its contours repeat / partly overlap each other
    repeated: dict[str, list[int]] = field(default_factory=dict)
    overlapping: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, roi_name: str, count: int = 1) -> None:
        if count:
            per_roi = self.counts[reason]
            per_roi[roi_name] = per_roi.get(roi_name, 0) + count

    @property
    def total(self) -> int:
        return sum(sum(per_roi.values()) for per_roi in self.counts.values())

    def lines(self) -> list[str]:
        """One warning line per reason, naming the ROIs and their counts."""
        found = []
        for reason, per_roi in self.counts.items():
            if reason in ("no class", "class taken"):  # listed as left out, one line per ROI
                continue
            found.append(
                f"{_contours(sum(per_roi.values()))} left out, {DROP_REASONS[reason]}: {_listed(per_roi)}"
            )
        if self.clipped:
            found.append(
                f"{_contours(sum(self.clipped.values()))} reaching beyond the image, cut at its edge: "
                f"{_listed(self.clipped)}"
            )
        if self.repeated:
            found.append(
                "contours of one ROI repeated on a slice (the same pixels twice), read once: "
                f"{_slices(self.repeated)}"
            )
        if self.overlapping:
            found.append(
                "contours of one ROI partly overlapping on a slice, read as their union (not as a hole): "
                f"{_slices(self.overlapping)}"
            )
        return found


@dataclass
class RTStructImport:
    labels: Volume
    rois: list[ImportedROI] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)  # ROI names no class stands for
    empty: list[str] = field(default_factory=list)  # matched ROIs without contours
    dropped: DroppedContours = field(default_factory=DroppedContours)
    overlap_voxels: int = 0  # voxels claimed by more than one class (the lower id kept them)
    duplicates: list[str] = field(default_factory=list)  # ROIs left out: their class has an ROI
    named: int = 0  # ROIs the structure set names (on any frame)

    @property
    def no_class_matched(self) -> bool:
        """Every ROI of the structure set named something the table has no class for (not just
        empty or on another frame): the table is the wrong one."""
        return bool(self.named) and len(self.unmatched) == self.named

    @property
    def warnings(self) -> list[str]:
        """What the label map does not hold of the structure set, one line each."""
        found = self.dropped.lines() + self.duplicates
        if not self.rois:
            found.append("the structure set holds no contour of a class of the table: the label map is empty")
        if self.empty:
            found.append(f"ROIs without contours: {', '.join(map(shown_name, self.empty))}")
        return found + overlap_warning(self.overlap_voxels, "ROI")


def read_rtstruct(path: str | os.PathLike):
    """The pydicom Dataset of an RTSTRUCT file, or :class:`DicomError`."""
    name = os.fspath(path)
    dataset = read_dicom_object(name)
    if dataset.get("Modality") != "RTSTRUCT" or "StructureSetROISequence" not in dataset:
        raise DicomError(name, f"not an RT Structure Set (Modality {dataset.get('Modality', 'missing')})")
    return dataset


def import_rtstruct(path: str | os.PathLike, series: DicomSeries, table: ClassTable) -> RTStructImport:
    """The label map (uint8/uint16, on ``series.volume``'s geometry) of the RTSTRUCT at ``path``."""
    name = os.fspath(path)
    dataset = read_rtstruct(name)
    frames = roi_frames(dataset, series, name)
    result = RTStructImport(labels=series.volume)
    names = {number: _roi_name(dataset, number) for number in frames}
    result.named = len(names)
    codes = _identification_codes(dataset)
    written = structure_names(table.entries)
    contours_by_roi = _contours_by_roi(dataset, name)
    for number in sorted(set(contours_by_roi) - set(frames)):
        result.dropped.add("unnamed ROI", f"ROI number {number}", len(contours_by_roi[number]))
    matches = []
    for number, roi_name in names.items():
        contours = contours_by_roi.get(number, [])
        match = match_structure(number, roi_name, table, written, *codes.get(number, (None, None)))
        if frames[number] != series.frame_of_reference_uid:
            result.dropped.add("other frame", roi_name, len(contours))
            if match is None:  # on another frame, but the table lacks it all the same
                result.unmatched.append(roi_name)
            continue
        if match is None:
            result.unmatched.append(roi_name)
            result.dropped.add("no class", roi_name, len(contours))
        elif not contours:
            result.empty.append(roi_name)
        else:
            matches.append(match)
    kept, result.duplicates = one_per_class(matches, "ROI")
    for match in matches:
        if match not in kept:
            result.dropped.add("class taken", match.name, len(contours_by_roi[match.key]))
    masks: dict[int, np.ndarray] = {}
    for match in kept:
        contours = contours_by_roi[match.key]
        mask = masks[match.entry.id] = _roi_mask(contours, series, name, match.name, result.dropped)
        result.rois.append(ImportedROI(match.name, match.entry, len(contours), int(mask.sum())))
    result.labels, result.overlap_voxels = label_map(masks, series.volume)
    return result


def _roi_name(dataset, number: int) -> str:
    roi = next(item for item in dataset.StructureSetROISequence if _whole_number(item.ROINumber) == number)
    return str(roi.get("ROIName", "") or "") or f"ROI {number}"


def _contours_by_roi(dataset, name: str) -> dict[int, list]:
    items = list(dataset.get("ROIContourSequence", []))
    numbers = [_whole_number(item.get("ReferencedROINumber")) for item in items]
    if None in numbers:
        raise DicomError(name, "an ROIContourSequence item has no usable ReferencedROINumber")
    check_unique_numbers(numbers, "ROIContourSequence", "ReferencedROINumber", name)
    return {
        number: list(item.get("ContourSequence", [])) for number, item in zip(numbers, items, strict=True)
    }


def _whole_number(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _identification_codes(dataset) -> dict[int, tuple[Code | None, Code | None]]:
    codes = {}
    for observation in dataset.get("RTROIObservationsSequence", []):
        items = observation.get("RTROIIdentificationCodeSequence", [])
        if "ReferencedROINumber" not in observation or not items:
            continue
        number = _whole_number(observation.ReferencedROINumber)
        if number is None:
            continue
        code, modifiers = _code(items[0]), items[0].get("SegmentedPropertyTypeModifierCodeSequence", [])
        codes[number] = (code, _code(modifiers[0]) if modifiers else None)
    return codes


def _code(item) -> Code | None:
    if "CodeValue" not in item or "CodingSchemeDesignator" not in item:
        return None
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")))


def _roi_mask(
    contours: list, series: DicomSeries, name: str, roi_name: str, dropped: DroppedContours
) -> np.ndarray:
    geometry = series.volume.geometry
    depth, rows, columns = series.volume.shape
    world_to_index = np.linalg.inv(geometry.direction_matrix @ np.diag(geometry.spacing))
    slice_of_uid = {item.sop_instance_uid: index for index, item in enumerate(series.slices)}
    per_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    label = repr(roi_name)
    for number, contour in enumerate(contours, start=1):
        kind = str(contour.get("ContourGeometricType", CLOSED) or CLOSED).strip().upper()
        points = _points(contour, name, f"ROI {label}, contour {number}")
        if kind != CLOSED:
            dropped.add("not closed", roi_name)
            continue
        if len(points) < 3:
            dropped.add("too few points", roi_name)
            continue
        index = (points - np.asarray(geometry.origin)) @ world_to_index.T  # (x, y, z) voxel indices
        plane = int(round(float(np.median(index[:, 2]))))
        if np.abs(index[:, 2] - plane).max() > PLANE_TOLERANCE or not 0 <= plane < depth:
            raise DicomError(
                name,
                f"ROI {label}: a contour does not lie on a slice of the series in {series.folder} "
                f"(slice index {float(np.median(index[:, 2])):.2f} of 0..{depth - 1})",
            )
        _check_image_reference(contour, slice_of_uid, plane, series, name, label)
        polygon = on_pixel_centres(index[:, [1, 0]])  # (row, column)
        if not _reaches_a_pixel(polygon, rows, columns):
            dropped.add("off the image", roi_name)
            continue
        if _beyond_edge(polygon, rows, columns):
            dropped.clipped[roi_name] = dropped.clipped.get(roi_name, 0) + 1
        per_slice[plane].append(polygon)
    mask = np.zeros((depth, rows, columns), dtype=bool)
    for plane in sorted(per_slice):
        filled = fill_slice(per_slice[plane], (rows, columns))
        mask[plane] = filled.mask
        dropped.add("no voxel", roi_name, filled.empty)
        if filled.repeated:
            dropped.repeated.setdefault(roi_name, []).append(plane)
        if filled.overlapping:
            dropped.overlapping.setdefault(roi_name, []).append(plane)
    return mask


def _points(contour, name: str, where: str) -> np.ndarray:
    """The contour's (N, 3) finite LPS coordinates, or :class:`DicomError`."""
    values = contour.get("ContourData", None)
    values = [] if values is None else [values] if not hasattr(values, "__len__") else list(values)
    try:
        data = np.array([float(value) for value in values], dtype=float)
    except (TypeError, ValueError):
        raise DicomError(name, f"{where}: ContourData holds values that are not numbers") from None
    if not all(math.isfinite(value) for value in data):
        raise DicomError(name, f"{where}: ContourData holds NaN or infinite coordinates")
    if data.size % 3:
        raise DicomError(name, f"{where}: ContourData has {data.size} coordinates, not 3 per point")
    return data.reshape(-1, 3)


def _reaches_a_pixel(polygon: np.ndarray, rows: int, columns: int) -> bool:
    """Whether the polygon's bounding box overlaps the pixel centres of the image at all."""
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    return bool(high[0] >= 0 and high[1] >= 0 and low[0] <= rows - 1 and low[1] <= columns - 1)


def on_pixel_centres(polygon: np.ndarray) -> np.ndarray:
    """Points within ``CENTRE_SNAP`` pixels of a pixel centre moved onto it.

    Many writers (rt-utils, OpenCV's contour tracing, several AI exporters) run a contour through
    the centres of an organ's boundary pixels. Whether such a centre lies inside the polygon was
    then decided by the 1e-15 rounding of the mm -> pixel conversion: a 7 x 7 organ came back with
    49 pixels on one series and 36 (a row and a column lost, half a voxel shifted) on a series of
    0.9765625 mm pixels. On the centre, the fill counts it inside, on every series alike.
    """
    nearest = np.round(polygon)
    return np.where(np.abs(polygon - nearest) < CENTRE_SNAP, nearest, polygon)


def _beyond_edge(polygon: np.ndarray, rows: int, columns: int) -> bool:
    # Our own contours run along the voxel boundary, half a pixel outside the outermost centres;
    # written to 3 decimals of a millimetre, a point may lie a thousandth of a pixel beyond it.
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    return bool(
        low[0] < -0.5 - EDGE_TOLERANCE
        or low[1] < -0.5 - EDGE_TOLERANCE
        or high[0] > rows - 0.5 + EDGE_TOLERANCE
        or high[1] > columns - 0.5 + EDGE_TOLERANCE
    )


def _check_image_reference(contour, slice_of_uid, plane, series, name, label) -> None:
    references = contour.get("ContourImageSequence", [])
    if not references or "ReferencedSOPInstanceUID" not in references[0]:
        return
    uid = str(references[0].ReferencedSOPInstanceUID)
    if uid not in slice_of_uid:
        raise DicomError(
            name, f"ROI {label}: a contour references image {uid}, which is not in {series.folder}"
        )
    if slice_of_uid[uid] != plane:
        raise DicomError(
            name, f"ROI {label}: a contour lies on slice {plane} but references slice {slice_of_uid[uid]}"
        )


def _contours(count: int) -> str:
    return f"{count} contour" + ("" if count == 1 else "s")


def _listed(per_roi: dict[str, int]) -> str:
    return ", ".join(f"{shown_name(roi)} {count}" for roi, count in per_roi.items())


def _slices(per_roi: dict[str, list[int]]) -> str:
    """``Brainstem slice 2; SpinalCord slices 3-5, 9`` (slice indices from 0, as in the errors)."""
    listed = []
    for roi, planes in per_roi.items():
        runs, first = [], planes[0]
        for previous, plane in zip(planes, [*planes[1:], None], strict=True):
            if plane != previous + 1:  # a run of consecutive slices ends at previous
                runs.append(str(first) if first == previous else f"{first}-{previous}")
                first = plane
        listed.append(f"{shown_name(roi)} slice{'s' if len(planes) > 1 else ''} {', '.join(runs)}")
    return "; ".join(listed)
