"""Which ROIs of a structure set were drawn on a series: frame of reference and series references.

Contour coordinates mean something only in their frame of reference (the scanner's coordinates
of one patient position). Each ROI names its frame (ReferencedFrameOfReferenceUID, Type 1); a
set that names none cannot be matched to any series and is refused rather than trusted. ROIs in
another frame than the series' are left out (and counted by the import); if no ROI is in the
series' frame, the set belongs to another scan and is refused. So is a set that gives one ROI
number to two ROIs: the contours of the one would be read as the other's.
"""

from __future__ import annotations

from .errors import DicomError
from .series import DicomSeries


def roi_frames(dataset, series: DicomSeries, name: str) -> dict[int, str]:
    """ROI number -> its frame of reference UID; :class:`DicomError` if the set is not of ``series``."""
    listed = [
        str(frame.get("FrameOfReferenceUID", "") or "")
        for frame in dataset.get("ReferencedFrameOfReferenceSequence", [])
    ]
    listed = [uid for uid in listed if uid]
    only = listed[0] if len(set(listed)) == 1 else ""
    rois = list(dataset.get("StructureSetROISequence", []))
    check_unique_numbers([_number(roi, name) for roi in rois], "StructureSetROISequence", "ROINumber", name)
    frames = {}
    for roi in rois:
        uid = str(roi.get("ReferencedFrameOfReferenceUID", "") or "") or only
        if not uid:
            raise DicomError(
                name,
                f"ROI {roi_label(roi)} names no frame of reference (ReferencedFrameOfReferenceUID), "
                "so it cannot be matched to a scan",
            )
        frames[_number(roi, name)] = uid
    if not frames and not listed:
        raise DicomError(name, "names no frame of reference, so it cannot be matched to a scan")
    in_series = [uid for uid in [*frames.values(), *listed] if uid == series.frame_of_reference_uid]
    if not in_series:
        other = sorted(set(frames.values()) | set(listed))[0]
        raise DicomError(
            name,
            f"drawn in frame of reference {other}, but the series in {series.folder} is in "
            f"{series.frame_of_reference_uid} (another scan or patient)",
        )
    check_series_reference(dataset, series, name)
    return frames


def check_series_reference(dataset, series: DicomSeries, name: str) -> None:
    """:class:`DicomError` if the set names the series it was drawn on and that is not ``series``."""
    referenced = {
        str(item.SeriesInstanceUID)
        for frame in dataset.get("ReferencedFrameOfReferenceSequence", [])
        if str(frame.get("FrameOfReferenceUID", "")) == series.frame_of_reference_uid
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


def check_unique_numbers(numbers: list[int], sequence: str, keyword: str, name: str) -> None:
    """:class:`DicomError` if a number occurs twice: contours could not be told apart by ROI."""
    repeated = sorted({number for number in numbers if numbers.count(number) > 1})
    if repeated:
        raise DicomError(
            name,
            f"{sequence} gives {keyword} {', '.join(map(str, repeated))} to more than one item, "
            "so whose contours are whose is ambiguous",
        )


def roi_label(roi) -> str:
    return repr(str(roi.get("ROIName", "") or f"number {roi.get('ROINumber', '?')}"))[:80]


def _number(roi, name: str) -> int:
    try:
        return int(roi.ROINumber)
    except (AttributeError, TypeError, ValueError):
        raise DicomError(name, f"ROI {roi_label(roi)} has no usable ROINumber") from None
