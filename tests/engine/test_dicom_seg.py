"""DICOM SEG export (highdicom) and import on series made from the bundled OpenKBP CT."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_cases import CASES, dice, shared_series

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import export_seg, import_seg
from cgs_engine.volume import Volume

TABLE = derive_class_table(openkbp_class_names())
SEG_STORAGE = {"BINARY": "1.2.840.10008.5.1.4.1.1.66.4", "LABELMAP": "1.2.840.10008.5.1.4.1.1.66.7"}


@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
@pytest.mark.parametrize("case", CASES)
def test_round_trip_per_organ(case, kind, tmp_path):
    series, labels = shared_series(case)
    result = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm", kind)
    back = import_seg(result.path, series, TABLE)
    assert back.unmatched == []
    assert back.labels.geometry.is_close(labels.geometry) and back.labels.shape == labels.shape
    for entry in TABLE.entries:
        assert dice(back.labels.array == entry.id, labels.array == entry.id) >= 0.95, entry.name
    dataset = pydicom.dcmread(result.path)
    assert dataset.Modality == "SEG" and dataset.SOPClassUID == SEG_STORAGE[kind]
    assert dataset.FrameOfReferenceUID == series.frame_of_reference_uid
    assert dataset.StudyInstanceUID == series.study_instance_uid
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= set(series.sop_instance_uids)


def test_segments_carry_tg263_labels_snomed_codes_and_laterality(tmp_path):
    series, labels = shared_series("head_first")
    path = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm").path
    segments = {item.SegmentLabel: item for item in pydicom.dcmread(path).SegmentSequence}
    assert list(segments) == [entry.structure_name for entry in TABLE.entries]
    parotid = segments["Parotid_R"]
    assert parotid.SegmentedPropertyTypeCodeSequence[0].CodeValue == "45289007"
    assert parotid.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[
        0
    ].CodeValue == ("24028007")
    assert segments["Brainstem"].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert segments["Bone_Mandible"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "91609006"


def test_classes_without_voxels_get_no_segment_and_ids_survive(tmp_path):
    series, labels = shared_series("head_first")
    array = np.where(np.isin(labels.array, [1, 4]), 0, labels.array)  # no brainstem, no left parotid
    partial = Volume(array, labels.geometry, "labels", "partial_labels.nii.gz")
    result = export_seg(partial, series, TABLE, tmp_path / "SEG.dcm")
    assert [entry.id for entry in result.empty] == [1, 4]
    assert len(result.segments) == 5
    assert np.array_equal(import_seg(result.path, series, TABLE).labels.array, array)
