"""SEGs that used to import with exit 0 and a wrong label map: overlapping segments resolved
without a word; and SEG export refused on slices without the Type 2 patient and study
attributes, which RTSTRUCT export and `cgs predict` accept."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_rt_cases import TABLE, two_organs
from dicom_series_cases import SHAPE, good_series

from cgs_engine.cli.main import main
from cgs_engine.dicom import export_rtstruct, export_seg, import_seg, read_series

# The Type 2 attributes of the Patient and General Study modules that highdicom copies from the
# slices, each of which an anonymiser may remove.
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


@pytest.fixture(scope="module")
def series_folder(tmp_path_factory):
    return good_series(tmp_path_factory.mktemp("seg_hostile") / "series")  # 0.9 x 0.8 mm pixels


@pytest.fixture(scope="module")
def series(series_folder):
    return read_series(series_folder)


def _binary_seg(series, masks: dict[str, np.ndarray], path):
    """A BINARY SEG of one segment per class name, as another system may write it (overlapping)."""
    import highdicom as hd

    from cgs_engine.dicom.seg import _description  # the segment descriptions our export writes

    entries = {entry.name: entry for entry in TABLE.entries}
    descriptions = [_description(hd, number, entries[name], name) for number, name in enumerate(masks, 1)]
    hd.seg.Segmentation(
        source_images=series.headers(),
        pixel_array=np.stack(list(masks.values()), axis=-1).astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=5,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    ).save_as(path)
    return path


def test_overlapping_segments_go_to_the_lower_class_id_with_a_warning(
    series, series_folder, tmp_path, capsys
):
    brainstem, cord = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    brainstem[2:4, 2:10, 2:10] = True
    cord[2:4, 6:14, 6:14] = True  # 2 x 4 x 4 = 32 voxels marked by both
    path = _binary_seg(series, {"SpinalCord": cord, "Brainstem": brainstem}, tmp_path / "SEG.dcm")
    result = import_seg(path, series, TABLE)
    expected = np.where(brainstem, 1, np.where(cord, 2, 0))
    np.testing.assert_array_equal(result.labels.array, expected)
    line = "32 voxels lie in more than one segment; the lower class id got them"  # as RTSTRUCT import says
    assert result.warnings == [line]
    out = tmp_path / "labels.nii.gz"
    assert main(["seg", "import", str(path), "--dicom", str(series_folder), "-o", str(out)]) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {path}: {line}"]


def test_seg_export_on_slices_without_type_2_attributes_fills_them_empty(tmp_path):
    folder = good_series(tmp_path / "series")
    for file in sorted(folder.glob("*.dcm")):
        dataset = pydicom.dcmread(file)
        for keyword in PATIENT_AND_STUDY:
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.save_as(file)
    before = {file: file.read_bytes() for file in folder.iterdir()}
    series = read_series(folder)  # what `cgs predict` reads
    labels = two_organs(series.volume)
    export_rtstruct(labels, series, TABLE, tmp_path / "RS.dcm")
    result = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm")
    written = pydicom.dcmread(result.path)
    assert {keyword: str(written[keyword].value or "") for keyword in PATIENT_AND_STUDY} == dict.fromkeys(
        PATIENT_AND_STUDY, ""
    )
    assert {file: file.read_bytes() for file in folder.iterdir()} == before  # the user's slices untouched
    np.testing.assert_array_equal(import_seg(result.path, series, TABLE).labels.array, labels.array)
