"""RTSTRUCT export and import on DICOM CT series made from the bundled OpenKBP CT."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_cases import CASES, dice, shared_series

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import export_rtstruct, import_rtstruct
from cgs_engine.dicom.rtstruct_export import RT_STRUCTURE_SET_STORAGE
from cgs_engine.volume import Volume

TABLE = derive_class_table(openkbp_class_names())
EXPECTED_NAMES = ["Brainstem", "SpinalCord", "Parotid_R", "Parotid_L", "Esophagus", "Larynx", "Bone_Mandible"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (series, labels, RTSTRUCT path), one export per placement."""
    root = tmp_path_factory.mktemp("rtstruct")
    cases = {}
    for case in CASES:
        series, labels = shared_series(case)
        result = export_rtstruct(labels, series, TABLE, root / f"{case}_RS.dcm")
        assert [roi.entry.structure_name for roi in result.rois] == EXPECTED_NAMES
        cases[case] = (series, labels, result.path)
    return cases


@pytest.mark.parametrize("case", CASES)
def test_round_trip_keeps_every_organ_and_the_geometry(exported, case):
    series, labels, path = exported[case]
    assert series.volume.geometry.is_close(labels.geometry)  # the DICOM series is the NIfTI's grid
    result = import_rtstruct(path, series, TABLE)
    assert result.unmatched == [] and result.empty == []
    assert result.labels.shape == labels.shape
    assert result.labels.geometry.is_close(labels.geometry)
    for entry in TABLE.entries:
        organ = labels.array == entry.id
        assert organ.any()
        assert dice(result.labels.array == entry.id, organ) >= 0.95, entry.name


@pytest.mark.parametrize("case", CASES)
def test_contour_points_lie_between_an_organ_voxel_and_a_voxel_outside(exported, case):
    """World positions checked with ITK's own index mapping, not the exporter's."""
    series, labels, path = exported[case]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(item.path) for item in series.slices])
    image = reader.Execute()
    dataset = pydicom.dcmread(path)
    for roi, contours in zip(dataset.StructureSetROISequence, dataset.ROIContourSequence, strict=True):
        class_id = TABLE.match(roi.ROIName).id
        organ = labels.array == class_id
        for contour in contours.ContourSequence:
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in points])
            assert np.allclose(index[:, 2], np.round(index[:, 2]), atol=1e-3)
            for x, y, z in index:
                # a vertex sits half-way between two pixel centres: one in the organ, one outside
                inside = [bool(organ[int(round(z)), j, i]) for i in _nearest(x) for j in _nearest(y)]
                assert any(inside) and not all(inside)


def _nearest(coordinate: float) -> list[int]:
    """The pixel centre(s) nearest a coordinate on the half-pixel grid."""
    doubled = round(2 * coordinate)
    return [doubled // 2] if doubled % 2 == 0 else [(doubled - 1) // 2, (doubled + 1) // 2]


@pytest.mark.parametrize("case", CASES)
def test_the_file_is_an_rtstruct_that_references_the_series(exported, case):
    series, _, path = exported[case]
    dataset = pydicom.dcmread(path)
    assert dataset.Modality == "RTSTRUCT" and dataset.SOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert dataset.file_meta.MediaStorageSOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert dataset.StudyInstanceUID == series.study_instance_uid
    assert dataset.PatientID == series.header.PatientID
    frame = dataset.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == series.frame_of_reference_uid
    referenced_series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced_series.SeriesInstanceUID == series.series_instance_uid
    images = [item.ReferencedSOPInstanceUID for item in referenced_series.ContourImageSequence]
    assert images == series.sop_instance_uids
    slice_uids = set(images)
    for roi_contour in dataset.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in slice_uids
            assert contour.NumberOfContourPoints * 3 == len(contour.ContourData)


def test_rois_carry_tg263_names_snomed_codes_laterality_and_colours(exported):
    series, _, path = exported["head_first"]
    dataset = pydicom.dcmread(path)
    names = [roi.ROIName for roi in dataset.StructureSetROISequence]
    assert names == EXPECTED_NAMES
    observations = {int(o.ReferencedROINumber): o for o in dataset.RTROIObservationsSequence}
    colours = {
        int(c.ReferencedROINumber): [int(v) for v in c.ROIDisplayColor] for c in dataset.ROIContourSequence
    }
    by_name = {roi.ROIName: int(roi.ROINumber) for roi in dataset.StructureSetROISequence}
    right = observations[by_name["Parotid_R"]].RTROIIdentificationCodeSequence[0]
    left = observations[by_name["Parotid_L"]].RTROIIdentificationCodeSequence[0]
    assert (right.CodeValue, right.CodingSchemeDesignator) == ("45289007", "SCT") == (left.CodeValue, "SCT")
    assert right.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"
    assert left.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"
    mandible = observations[by_name["Bone_Mandible"]]
    assert mandible.RTROIIdentificationCodeSequence[0].CodeValue == "91609006"
    assert mandible.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert mandible.RTROIInterpretedType == "ORGAN"
    assert colours[by_name["Brainstem"]] == list(TABLE.match("Brainstem").color)


def test_holes_and_several_islands_on_one_slice(exported, tmp_path):
    series, labels, _ = exported["head_first"]
    array = np.zeros(labels.shape, np.uint8)
    rows, columns = np.mgrid[: labels.shape[1], : labels.shape[2]]
    ring = np.hypot(rows - 40, columns - 40)
    array[50][(ring <= 15) & (ring > 8)] = 1  # a ring ...
    array[50][ring <= 3] = 1  # ... with an island in its hole
    array[50, 5:9, 70:74] = 1  # and two more islands
    array[50, 70:75, 5:12] = 1
    array[50][(ring > 8) & (ring <= 10) & (columns > 40)] = 2  # another organ fills part of the hole
    synthetic = Volume(array, labels.geometry, "labels", "synthetic_labels.nii.gz")
    result = export_rtstruct(synthetic, series, TABLE, tmp_path / "RS.dcm")
    assert {roi.entry.id: roi.contours for roi in result.rois}[1] >= 5  # 4 islands (1 with hole) + hole
    back = import_rtstruct(result.path, series, TABLE).labels.array
    assert np.array_equal(back, array)


def test_import_matches_aliases_and_codes_and_reports_other_rois(exported, tmp_path):
    series, labels, path = exported["head_first"]
    dataset = pydicom.dcmread(path)
    rois = {roi.ROIName: roi for roi in dataset.StructureSetROISequence}
    rois["Parotid_L"].ROIName = "Lt_Parotid"  # a clinic's own name
    rois["Bone_Mandible"].ROIName = "MANDIBULA"  # unknown name: found by its SNOMED code
    rois["Larynx"].ROIName = "External"  # unknown name ...
    larynx_number = int(rois["Larynx"].ROINumber)
    for observation in dataset.RTROIObservationsSequence:
        if int(observation.ReferencedROINumber) == larynx_number:
            del observation.RTROIIdentificationCodeSequence  # ... and no code: not imported
    changed = tmp_path / "RS_clinic.dcm"
    dataset.save_as(changed)
    result = import_rtstruct(changed, series, TABLE)
    assert result.unmatched == ["External"]
    matched = {roi.roi_name: roi.entry.name for roi in result.rois}
    assert matched["Lt_Parotid"] == "LeftParotid" and matched["MANDIBULA"] == "Mandible"
    expected = np.where(labels.array == TABLE.match("Larynx").id, 0, labels.array)
    assert np.array_equal(result.labels.array, expected)


def test_overlapping_rois_go_to_the_lower_class_id(exported, tmp_path):
    series, labels, path = exported["head_first"]
    dataset = pydicom.dcmread(path)
    # Give the esophagus (5) the spinal cord's (2) contours as well: where both, 2 wins.
    contours = {int(c.ReferencedROINumber): c for c in dataset.ROIContourSequence}
    numbers = {roi.ROIName: int(roi.ROINumber) for roi in dataset.StructureSetROISequence}
    contours[numbers["Esophagus"]].ContourSequence.extend(contours[numbers["SpinalCord"]].ContourSequence)
    overlapping = tmp_path / "RS_overlap.dcm"
    dataset.save_as(overlapping)
    back = import_rtstruct(overlapping, series, TABLE).labels.array
    assert np.array_equal(back, labels.array)
