"""A label map as a DICOM Segmentation (highdicom), and a Segmentation back as a label map.

One segment per class of the class table that has voxels, in class-id order and numbered 1..N
(DICOM's segment numbers start at 1 and rise by 1, so a LABELMAP frame holds those numbers, not
class ids; each segment's label and code say its organ), with its TG-263 label, SNOMED CT
category, type and laterality, and its colour. ``BINARY`` (one bit-packed frame per segment and
slice, empty frames left out) is what most viewers read today; ``LABELMAP`` (one 8-bit frame per
slice holding the segment numbers, DICOM 2024) is newer and, for a few small organs, larger (on
the 128^3 sample CT 1.6 MB against 0.5 MB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from cgs_engine import __version__
from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable
from cgs_engine.io.dicom_series_checks import ORIENTATION_TOLERANCE, PIXEL_SPACING_RTOL
from cgs_engine.io.errors import one_line
from cgs_engine.volume import Volume

from .errors import DicomError
from .files import check_output, save_dataset
from .matching import label_map, match_structure, one_per_class, overlap_warning
from .names import CHARACTER_SET, checked_code, structure_names
from .object_file import read_dicom_object
from .rtstruct_export import MANUFACTURER, PATIENT_AND_STUDY, check_labels_fit
from .rtstruct_import import PLANE_TOLERANCE
from .series import DicomSeries

SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
# What highdicom raises on a Segmentation it cannot make sense of (missing or inconsistent frames).
SEG_LIBRARY_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError)
SEG_MODALITY = "SEG"
# PS3.16 CID 7162 "Surgical/segmentation algorithm family"
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
# A frame may lie this fraction of a voxel (along each axis) off the image it references, as a
# contour may lie off its slice's plane: twice the 5 % a slice may lie off the series' grid, so a
# SEG writer that puts its frames on the regular grid rather than on each slice still fits.
FRAME_TOLERANCE = PLANE_TOLERANCE
# Type 2 attributes of the source images that highdicom copies into a SEG (present, empty allowed)
SEG_IMAGE_TYPE2 = ("SliceThickness",)


@dataclass
class SegExport:
    path: Path
    segments: list[ClassEntry] = field(default_factory=list)
    empty: list[ClassEntry] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)  # names made DICOM-conformant, one line each
    labels: dict[int, str] = field(default_factory=dict)  # class id -> the SegmentLabel written


@dataclass
class SegImport:
    labels: Volume
    segments: list[tuple[str, ClassEntry]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # segments left out: their class has one
    rule: str = "a voxel belongs to each segment that marks it"  # how segment frames became voxels
    overlap_voxels: int = 0  # voxels marked by more than one segment (the lower class id kept them)

    empty: list[str] = field(default_factory=list)  # matched segments that mark no voxel here

    @property
    def warnings(self) -> list[str]:
        """What the label map does not hold of the SEG as it is, one line each."""
        empty = [
            f"segment {label!r} marks no voxel of this series (an empty segment, or frames left out)"
            for label in self.empty
        ]
        return self.duplicates + overlap_warning(self.overlap_voxels, "segment") + empty


def export_seg(
    labels: Volume,
    series: DicomSeries,
    table: ClassTable,
    out: str | os.PathLike,
    segmentation_type: str = "BINARY",
    overwrite: bool = False,
) -> SegExport:
    """Write ``labels`` (on ``series``' grid) as a DICOM SEG referencing every slice of ``series``."""
    import highdicom as hd  # lazy: highdicom costs 0.5 s; `cgs rtstruct` loads this module too

    kind = segmentation_type.upper()
    if kind not in SEGMENTATION_TYPES:
        raise ValueError(f"segmentation_type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    target = check_output(out, overwrite, inputs=[labels.source], series_folder=series.folder)
    check_labels_fit(labels, series, table)
    array = np.asarray(labels.array)
    present = {int(value) for value in np.unique(array)} - {0}
    segments = [entry for entry in table.entries if entry.id in present]
    if not segments:
        raise DicomError(
            labels.source or "labels", "the label map is empty; a SEG needs at least one segment"
        )
    # Segment numbers must run 1..N: classes without voxels are left out and the rest renumbered.
    numbers = np.zeros(max(table.ids) + 1, dtype=np.uint16)
    for number, entry in enumerate(segments, start=1):
        numbers[entry.id] = number
    pixels = numbers[array].astype(np.uint8 if len(segments) < 256 else np.uint16)
    names = structure_names(segments)
    descriptions = [
        _description(hd, number, entry, names[entry.id]) for number, entry in enumerate(segments, start=1)
    ]
    sources = series.headers()  # fresh copies: the user's files are never changed
    for header in sources:  # highdicom needs them present; DICOM allows them empty
        for keyword in (*PATIENT_AND_STUDY, *SEG_IMAGE_TYPE2):
            if keyword not in header:
                setattr(header, keyword, "")
    try:
        segmentation = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=pixels,
            segmentation_type=kind,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=1001,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name="napari-cgs",
            software_versions=__version__,
            device_serial_number="none",
            content_label="CGS",
            content_description="napari-cgs label map",
            specific_character_set=CHARACTER_SET,  # names in any script, not "?"
        )
    except (ValueError, TypeError, AttributeError) as error:
        raise DicomError(series.folder, f"a SEG cannot reference this series ({error})") from None
    path = save_dataset(segmentation, target, overwrite)
    empty = [entry for entry in table.entries if entry.id not in present]
    return SegExport(path, segments, empty, names.changes, names.by_id)


def _description(hd, number: int, entry: ClassEntry, label: str):
    category = _coded(hd, checked_code(entry.category, entry))
    # A class with no known organ is still an anatomical structure; its label says which.
    kind = _coded(hd, checked_code(entry.code, entry)) if entry.code is not None else category
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=category,
        segmented_property_type=kind,
        # model output that a person may have corrected
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="napari-cgs", family=_coded(hd, ARTIFICIAL_INTELLIGENCE), version=__version__
        ),
        display_color=hd.color.CIELabColor.from_rgb(*entry.color),
    )
    if entry.laterality is not None:  # nested in the type's item (Segment Description Macro)
        kind_item = description.SegmentedPropertyTypeCodeSequence[0]
        kind_item.SegmentedPropertyTypeModifierCodeSequence = [
            _coded(hd, checked_code(entry.laterality, entry))
        ]
    return description


def _coded(hd, code: Code):
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def read_seg(path: str | os.PathLike):
    """The highdicom Segmentation of a SEG file, or :class:`DicomError`."""
    import highdicom as hd  # lazy: highdicom costs 0.5 s; `cgs rtstruct` loads this module too

    name = os.fspath(path)
    dataset = read_dicom_object(name)
    if dataset.get("Modality") != SEG_MODALITY:
        raise DicomError(name, f"not a DICOM Segmentation (Modality {dataset.get('Modality', 'missing')})")
    for keyword in ("PerFrameFunctionalGroupsSequence", "SegmentSequence"):  # Type 1 (the shared: Type 2)
        if not dataset.get(keyword):
            raise DicomError(name, f"not a usable DICOM Segmentation (no {keyword})")
    _check_pixel_data_length(dataset, name)
    try:
        return hd.seg.Segmentation.from_dataset(dataset)
    except SEG_LIBRARY_ERRORS as error:
        raise DicomError(name, f"not a usable DICOM Segmentation ({one_line(str(error))[:160]})") from None


def _check_pixel_data_length(dataset, name: str) -> None:
    """Refuse native pixel data of another length than its frames fill.

    A BINARY SEG packs all frames' bits one after the other; some writers (older Slicer/dcmqi,
    dcmjs, GDCM) padded each frame, or each row, to a whole byte. Read as packed, every frame after
    the first slid by the padding bits (a 29 x 37 SEG: 652 voxels wrong of 408 labeled, exit 0;
    pydicom's warning about the excess bytes was not shown). Only the conformant length, with the
    one byte that evens it, is read.
    """
    meta = getattr(dataset, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is not None and getattr(syntax, "is_encapsulated", False):
        return  # compressed frames: their lengths are the codec's
    data = dataset.get("PixelData")
    sizes = [_whole_number(dataset.get(keyword, default)) for keyword, default in _PIXEL_SIZE_KEYWORDS]
    if data is None or any(size is None or size <= 0 for size in sizes):
        return  # missing or unusable: the reader below says why
    frames, rows, columns, bits, samples = sizes
    expected = -(-frames * rows * columns * samples * bits // 8)
    length = len(data)
    if length not in (expected, expected + expected % 2):
        per_frame = -(-rows * columns * bits // 8)
        how = (
            " (each frame padded to whole bytes, as some writers did)"
            if bits == 1 and length in (frames * per_frame, frames * per_frame + (frames * per_frame) % 2)
            else ""
        )
        raise DicomError(
            name,
            f"its pixel data holds {length} bytes, {frames} frames of {rows} x {columns} pixels at "
            f"{bits} bit(s) fill {expected}{how}; its frames cannot be read without guessing",
        )


_PIXEL_SIZE_KEYWORDS = (
    ("NumberOfFrames", 1),
    ("Rows", None),
    ("Columns", None),
    ("BitsAllocated", None),
    ("SamplesPerPixel", 1),
)


def import_seg(path: str | os.PathLike, series: DicomSeries, table: ClassTable) -> SegImport:
    """The label map of the SEG at ``path`` on ``series``' grid; segments matched to classes by
    label or code, one segment per class (:mod:`cgs_engine.dicom.matching`), lower class id
    winning where segments overlap.

    In a FRACTIONAL SEG (probability or occupancy, 0..MaximumFractionalValue) a voxel belongs to a
    segment when value / MaximumFractionalValue >= 0.5; ``SegImport.rule`` says so in words.
    """
    name = os.fspath(path)
    segmentation = read_seg(name)
    fractional = str(segmentation.get("SegmentationType", "")) == "FRACTIONAL"
    maximum = _whole_number(segmentation.get("MaximumFractionalValue")) if fractional else None
    if fractional and (maximum is None or maximum <= 0):
        raise DicomError(name, "a FRACTIONAL SEG without a usable MaximumFractionalValue")
    if str(segmentation.get("FrameOfReferenceUID", "")) != series.frame_of_reference_uid:
        raise DicomError(
            name,
            f"drawn in another frame of reference than the series in {series.folder} "
            "(another scan or patient)",
        )
    _check_segment_numbers(segmentation, name)
    referenced = {str(uid) for _, _, uid in segmentation.get_source_image_uids()}
    # and each frame's own: without the ReferencedSeriesSequence (some writers leave it out) the
    # list above is empty, a SEG of another series passed, and every slice read as empty
    for group in segmentation.get("PerFrameFunctionalGroupsSequence", []):
        referenced.update(_source_images(group))
    unknown = referenced - set(series.sop_instance_uids)
    if unknown:
        raise DicomError(
            name, f"references {len(unknown)} images that are not in {series.folder} (another series)"
        )
    _check_frames_fit(segmentation, series, name)
    candidates, unmatched = [], []
    written = structure_names(table.entries)
    for number in segmentation.segment_numbers:
        description = segmentation.get_segment_description(number)
        kind = description.segmented_property_type
        modifiers = description.SegmentedPropertyTypeCodeSequence[0].get(
            "SegmentedPropertyTypeModifierCodeSequence", []
        )
        laterality = _code_of(modifiers[0]) if modifiers else None
        label = str(description.segment_label)
        match = match_structure(number, label, table, written, _code_of(kind), laterality)
        if match is None:
            unmatched.append(label)
        else:
            candidates.append(match)
    kept, duplicates = one_per_class(candidates, "segment")
    matched = [(match.key, match.name, match.entry) for match in kept]
    try:
        stack = segmentation.get_pixels_by_source_instance(
            source_sop_instance_uids=series.sop_instance_uids,
            segment_numbers=[number for number, _, _ in matched] or None,
            assert_missing_frames_are_empty=True,
            rescale_fractional=False,  # integers: the 0.5 threshold below is exact
        )  # (slices, rows, columns, segments), in the order of the segment numbers asked for
    except SEG_LIBRARY_ERRORS as error:
        raise DicomError(
            name, f"its frames cannot be placed on the series ({one_line(str(error))[:160]})"
        ) from None
    # value / maximum >= 0.5 for the integer values, without a float copy of the stack
    lowest = (maximum + 1) // 2 if fractional else 1
    # each segment's mask made when it is painted: all at once took a volume of bools per segment
    masks = {
        entry.id: (lambda index=index: stack[..., index] >= lowest)
        for index, (_, _, entry) in enumerate(matched)
    }
    labels, overlap = label_map(masks, series.volume)
    segments = [(label, entry) for _, label, entry in matched]
    result = SegImport(labels, segments, unmatched, duplicates, overlap_voxels=overlap)
    result.empty = [
        label for index, (_, label, _) in enumerate(matched) if not (stack[..., index] >= lowest).any()
    ]
    if fractional:
        result.rule = f"FRACTIONAL: a voxel belongs to a segment at value >= 0.5 x {maximum} (its maximum)"
    return result


def _check_frames_fit(segmentation, series: DicomSeries, name: str) -> None:
    """Refuse a SEG whose frames do not lie where the images they reference lie.

    highdicom places each frame on the image it references alone; a frame of another size, pixel
    spacing or orientation, or shifted off that image (a SEG made on a cropped or resampled copy of
    the series), would be written onto it as if it matched. Compared with the slices' own headers,
    from which a SEG made on this series copies its values.
    """
    rows, columns = series.volume.shape[1:]
    size = (_whole_number(segmentation.get("Rows")), _whole_number(segmentation.get("Columns")))
    if size != (rows, columns):
        raise DicomError(
            name,
            f"its frames are {size[0]} x {size[1]} pixels (rows x columns), the series' slices "
            f"{rows} x {columns} (a SEG made on another grid)",
        )
    spacing = _numbers(series.header.PixelSpacing, 2)  # (between rows, between columns)
    orientation = _unit_directions(_numbers(series.header.ImageOrientationPatient, 6))
    row_direction, column_direction = orientation[:3], orientation[3:]
    axes = np.array([row_direction, column_direction, np.cross(row_direction, column_direction)])
    # voxel edges along the row direction, the column direction and the slice normal
    edges = np.array([spacing[1], spacing[0], series.volume.geometry.spacing[2]])
    position_of = {item.sop_instance_uid: np.array(item.position) for item in series.slices}
    shared = _first_item(segmentation, "SharedFunctionalGroupsSequence")
    shared_position = _check_plane(shared, spacing, orientation, name, "its")
    for number, group in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1):
        position = _check_plane(group, spacing, orientation, name, f"frame {number}'s")
        position = shared_position if position is None else position
        if position is None:  # nowhere said (non-conformant): placed by its reference alone
            continue
        for uid in _source_images(group):
            offset = position - position_of.get(uid, position)  # other series' images: refused before
            if np.abs(axes @ offset / edges).max() > FRAME_TOLERANCE:
                raise DicomError(
                    name, f"frame {number} lies {np.linalg.norm(offset):.3g} mm from the slice it references"
                )


def _check_plane(group, spacing, orientation, name: str, whose: str) -> np.ndarray | None:
    """Refuse the pixel spacing or orientation that ``group`` (shared or one frame's functional
    groups) gives if it is not the series'; the position it gives, if any."""
    theirs = _functional(group, "PixelMeasuresSequence", "PixelSpacing", 2, name, whose)
    if theirs is not None and not np.allclose(theirs, spacing, rtol=PIXEL_SPACING_RTOL, atol=0):
        raise DicomError(
            name, f"{whose} pixel spacing {_shown(theirs)} mm is not the series' {_shown(spacing)} mm"
        )
    theirs = _functional(group, "PlaneOrientationSequence", "ImageOrientationPatient", 6, name, whose)
    # both as unit vectors: a series may store 0.985\-0.174 (accepted to 1e-3), and a writer that
    # normalises them (GDCM: dcmqi, Slicer) 0.984753\-0.173956 in its SEG
    if (
        theirs is not None
        and not np.abs(_unit_directions(theirs) - orientation).max() <= ORIENTATION_TOLERANCE
    ):
        raise DicomError(
            name,
            f"{whose} image orientation ({_shown(theirs, ', ')}) is not the series' "
            f"({_shown(orientation, ', ')})",
        )
    return _functional(group, "PlanePositionSequence", "ImagePositionPatient", 3, name, whose)


def _unit_directions(orientation: np.ndarray) -> np.ndarray:
    """Image Orientation (Patient): its row and column directions each scaled to unit length."""
    row, column = orientation[:3], orientation[3:]
    with np.errstate(invalid="ignore", divide="ignore"):  # a blank one becomes NaN: no orientation
        return np.concatenate([row / np.linalg.norm(row), column / np.linalg.norm(column)])


def _first_item(dataset, keyword: str):
    items = dataset.get(keyword) if dataset is not None else None
    return items[0] if items else None


def _functional(group, sequence: str, keyword: str, count: int, name: str, whose: str):
    """The ``count`` numbers of ``keyword`` in ``group``'s ``sequence``; None where not given there."""
    item = _first_item(group, sequence)
    if item is None or item.get(keyword) is None:
        return None
    values = _numbers(item.get(keyword), count)
    if values is None:
        raise DicomError(name, f"{whose} {keyword} is not {count} finite numbers")
    return values


def _numbers(value, count: int) -> np.ndarray | None:
    values = value if isinstance(value, MultiValue | list | tuple) else [value]
    try:
        numbers = np.array([float(item) for item in values], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.isfinite(numbers).all() else None


def _check_segment_numbers(segmentation, name: str) -> None:
    """One segment per number, and every frame of a defined one: two segments sharing a number
    wrote the one's voxels as the other's organ, and a frame of an undefined number was dropped."""
    numbers = [_whole_number(item.get("SegmentNumber")) for item in segmentation.get("SegmentSequence", [])]
    repeated = sorted({number for number in numbers if numbers.count(number) > 1 and number is not None})
    if repeated:
        raise DicomError(name, f"two segments share the segment number {repeated[0]}")
    defined = set(numbers)
    for index, group in enumerate(segmentation.get("PerFrameFunctionalGroupsSequence", []), start=1):
        for item in group.get("SegmentIdentificationSequence", []):
            number = _whole_number(item.get("ReferencedSegmentNumber"))
            if number not in defined:
                raise DicomError(name, f"frame {index} belongs to segment {number}, which it does not define")


def _source_images(group) -> list[str]:
    """The SOP instance UIDs a frame says it was derived from."""
    return [
        str(source.ReferencedSOPInstanceUID)
        for derivation in group.get("DerivationImageSequence", [])
        for source in derivation.get("SourceImageSequence", [])
        if "ReferencedSOPInstanceUID" in source
    ]


def _shown(values: np.ndarray, separator: str = " x ") -> str:
    return separator.join(f"{value:g}" for value in values)


def _whole_number(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _code_of(item) -> Code | None:
    if item is None or "CodeValue" not in item:
        return None
    return Code(str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")))
