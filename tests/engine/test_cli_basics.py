"""`cgs --help`, `cgs --version` and the I/O verbs, in process and as the installed console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine import __version__
from cgs_engine.cli.main import main


def _write_image(path, array, spacing=(0.7, 0.7, 5.0), origin=(10.0, -20.0, 30.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "info" in capsys.readouterr().out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "cgs"
    if not exe.exists():
        pytest.skip("cgs console script not installed beside this Python")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "convert" in result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGPIPE on Windows")
def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    # `cgs info a b c | head -1`: the pipe's reader is gone before the command prints. The command
    # ends like any Unix tool ended by SIGPIPE, with no error line and no traceback from the flush.
    image = _write_image(tmp_path / "ct.nii.gz", np.zeros((4, 6, 6), np.int16))
    process = subprocess.Popen(
        [sys.executable, "-m", "cgs_engine", "info", *[str(image)] * 3],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141
    assert stderr == ""


def test_a_broken_pipe_elsewhere_is_still_an_error(tmp_path, monkeypatch, capsys):
    # Only a closed stdout is the reader leaving; a pipe that broke inside the work is a failure.
    from cgs_engine.cli import verb_info

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(verb_info, "run", broken)
    assert main(["info", str(tmp_path / "x.nii.gz")]) == 2
    assert "Broken pipe" in capsys.readouterr().err


def test_info_prints_geometry(tmp_path, capsys):
    path = _write_image(tmp_path / "ct.nii.gz", np.zeros((4, 5, 6), np.int16))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[4, 5, 6]" in out and "0.7 x 0.7 x 5" in out


def test_convert_keeps_geometry_and_refuses_overwrite(tmp_path, capsys):
    source = _write_image(tmp_path / "ct.nii.gz", np.arange(120, dtype=np.int16).reshape(4, 5, 6))
    target = tmp_path / "ct.mha"
    assert main(["convert", str(source), str(target)]) == 0
    back = sitk.ReadImage(str(target))
    assert np.allclose(back.GetSpacing(), (0.7, 0.7, 5.0), rtol=1e-6)
    assert np.allclose(back.GetOrigin(), (10.0, -20.0, 30.0))
    before = target.read_bytes()
    assert main(["convert", str(source), str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ct.mha" in err and "exists" in err
    assert target.read_bytes() == before


def test_convert_labels_carries_the_class_file_and_refuses_a_damaged_one_before_writing(tmp_path, capsys):
    import json

    labels = _write_image(tmp_path / "seg.nrrd", np.tile(np.arange(3, dtype=np.uint8), 40).reshape(4, 5, 6))
    table = tmp_path / "seg_classes.json"
    table.write_text(json.dumps({"classes": [{"id": 1, "name": "Liver"}, {"id": 2, "name": "Spleen"}]}))
    assert main(["convert", str(labels), str(tmp_path / "out" / "seg.nii.gz"), "--labels"]) == 2  # no folder
    capsys.readouterr()
    (tmp_path / "out").mkdir()
    assert main(["convert", str(labels), str(tmp_path / "out" / "seg.nii.gz"), "--labels"]) == 0
    carried = json.loads((tmp_path / "out" / "seg_classes.json").read_text())
    assert carried["labels"] == "seg.nii.gz" and [c["name"] for c in carried["classes"]] == [
        "Liver",
        "Spleen",
    ]
    capsys.readouterr()
    table.write_text("{ not json")
    assert main(["convert", str(labels), str(tmp_path / "seg2.nii.gz"), "--labels"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seg_classes.json" in err and "not a readable class table" in err
    assert not (tmp_path / "seg2.nii.gz").exists()  # refused before anything was written


def test_missing_input_is_one_line_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.nii.gz" in err


def test_cli_method_choices_match_the_objective():
    from cgs_engine.cli.verb_train import METHODS as CLI_METHODS
    from cgs_engine.method.objective import METHODS

    assert CLI_METHODS == METHODS


def test_retrain_help_states_the_default_iteration_cap(capsys):
    from cgs_engine.retrain.recipe import RETRAIN_DEFAULTS

    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"stops after {RETRAIN_DEFAULTS['max_iterations']} iterations" in help_text


def test_a_folder_argument_with_a_link_to_a_missing_scan_is_refused(tmp_path, capsys):
    # the link was skipped: a case vanished from the import (or a predict batch) without a word
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "a.nii.gz", np.zeros((3, 4, 4), np.int16))
    (folder / "b.nii.gz").symlink_to(tmp_path / "moved_away.nii.gz")
    (folder / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not a scan's name: no matter
    labels = tmp_path / "labels"
    labels.mkdir()
    _write_image(labels / "a.nii.gz", np.zeros((3, 4, 4), np.uint8))
    out = tmp_path / "s.h5"
    assert main(["import", "nifti", "--images", str(folder), "--labels", str(labels), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert "b.nii.gz: a link to a file that does not exist (--images)" in error and "notes" not in error
    assert not out.exists()


def test_a_file_where_a_folder_belongs_is_named_as_a_file(tmp_path, capsys):
    # "no such folder" / "no such project folder" for a file that exists
    scan = _write_image(tmp_path / "ct.nii.gz", np.zeros((3, 4, 4), np.int16))
    assert main(["review", "--worklist", str(scan), "--model", str(tmp_path / "m.pt")]) == 2
    assert f"{scan}: is a file; give the folder of scans it lies in" in capsys.readouterr().err
    assert main(["project", "versions", str(scan)]) == 2
    assert f"{scan}: is a file, not a project folder" in capsys.readouterr().err


def test_an_error_model_fit_that_fails_names_the_model(tmp_path, monkeypatch, capsys):
    from cgs_engine.project import calibration
    from cgs_engine.review.error_model import ErrorModelError

    def no_organ(*args, **kwargs):
        raise ErrorModelError("the model predicted no organ on any case: no voxels to learn its errors from")

    monkeypatch.setattr(calibration, "write_error_model", no_organ)
    model = tmp_path / "best.pt"
    assert main(["review", "--fit-error-model", str(model)]) == 2
    assert f"{model}: the model predicted no organ on any case" in capsys.readouterr().err
