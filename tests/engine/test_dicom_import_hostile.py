"""Damaged RTSTRUCT and SEG files: refused in one line naming the file, or imported with every
contour that did not make it counted and warned about; never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_rt_cases import DAMAGED_RT, TABLE, rt_files, two_organs
from dicom_series_cases import good_series

from cgs_engine.cli.main import main
from cgs_engine.dicom import DicomError, import_rtstruct, import_seg, read_series


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("rt")
    series_folder = good_series(root / "series")
    return series_folder, rt_files(series_folder, root / "rt")


def importer(name: str):
    return import_seg if DAMAGED_RT[name][0] == "SEG" else import_rtstruct


@pytest.mark.parametrize("name", sorted(n for n, case in DAMAGED_RT.items() if case[2] == "refuse"))
def test_damaged_files_are_refused_in_one_line(files, name):
    series_folder, paths = files
    with pytest.raises(DicomError) as error:
        importer(name)(paths[name], read_series(series_folder), TABLE)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(paths[name])), message
    assert DAMAGED_RT[name][3] in message, message


@pytest.mark.parametrize("name", sorted(n for n, case in DAMAGED_RT.items() if case[2] == "warn"))
def test_every_contour_left_out_is_counted_and_warned(files, name):
    series_folder, paths = files
    result = import_rtstruct(paths[name], read_series(series_folder), TABLE)
    assert any(DAMAGED_RT[name][3] in line for line in result.warnings), result.warnings
    assert all("\n" not in line for line in result.warnings)


def test_the_counts_say_how_many_contours_and_whose(files):
    series_folder, paths = files
    series = read_series(series_folder)
    whole = import_rtstruct(paths["RS"], series, TABLE)
    assert whole.warnings == [] and whole.dropped.total == 0
    np.testing.assert_array_equal(whole.labels.array, two_organs(series.volume).array)
    off = import_rtstruct(paths["rtstruct-off-the-image"], series, TABLE)
    assert off.dropped.counts["off the image"] == {"Brainstem": 1}
    lost = int(whole.rois[0].voxels - off.rois[0].voxels)
    assert lost == 10 * 12  # the one slice of the Brainstem box whose contour was moved away
    elsewhere = import_rtstruct(paths["rtstruct-roi-in-another-frame"], series, TABLE)
    assert elsewhere.dropped.counts["other frame"] == {"SpinalCord": 2}  # its box on 2 slices
    assert [roi.roi_name for roi in elsewhere.rois] == ["Brainstem"]


def test_the_cli_prints_the_warnings_and_refusals(files, tmp_path, capsys):
    series_folder, paths = files
    out = tmp_path / "labels.nii.gz"
    code = main(
        [
            "rtstruct",
            "import",
            str(paths["rtstruct-open-planar"]),
            "--dicom",
            str(series_folder),
            "-o",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and out.exists()
    earlier = out.read_bytes()
    assert captured.err.splitlines() == [
        f"warning: {paths['rtstruct-open-planar']}: 1 contour left out, not closed (OPEN_PLANAR, "
        "OPEN_NONPLANAR or POINT), so enclosing no area: Brainstem 1"
    ]
    code = main(
        [
            "seg",
            "import",
            str(paths["seg-truncated-60"]),
            "--dicom",
            str(series_folder),
            "-o",
            str(out),
            "--overwrite",
        ]
    )
    lines = capsys.readouterr().err.splitlines()
    assert out.read_bytes() == earlier  # a refusal keeps the earlier label map
    assert (
        code == 2 and len(lines) == 1 and lines[0].startswith(f"cgs seg: error: {paths['seg-truncated-60']}")
    )
