"""Issue 22, DICOM: a damaged series folder gets the same one-line refusal from every command that
reads one, so a scan is never predicted and then refused for export; valid ones go all the way."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from conftest import assert_one_line_error, cgs
from dicom_series_cases import BROKEN, SERIES_VERBS, SHAPE, VALID, damaged_copy, good_series, series_command

from cgs_engine.classes.files import class_file_for
from cgs_engine.cli.class_source import openkbp_table
from cgs_engine.cli.main import main
from cgs_engine.io import read_volume, write_volume


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("hostile-dicom")
    good = good_series(root / "good")
    labels = read_volume(good).like(np.zeros(SHAPE, np.uint8), "labels")
    labels.array[2:5, 4:9, 6:12] = 1
    labels_path = write_volume(labels, root / "labels.nii.gz")
    class_file_for(labels_path).write_text(openkbp_table().to_json())  # as `cgs predict` leaves it
    assert main(["project", "create", str(root / "project"), "--base-model", str(tiny_model)]) == 0
    return root, good, labels_path, tiny_model


def arguments(verb: str, folder, setting) -> list[str]:
    root, _, labels, model = setting
    return series_command(verb, folder, root, model, labels)


def run(argv) -> tuple[int, list[str]]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, [line for line in stderr.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_every_command_refuses_a_damaged_series_with_the_same_line(setting, case):
    root, good, _, _ = setting
    folder = damaged_copy(good, root / case, BROKEN[case][0])
    (root / "out" / case).mkdir(parents=True)
    problems = set()
    for verb in SERIES_VERBS:
        code, lines = run(arguments(verb, folder, setting))
        errors = [line for line in lines if ": error: " in line]
        assert code == 2 and len(errors) == 1 and lines[-1] == errors[0], (verb, lines)
        assert BROKEN[case][1] in errors[0], (verb, errors)
        problems.add(errors[0].split(": error: ", 1)[1])
    assert len(problems) == 1, problems  # one check, one message
    assert [p.name for p in (root / "out" / case).iterdir()] == []  # nothing written
    assert not (root / "project" / "corrections").exists() or not any(
        (root / "project" / "corrections").iterdir()
    )


@pytest.mark.parametrize("case", sorted(VALID))
def test_a_valid_series_is_predicted_and_exported(setting, case, tmp_path):
    root, good, _, model = setting
    folder = damaged_copy(good, tmp_path / case, VALID[case])
    out = tmp_path / "out"
    code, lines = run(["predict", model, folder, "-o", out])
    assert code == 0, lines
    predicted = out / f"{case}_labels.nii.gz"
    for verb in ("rtstruct", "seg"):
        code, lines = run([verb, "export", predicted, "--dicom", folder, "-o", tmp_path / f"{verb}.dcm"])
        # an untrained model may predict nothing: an export of no organ is refused, and said so
        assert code == 0 or "the label map is empty" in lines[-1], (verb, lines)


def test_series_uid_picks_one_of_two_in_every_command(setting, tmp_path):
    root, good, labels, model = setting
    folder = damaged_copy(good, tmp_path / "two", BROKEN["two-series"][0])
    line = assert_one_line_error(cgs("info", folder), str(folder), "holds 2 image series", "--series UID")
    uid = line.split("image series: ", 1)[1].split(" ", 1)[0]
    assert cgs("info", folder, "--series", uid).returncode == 0
    assert run(["convert", folder, tmp_path / "a.nii.gz", "--series", uid])[0] == 0
    assert run(["predict", model, folder, "-o", tmp_path / "p", "--series", uid])[0] == 0
    assert (
        run(["rtstruct", "export", labels, "--dicom", folder, "-o", tmp_path / "RS.dcm", "--series", uid])[0]
        == 0
    )
    code, lines = run(
        ["seg", "export", labels, "--dicom", folder, "-o", tmp_path / "S.dcm", "--series", "1.2.3"]
    )
    assert code == 2 and "holds no image series 1.2.3" in lines[-1]


def test_predict_overwrite_replaces_nothing_when_a_series_among_the_inputs_is_damaged(setting, tmp_path):
    """With several inputs and --overwrite, a damaged series folder is refused before the earlier
    outputs of the good inputs are replaced (it was found only when its turn came)."""
    root, good, _, model = setting
    scan = write_volume(read_volume(good), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert run(["predict", model, scan, "-o", out])[0] == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    damaged = damaged_copy(good, tmp_path / "missing", BROKEN["missing-slice"][0])
    code, lines = run(["predict", model, scan, damaged, "-o", out, "--overwrite"])
    assert code == 2 and "not evenly spaced" in lines[-1]
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("shape", ["2D", "4D", "RGB"])
def test_predict_writes_nothing_when_an_input_is_not_one_3d_volume(setting, tmp_path, shape):
    """A 2D, 4D or RGB input was found only at its turn: the outputs of the inputs before it were
    written, although every input is checked before the first write."""
    import SimpleITK as sitk

    root, good, _, model = setting
    scan = write_volume(read_volume(good), tmp_path / "scan.nii.gz")
    odd = tmp_path / ("odd.mha" if shape == "RGB" else "odd.nii.gz")
    if shape == "2D":
        image = sitk.GetImageFromArray(np.zeros((20, 30), np.int16))
    elif shape == "4D":
        image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((4, 20, 30), np.int16))] * 3)
    else:
        image = sitk.GetImageFromArray(np.zeros((4, 20, 30, 3), np.uint8), isVector=True)
    sitk.WriteImage(image, str(odd))
    out = tmp_path / "out"
    code, lines = run(["predict", model, scan, odd, "-o", out])
    assert code == 2 and "odd." in lines[-1] and ("3D volume" in lines[-1] or "per voxel" in lines[-1])
    assert not out.exists() or not any(out.iterdir())


def test_predict_says_which_image_files_beside_a_series_it_leaves_out(setting, tmp_path):
    """A folder holding a DICOM series and a NIfTI file was read as its series only, exit 0, and
    the NIfTI file was passed over without a word."""
    import shutil

    root, good, _, model = setting
    folder = tmp_path / "mixed"
    shutil.copytree(good, folder)
    write_volume(read_volume(good), folder / "other.nii.gz")
    code, lines = run(["predict", model, folder, "-o", folder])  # its outputs beside it are no scans
    assert code == 0
    assert any("1 image file(s) beside it left out (other.nii.gz)" in line for line in lines), lines
    code, lines = run(["predict", model, folder, "-o", folder, "--overwrite"])
    assert code == 0
    assert any("1 image file(s) beside it left out (other.nii.gz)" in line for line in lines), lines
