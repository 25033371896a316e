"""RTSTRUCT and SEG files and export arguments that used to pass with exit 0 and a wrong result:
fractional segments thresholded at > 0, ROIs sharing a number, exports replacing their own
inputs, an RTSTRUCT without ROIs."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_rt_cases import TABLE, foreign_seg, two_organs
from dicom_series_cases import good_series, slice_file

from cgs_engine.classes.files import class_file_entries, write_class_file
from cgs_engine.cli.main import main
from cgs_engine.dicom import DicomError, export_rtstruct, export_seg, import_rtstruct, import_seg, read_series
from cgs_engine.io import write_volume


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return read_series(good_series(tmp_path_factory.mktemp("hostile") / "series"))


@pytest.fixture(scope="module")
def rtstruct(series, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rs")
    return export_rtstruct(two_organs(series.volume), series, TABLE, folder / "RS.dcm").path


def _refusal(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_a_fractional_seg_keeps_the_voxels_at_half_the_maximum_or_more(series, tmp_path):
    shape = series.volume.shape
    brainstem, cord = np.zeros(shape), np.zeros(shape)
    brainstem[1:7, 2:20, 2:28] = 0.1  # a faint halo: no organ
    brainstem[2:4, 5:10, 5:10] = 0.5  # exactly half: inside
    brainstem[4:6, 5:10, 5:10] = 0.45  # just below: outside, unless the cord claims it
    cord[4:6, 5:10, 5:10] = 0.9
    cord[2:3, 5:10, 5:10] = 0.8  # both claim it: the lower class id (Brainstem, 1) wins
    path = foreign_seg(
        series, {"Brainstem": brainstem, "SpinalCord": cord}, tmp_path / "SEG.dcm", "FRACTIONAL"
    )
    result = import_seg(path, series, TABLE)
    expected = np.zeros(shape, np.uint8)
    expected[2:4, 5:10, 5:10] = 1
    expected[4:6, 5:10, 5:10] = 2
    np.testing.assert_array_equal(result.labels.array, expected)
    assert "0.5" in result.rule and "FRACTIONAL" in result.rule


def _save_changed(source, change, path):
    dataset = pydicom.dcmread(source)
    change(dataset)
    dataset.save_as(path)
    return path


def _shared_roi_number(dataset) -> None:
    dataset.StructureSetROISequence[1].ROINumber = 1
    dataset.ROIContourSequence[1].ReferencedROINumber = 1
    dataset.RTROIObservationsSequence[1].ReferencedROINumber = 1


def _contours_given_twice_to_roi_1(dataset) -> None:
    dataset.ROIContourSequence[1].ReferencedROINumber = 1


@pytest.mark.parametrize(
    "change, words",
    [
        (_shared_roi_number, "StructureSetROISequence gives ROINumber 1 to more than one item"),
        (_contours_given_twice_to_roi_1, "ROIContourSequence gives ReferencedROINumber 1 to more than one"),
    ],
)
def test_an_roi_number_given_twice_is_refused(series, rtstruct, tmp_path, change, words):
    path = _save_changed(rtstruct, change, tmp_path / "RS_twice.dcm")
    with pytest.raises(DicomError) as error:
        import_rtstruct(path, series, TABLE)
    assert words in _refusal(error, path)


@pytest.fixture
def inputs(series, tmp_path):
    """A label map, its class table and a copy of the series, as a user keeps them in one folder."""
    labels = write_volume(two_organs(series.volume), tmp_path / "v_labels.nii.gz")
    classes = write_class_file(
        tmp_path / "v_classes.json", class_file_entries(["background", "Brainstem", "SpinalCord"]), labels
    )
    return labels, classes, series.folder


def _export_fails(capsys, verb, labels, folder, output, *extra) -> str:
    argv = [verb, "export", str(labels), "--dicom", str(folder), "-o", str(output), "--overwrite", *extra]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cgs {verb}: error: {output}"), lines
    return lines[0]


@pytest.mark.parametrize("verb", ["rtstruct", "seg"])
def test_an_export_never_replaces_its_inputs(inputs, capsys, verb, tmp_path):
    labels, classes, folder = inputs
    kept = {path: path.read_bytes() for path in (labels, classes, slice_file(folder, 1))}
    assert "cannot be written under a .nii.gz name" in _export_fails(capsys, verb, labels, folder, labels)
    assert "cannot be written under a .json name" in _export_fails(capsys, verb, labels, folder, classes)
    assert "lies in the series folder" in _export_fails(capsys, verb, labels, folder, slice_file(folder, 1))
    assert "lies in the series folder" in _export_fails(capsys, verb, labels, folder, folder / "new.dcm")
    for name, target in (("labels.dcm", labels), ("classes.dcm", classes)):
        link = tmp_path / name
        link.symlink_to(target)  # another name of the same file
        line = _export_fails(capsys, verb, labels, folder, link, "--classes", str(classes))
        assert f"is the input {target}" in line
    assert {path: path.read_bytes() for path in kept} == kept
    assert not (folder / "new.dcm").exists()


def test_the_library_export_never_writes_into_the_series(series, tmp_path):
    labels = two_organs(series.volume)
    for export in (export_rtstruct, export_seg):
        with pytest.raises(DicomError) as error:
            export(labels, series, TABLE, series.folder / "out.dcm", overwrite=True)
        assert "lies in the series folder" in _refusal(error, series.folder / "out.dcm")
    assert not (series.folder / "out.dcm").exists()


@pytest.mark.parametrize("verb", ["rtstruct", "seg"])
def test_an_empty_label_map_is_refused_by_both_exports(series, tmp_path, capsys, verb):
    empty = write_volume(
        series.volume.like(np.zeros(series.volume.shape, np.uint8), "labels"), tmp_path / "e.nii.gz"
    )
    output = tmp_path / "out.dcm"
    argv = [
        verb,
        "export",
        str(empty),
        "--dicom",
        str(series.folder),
        "-o",
        str(output),
        "--classes",
        "openkbp",
    ]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cgs {verb}: error: {empty}: the label map is empty")
    assert not output.exists()
