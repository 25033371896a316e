"""Bad input to the DICOM functions: one line naming the file and the problem, and nothing written."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from dicom_cases import make_series, shared_series

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import (
    DicomError,
    export_rtstruct,
    export_seg,
    import_rtstruct,
    import_seg,
    read_series,
)
from cgs_engine.errors import CGSError
from cgs_engine.volume import Volume

TABLE = derive_class_table(openkbp_class_names())


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_labels_on_another_grid_are_refused_before_writing(tmp_path):
    series, _ = shared_series("feet_first")
    _, other_labels = shared_series("head_first")  # same anatomy, other axes
    for export in (export_rtstruct, export_seg):
        out = tmp_path / f"{export.__name__}.dcm"
        with pytest.raises(DicomError) as error:
            export(other_labels, series, TABLE, out)
        message = _one_line(error)
        assert message.startswith("head_first_labels.nii.gz: label map is not on the grid of the series")
        assert "direction" in message
        assert list(tmp_path.iterdir()) == []


def test_a_series_with_a_missing_slice_is_refused(tmp_path):
    series, _ = shared_series("head_first")
    broken = tmp_path / "broken"
    shutil.copytree(series.folder, broken)
    (broken / "0050.dcm").unlink()
    with pytest.raises(CGSError) as error:
        read_series(broken)
    message = _one_line(error)
    assert message.startswith(str(broken)) and "missing slices" in message and "6 mm" in message


def test_duplicate_slices_and_non_series_folders_are_refused(tmp_path):
    series, _ = shared_series("head_first")
    doubled = tmp_path / "doubled"
    shutil.copytree(series.folder, doubled)
    copy = pydicom.dcmread(doubled / "0010.dcm")
    copy.SOPInstanceUID = pydicom.uid.generate_uid()
    copy.save_as(doubled / "0010b.dcm")
    with pytest.raises(CGSError) as error:
        read_series(doubled)
    assert "share one position" in _one_line(error)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CGSError) as error:
        read_series(empty)
    assert "no DICOM series found" in _one_line(error)
    with pytest.raises(DicomError) as error:
        read_series(tmp_path / "missing")
    assert "not a folder" in _one_line(error)


@pytest.fixture(scope="module")
def head_first_rtstruct(tmp_path_factory):
    series, labels = shared_series("head_first")
    folder = tmp_path_factory.mktemp("rs")
    return export_rtstruct(labels, series, TABLE, folder / "RS.dcm").path


def test_an_rtstruct_of_another_scan_is_refused(head_first_rtstruct):
    other, _ = shared_series("feet_first")  # its own frame of reference
    with pytest.raises(DicomError) as error:
        import_rtstruct(head_first_rtstruct, other, TABLE)
    message = _one_line(error)
    assert message.startswith(str(head_first_rtstruct)) and "frame of reference" in message


def test_an_rtstruct_of_another_series_in_the_same_frame_is_refused(head_first_rtstruct, tmp_path):
    series, _ = shared_series("head_first")
    other, _ = make_series(
        "head_first",
        tmp_path / "rescan",
        study_instance_uid=series.study_instance_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
    )
    with pytest.raises(DicomError) as error:
        import_rtstruct(head_first_rtstruct, other, TABLE)
    assert f"made for series {series.series_instance_uid}" in _one_line(error)


def test_a_seg_of_another_series_is_refused(tmp_path):
    series, labels = shared_series("head_first")
    other, _ = shared_series("feet_first")
    path = export_seg(labels, series, TABLE, tmp_path / "SEG.dcm").path
    with pytest.raises(DicomError) as error:
        import_seg(path, other, TABLE)
    assert "frame of reference" in _one_line(error)


def test_an_existing_output_is_kept_unless_overwrite(tmp_path):
    series, labels = shared_series("head_first")
    out = tmp_path / "RS.dcm"
    out.write_bytes(b"the clinic's plan")
    for export in (export_rtstruct, export_seg):
        with pytest.raises(DicomError) as error:
            export(labels, series, TABLE, out)
        assert "already exists" in _one_line(error)
        assert out.read_bytes() == b"the clinic's plan"
    export_rtstruct(labels, series, TABLE, out, overwrite=True)
    assert pydicom.dcmread(out).Modality == "RTSTRUCT"
    assert [p.name for p in tmp_path.iterdir()] == ["RS.dcm"]  # no temporary file left behind


def test_label_ids_without_a_class_are_refused(tmp_path):
    series, labels = shared_series("head_first")
    array = labels.array.copy()
    array[50, 40, 40] = 9
    with pytest.raises(DicomError) as error:
        export_rtstruct(
            Volume(array, labels.geometry, "labels", "l.nii.gz"), series, TABLE, tmp_path / "RS.dcm"
        )
    assert "label ids [9] have no entry in the class table" in _one_line(error)
    assert not (tmp_path / "RS.dcm").exists()


def test_files_that_are_not_rtstruct_or_seg_are_refused(tmp_path):
    series, _ = shared_series("head_first")
    image = series.slices[0].path
    for reader in (import_rtstruct, import_seg):
        with pytest.raises(DicomError) as error:
            reader(image, series, TABLE)
        assert "Modality CT" in _one_line(error)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(CGSError) as error:
        import_rtstruct(junk, series, TABLE)
    assert str(error.value).startswith(str(junk))


def test_contours_off_the_slices_are_refused(head_first_rtstruct, tmp_path):
    series, _ = shared_series("head_first")
    dataset = pydicom.dcmread(head_first_rtstruct)
    contour = dataset.ROIContourSequence[0].ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 2] += 1.5  # half-way to the next slice (3 mm spacing)
    contour.ContourData = [f"{v:.3f}" for v in points.ravel()]
    moved = tmp_path / "RS_moved.dcm"
    dataset.save_as(moved)
    with pytest.raises(DicomError) as error:
        import_rtstruct(moved, series, TABLE)
    assert "does not lie on a slice" in _one_line(error)


def test_writing_a_series_keeps_the_process_locale(tmp_path):
    """GDCM switches the process to the C locale; subprocess output would then decode as ASCII."""
    import locale

    from dicom_cases import case_volumes

    from cgs_engine.dicom import write_ct_series

    before = (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False))
    ct, _ = case_volumes("head_first")
    write_ct_series(Volume(ct.array[:3], ct.geometry, "image"), tmp_path / "ct")
    assert (locale.setlocale(locale.LC_ALL), locale.getpreferredencoding(False)) == before
