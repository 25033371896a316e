"""A label map as a DICOM RT Structure Set: one ROI per class, contours on the series' own slices.

Every check (output path, grid, class table) runs before the file is built, and the file is
written atomically, so a refusal leaves nothing behind and an existing file is never harmed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from cgs_engine import __version__
from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable
from cgs_engine.io.validate import grid_differences
from cgs_engine.volume import Volume

from .contours import trace_contours
from .errors import DicomError
from .files import check_output, save_dataset
from .names import CHARACTER_SET, LONG_STRING, SHORT_STRING, checked_code, conformant, structure_names
from .series import DicomSeries

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
# Type 2 attributes of the Patient and General Study modules that RTSTRUCT and SEG copy from the
# series: present, empty where the slices lack them (anonymisers often remove them).
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# The conventional (retired) Study Component SOP class that RTReferencedStudySequence items name.
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
GENERATION_ALGORITHMS = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
MANUFACTURER = "napari-cgs"


@dataclass
class ExportedROI:
    entry: ClassEntry
    contours: int
    slices: int
    name: str = ""  # the ROIName written (the structure name, made DICOM-conformant)


@dataclass
class RTStructExport:
    path: Path
    rois: list[ExportedROI] = field(default_factory=list)
    empty: list[ClassEntry] = field(default_factory=list)  # classes without a voxel: no ROI written
    renamed: list[str] = field(default_factory=list)  # names made DICOM-conformant, one line each


def export_rtstruct(
    labels: Volume,
    series: DicomSeries,
    table: ClassTable,
    out: str | os.PathLike,
    overwrite: bool = False,
    label: str = "CGS",
    generation: str = "SEMIAUTOMATIC",
) -> RTStructExport:
    """Write ``labels`` (on ``series``' grid) as an RTSTRUCT at ``out``; returns what was written."""
    target = check_output(out, overwrite, inputs=[labels.source], series_folder=series.folder)
    check_labels_fit(labels, series, table)
    if not np.any(labels.array):
        raise DicomError(
            labels.source or "labels", "the label map is empty; an RTSTRUCT needs at least one ROI"
        )
    if generation not in GENERATION_ALGORITHMS:
        raise ValueError(f"generation must be one of {GENERATION_ALGORITHMS}, got {generation!r}")
    dataset, result = build_rtstruct(labels, series, table, label, generation)
    result.path = save_dataset(dataset, target, overwrite)
    return result


def check_labels_fit(labels: Volume, series: DicomSeries, table: ClassTable) -> None:
    """Labels on the series' grid, with every id in the class table (one-line errors naming LABELS),
    and a series whose images name their study."""
    name = labels.source or "labels"
    image = series.volume
    differences = grid_differences(labels.shape, labels.geometry, image.shape, image.geometry)
    if differences:
        raise DicomError(
            name, f"label map is not on the grid of the series in {series.folder} ({'; '.join(differences)})"
        )
    if not series.study_instance_uid.strip():
        # (written as an empty UID: a structure set filed under no study)
        raise DicomError(
            series.folder,
            "its images have no StudyInstanceUID; an RTSTRUCT or SEG must name the study of the images",
        )
    values = np.unique(labels.array)
    # (inf passed as a whole number and failed in int() with OverflowError)
    fractional = (
        values[(values != np.round(values)) | ~np.isfinite(values)]
        if values.dtype.kind == "f"
        else values[:0]
    )
    if fractional.size:  # (1.5 was taken as id 1 here and its voxels left out of the RTSTRUCT)
        raise DicomError(
            name, f"label map has non-integer values (e.g. {fractional[0]:g}); ids must be whole"
        )
    present = [int(value) for value in values if value != 0]
    unknown = [value for value in present if table.by_id(value) is None]
    if unknown:
        raise DicomError(
            name,
            f"label ids {unknown} have no entry in the class table (it names ids {table.ids}); "
            "give the model or class table the labels were made with",
        )


def build_rtstruct(labels: Volume, series: DicomSeries, table: ClassTable, label: str, generation: str):
    dataset = _new_dataset(series, label)
    names = structure_names(table.entries)
    dataset.ReferencedFrameOfReferenceSequence = [_referenced_frame(series)]
    dataset.StructureSetROISequence, dataset.ROIContourSequence, dataset.RTROIObservationsSequence = (
        [],
        [],
        [],
    )
    result = RTStructExport(path=Path(), renamed=names.changes)
    array = np.asarray(labels.array)
    for entry in table.entries:
        mask = array == entry.id
        if not mask.any():
            result.empty.append(entry)
            continue
        number = len(dataset.StructureSetROISequence) + 1
        contours = _roi_contours(mask, series, labels)
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame_of_reference_uid
        roi.ROIName = names[entry.id]
        roi.ROIDescription = conformant(entry.name, LONG_STRING)
        roi.ROIGenerationAlgorithm = generation
        roi.ROIGenerationDescription = f"napari-cgs {__version__}"
        dataset.StructureSetROISequence.append(roi)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(entry.color)
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = contours
        dataset.ROIContourSequence.append(roi_contour)
        dataset.RTROIObservationsSequence.append(_observation(number, entry))
        slices = len({item.ContourImageSequence[0].ReferencedSOPInstanceUID for item in contours})
        result.rois.append(ExportedROI(entry, len(contours), slices, names[entry.id]))
    if _longest_contour_text(dataset) > EXPLICIT_VR_MAX_LENGTH:
        # A DS value has a 16-bit length in Explicit VR: pydicom then wrote ContourData as UN,
        # which readers (ours included) took for bytes. Implicit VR Little Endian, the default
        # transfer syntax every DICOM reader supports, has 32-bit lengths.
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return dataset, result


EXPLICIT_VR_MAX_LENGTH = 0xFFFE  # the longest even value a 16-bit length holds


def _longest_contour_text(dataset) -> int:
    """Bytes of the longest ContourData as written (numbers joined by backslashes)."""
    return max(
        (
            sum(len(str(value)) + 1 for value in contour.ContourData) - 1
            for roi_contour in dataset.ROIContourSequence
            for contour in roi_contour.ContourSequence
        ),
        default=0,
    )


def _new_dataset(series: DicomSeries, label: str):
    now = datetime.now()
    source = series.header
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SpecificCharacterSet = CHARACTER_SET
    dataset.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = (
        now.strftime("%Y%m%d"),
        now.strftime("%H%M%S"),
    )
    for keyword in PATIENT_AND_STUDY:
        setattr(dataset, keyword, source.get(keyword, ""))
    dataset.StudyInstanceUID = series.study_instance_uid
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SeriesNumber = 1000
    dataset.SeriesDescription = conformant(f"{label} structures", LONG_STRING)
    dataset.OperatorsName = ""
    dataset.FrameOfReferenceUID = series.frame_of_reference_uid
    dataset.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    dataset.InstanceNumber = 1
    dataset.Manufacturer = MANUFACTURER
    dataset.SoftwareVersions = __version__
    dataset.StructureSetLabel = conformant(label, SHORT_STRING) or "CGS"
    dataset.StructureSetName = conformant(label, LONG_STRING) or "CGS"
    dataset.StructureSetDate, dataset.StructureSetTime = (
        dataset.InstanceCreationDate,
        dataset.InstanceCreationTime,
    )
    return dataset


def _referenced_frame(series: DicomSeries):
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series.series_instance_uid
    referenced_series.ContourImageSequence = [_image_reference(item) for item in series.slices]
    study = Dataset()
    study.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study.ReferencedSOPInstanceUID = series.study_instance_uid
    study.RTReferencedSeriesSequence = [referenced_series]
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_of_reference_uid
    frame.RTReferencedStudySequence = [study]
    return frame


def _image_reference(item):
    reference = Dataset()
    reference.ReferencedSOPClassUID = item.sop_class_uid
    reference.ReferencedSOPInstanceUID = item.sop_instance_uid
    return reference


def _roi_contours(mask: np.ndarray, series: DicomSeries, labels: Volume) -> list:
    geometry = labels.geometry
    # (row, column) pixel -> LPS offset from the slice's own Image Position (Patient)
    in_plane = np.stack(
        [
            geometry.direction_matrix[:, 1] * geometry.spacing[1],
            geometry.direction_matrix[:, 0] * geometry.spacing[0],
        ]
    )
    contours = []
    for index in np.nonzero(mask.any(axis=(1, 2)))[0]:
        item = series.slices[index]
        for contour in trace_contours(mask[index]):
            points = np.asarray(item.position) + contour @ in_plane
            element = Dataset()
            element.ContourImageSequence = [_image_reference(item)]
            element.ContourGeometricType = "CLOSED_PLANAR"
            element.NumberOfContourPoints = len(points)
            element.ContourNumber = len(contours) + 1
            element.ContourData = [f"{value:.3f}" for value in points.ravel()]
            contours.append(element)
    return contours


def _observation(number: int, entry: ClassEntry):
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    observation.SegmentedPropertyCategoryCodeSequence = [_code_item(checked_code(entry.category, entry))]
    if entry.code is not None:
        identification = _code_item(checked_code(entry.code, entry))
        if entry.laterality is not None:
            laterality = checked_code(entry.laterality, entry)
            identification.SegmentedPropertyTypeModifierCodeSequence = [_code_item(laterality)]
        observation.RTROIIdentificationCodeSequence = [identification]
    return observation


def _code_item(code: Code):
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    return item
