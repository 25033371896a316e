"""The worklist (`cgs review --worklist`, `cgs project worklist`) and `cgs review --fit-error-model`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from review_model import GEOMETRY, NAMES, checkpoint, image

from cgs_engine.checkpoint import save_checkpoint
from cgs_engine.cli.main import main
from cgs_engine.io import write_volume
from cgs_engine.project import Project
from cgs_engine.project.worklist import WORKLIST_FILE, project_worklist
from cgs_engine.review import worklist
from cgs_engine.review.error_model import load_error_model, sidecar_path
from cgs_engine.review.worklist import ScanScore, ordered
from cgs_engine.volume import Volume


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint(), path)
    return path


def _scans(folder: Path, count: int = 3) -> list[Path]:
    folder.mkdir()
    paths = []
    for index in range(count):
        scan = image()
        scan[:, :, : 4 * index] = 0.0  # each scan a little different
        path = folder / f"scan{index}.nii.gz"
        write_volume(Volume(scan, GEOMETRY), path)
        paths.append(path)
    return paths


def _prior(folder: Path, cases: int = 2, validation: int = 0) -> Path:
    """A prior folder (prior.json + images + labels) in the model's classes; the last
    ``validation`` of the ``cases`` are validation cases."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    entries = []
    for index in range(cases):
        labels = np.zeros((8, 32, 32), np.uint8)
        labels[2:6, 8 + index : 20, 8:20] = 1
        labels[3:5, 22:26, 10:14] = 2
        labels[3:5, 4:7, 24:28] = 3
        write_volume(Volume(image(), GEOMETRY), folder / "images" / f"c{index}.nii.gz")
        write_volume(Volume(labels, GEOMETRY, "labels"), folder / "labels" / f"c{index}.nii.gz")
        entries.append(
            {
                "name": f"c{index}",
                "image": f"images/c{index}.nii.gz",
                "labels": f"labels/c{index}.nii.gz",
                "split": "val" if index >= cases - validation else "train",
            }
        )
    manifest = {"format": "napari-cgs-prior", "format_version": 1, "class_names": NAMES, "cases": entries}
    (folder / "prior.json").write_text(json.dumps(manifest))
    return folder


def test_worklist_of_a_folder_orders_scans_worst_first(tmp_path, model, capsys):
    _scans(tmp_path / "scans")
    (tmp_path / "scans" / "notes.txt").write_text("not a scan")
    (tmp_path / "scans" / "broken.nii.gz").write_bytes(b"not a volume")
    report = tmp_path / "worklist.json"
    assert (
        main(["review", "--worklist", str(tmp_path / "scans"), "--model", str(model), "--json", str(report)])
        == 0
    )
    printed = capsys.readouterr()
    assert "no calibrated error model" in printed.err and "scan0.nii.gz" in printed.out
    rows = json.loads(report.read_text())["scans"]
    assert len(rows) == 4 and rows[-1]["path"].endswith("broken.nii.gz") and rows[-1]["problem"]
    scores = [row["score"] for row in rows[:3]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert set(rows[0]["organs"]) == {"a", "b", "c"}
    assert {"predicted_ml", "likely_wrong_ml", "likely_missed_ml", "estimated_dice"} <= set(
        rows[0]["organs"]["a"]
    )


def test_worklist_bad_arguments_are_one_line(tmp_path, model, capsys):
    (tmp_path / "empty").mkdir()
    for arguments, message in (
        (["review", "--worklist", str(tmp_path / "empty"), "--model", str(model)], "no scans"),
        (["review", "--worklist", str(tmp_path / "missing"), "--model", str(model)], "no such folder"),
        (["review", "--worklist", str(tmp_path / "empty")], "needs --model"),
        (["review"], "give one of"),
        (["review", "x_disagreement.nii.gz", "--worklist", str(tmp_path)], "give one of"),
        (["review", "--fit-error-model", str(model), "--l2", "-1"], "--l2"),
    ):
        assert main(arguments) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error


def test_ordering_puts_unscored_scans_last():
    good, bad, worse, empty = (
        ScanScore("a", 0.2),
        ScanScore("b", float("nan"), problem="unreadable"),
        ScanScore("c", 0.5),
        ScanScore("d", float("nan")),  # predicted, but no organ found
    )
    assert empty.found_no_organ and not bad.found_no_organ and "no organ found" in empty.describe()
    assert [s.path for s in ordered([good, bad, worse, empty])] == ["c", "a", "d", "b"]
    again = ScanScore.from_dict(json.loads(json.dumps(bad.to_dict())))
    assert math.isnan(again.score) and again.problem == "unreadable"


def test_organs_without_an_estimated_dice_are_written_as_strict_json():
    """An organ the model neither predicted nor likely missed has no estimated Dice (NaN): the
    worklist's --json wrote a bare NaN, which strict JSON readers (JSON.parse, Python's
    parse_constant) refuse."""
    organs = {
        "SpinalCord": {"predicted_ml": 12.0, "likely_wrong_ml": 1.0, "estimated_dice": 0.8},
        "Larynx": {"predicted_ml": 0.0, "likely_wrong_ml": 0.0, "estimated_dice": float("nan")},
    }
    score = ScanScore("a", 0.2, calibrated=True, likely_wrong_ml=1.0, organs=organs)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    text = json.dumps(score.to_dict())
    data = json.loads(text, parse_constant=refuse)
    assert data["organs"]["Larynx"]["estimated_dice"] is None
    again = ScanScore.from_dict(data)
    assert (
        math.isnan(again.organs["Larynx"]["estimated_dice"])
        and again.organs["SpinalCord"] == organs["SpinalCord"]
    )


def test_project_worklist_scores_each_scan_once(tmp_path, model, monkeypatch, capsys):
    scans = _scans(tmp_path / "scans")
    project = Project.create(tmp_path / "proj", NAMES, _normalization(), base_model=model, prior_data=None)
    project.add_unlabeled(scans)
    calls = []
    real = worklist.score_scan

    def counted(predictor, path):
        calls.append(Path(path).name)
        return real(predictor, path)

    monkeypatch.setattr("cgs_engine.project.worklist.score_scan", counted)
    first = project_worklist(project)
    assert len(calls) == 3 and (project.folder / WORKLIST_FILE).is_file()
    assert [s.score for s in first] == sorted((s.score for s in first), reverse=True)
    second = project_worklist(project)
    assert len(calls) == 3 and [s.path for s in second] == [s.path for s in first]  # from the cache
    scans[1].write_bytes(scans[0].read_bytes())  # a scan changed on disk: listed with its reason
    third = project_worklist(project)
    assert third[-1].path == str(scans[1]) and "changed" in third[-1].problem
    capsys.readouterr()
    assert main(["project", "worklist", str(project.folder), "--rescore"]) == 0
    assert len(calls) == 5 and "scan" in capsys.readouterr().out


def _normalization():
    from cgs_engine.normalize import Normalization

    return Normalization(mode="identity")


def test_fit_error_model_writes_the_sidecar_from_the_prior_data(tmp_path, model, capsys):
    prior = _prior(tmp_path / "model.prior")
    assert main(["review", "--fit-error-model", str(model), "--l2", "0.001"]) == 0
    fitted = load_error_model(sidecar_path(model))
    assert fitted.fitted_on["cases"] == ["c0", "c1"] and fitted.fitted_on["prior_data"] == prior.name
    assert fitted.class_names == NAMES and set(fitted.typical_ml) == {1, 2, 3}
    before = sidecar_path(model).read_bytes()
    assert main(["review", "--fit-error-model", str(model)]) == 2  # exists: refused, kept
    assert "already exists" in capsys.readouterr().err and sidecar_path(model).read_bytes() == before
    # a project made from the model keeps its calibration beside version v0001
    project = Project.create(tmp_path / "proj", NAMES, _normalization(), base_model=model, prior_data=None)
    assert sidecar_path(project.active_model_path()).read_bytes() == before


def test_fit_uses_the_validation_cases_unless_told_train_only(tmp_path, model, capsys):
    _prior(tmp_path / "model.prior", cases=3, validation=1)
    assert main(["review", "--fit-error-model", str(model), "--l2", "0.001"]) == 0
    assert "c2 (validation):" in capsys.readouterr().out
    fitted = load_error_model(sidecar_path(model))
    assert fitted.fitted_on["cases"] == ["c0", "c1", "c2"] and fitted.fitted_on["validation_cases"] == ["c2"]
    args = ["review", "--fit-error-model", str(model), "--l2", "0.001", "--calibrate-on", "train"]
    assert main([*args, "--overwrite"]) == 0
    fitted = load_error_model(sidecar_path(model))
    assert fitted.fitted_on["cases"] == ["c0", "c1"] and fitted.fitted_on["validation_cases"] == []


def test_fit_on_one_training_case_only_is_one_line(tmp_path, model, capsys):
    _prior(tmp_path / "model.prior", cases=2, validation=1)
    assert main(["review", "--fit-error-model", str(model), "--calibrate-on", "train"]) == 2
    err = capsys.readouterr().err
    assert "1 labeled case(s); calibrating needs at least 2" in err and len(err.strip().splitlines()) == 1
    assert not sidecar_path(model).exists()


def test_fit_without_prior_data_is_one_line(tmp_path, model, capsys):
    assert main(["review", "--fit-error-model", str(model)]) == 2
    assert "no prior data found" in capsys.readouterr().err


def test_a_folder_worklist_leaves_out_the_outputs_of_an_earlier_prediction(tmp_path):
    """Label and probability maps `cgs predict` wrote beside the scans are no scans to rank."""
    from cgs_engine.io import write_volume
    from cgs_engine.review.worklist import scans_in_folder

    scan = Volume(image(), GEOMETRY)
    write_volume(scan, tmp_path / "ct.nii.gz")
    write_volume(scan.like(np.zeros(scan.shape, np.uint8), "labels"), tmp_path / "ct_labels.nii.gz")
    write_volume(scan.like(np.zeros(scan.shape, np.uint8), "map"), tmp_path / "ct_map_a.nii.gz")
    (tmp_path / "ct_classes.json").write_text("{}")
    assert scans_in_folder(tmp_path) == [tmp_path / "ct.nii.gz"]


def test_a_folder_worklist_scores_a_linked_scan_once_and_no_label_map(tmp_path, model, capsys):
    """A link beside its scan was scored and ranked twice (opened twice, each with a session of
    its own), a reference segmentation ranked as a scan "with no organ found"; and --json naming a
    scan of the folder, with --overwrite, replaced that CT with the report."""
    from cgs_engine.review.worklist import scans_in_folder

    folder = tmp_path / "scans"
    paths = _scans(folder, count=2)
    (folder / "a_link.nii.gz").symlink_to(paths[1])
    os.link(paths[0], folder / "z_hard_link.nii.gz")
    (folder / "y_dangling.nii.gz").symlink_to(folder / "gone.nii.gz")  # listed, never a stop
    reference = np.zeros((8, 32, 32), np.uint8)
    reference[2:6, 8:20, 8:20] = 1
    reference[3:5, 22:26, 10:14] = 2
    write_volume(Volume(reference, GEOMETRY, "labels"), folder / "seg.nii.gz")
    assert scans_in_folder(folder) == [
        paths[0],
        paths[1],
        folder / "seg.nii.gz",
        folder / "y_dangling.nii.gz",
    ]
    report = tmp_path / "worklist.json"
    assert main(["review", "--worklist", str(folder), "--model", str(model), "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["scans"]
    assert [Path(row["path"]).name for row in rows[:2]] in (
        ["scan0.nii.gz", "scan1.nii.gz"],
        ["scan1.nii.gz", "scan0.nii.gz"],
    )
    assert rows[2]["path"].endswith("seg.nii.gz") and "looks like a label map" in rows[2]["problem"]
    capsys.readouterr()
    before = paths[0].read_bytes()
    argv = ["review", "--worklist", str(folder), "--model", str(model), "--json", str(paths[0])]
    assert main([*argv, "--overwrite"]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    assert paths[0].read_bytes() == before


def test_a_project_worklist_report_never_replaces_a_project_record(tmp_path, model, capsys):
    scans = _scans(tmp_path / "scans", count=1)
    project = Project.create(tmp_path / "proj", NAMES, _normalization(), base_model=model, prior_data=None)
    project.add_unlabeled(scans)
    record = project.folder / "project.json"
    before = record.read_bytes()
    argv = ["project", "worklist", str(project.folder), "--json", str(record), "--overwrite"]
    assert main(argv) == 2
    assert "one of this command's inputs" in capsys.readouterr().err
    assert record.read_bytes() == before
    # anywhere in the project folder, at the first run as at the next (a report written there
    # was refused only at its rerun, as a file of the project)
    (project.folder / "reports").mkdir()
    argv[4] = str(project.folder / "reports" / "worklist.json")
    assert main(argv) == 2
    assert "lies in" in capsys.readouterr().err


def test_a_json_report_never_goes_into_a_dicom_series_given_as_input(tmp_path):
    from cgs_engine.cli.paths import check_json_target
    from cgs_engine.errors import CGSError

    series = tmp_path / "patient1"
    series.mkdir()
    (series / "0001.dcm").write_bytes(b"slice")
    with pytest.raises(CGSError, match="lies in .*patient1, one of this command's inputs"):
        check_json_target(series / "0001.dcm", True, [series])
    with pytest.raises(CGSError, match="lies in"):
        check_json_target(series / "new.json", False, [series])
    check_json_target(tmp_path / "report.json", False, [series])


def test_a_scan_unlike_the_training_data_is_ranked_after_those_like_it():
    """Wrong everywhere on an MR given to a CT model teaches the model nothing: it must not top
    the list of what to correct next; it comes after the scans in scope, and says why."""
    from cgs_engine.review.worklist import ScanScore, ordered

    inside = ScanScore("ct.nii.gz", 0.2)
    outside = ScanScore("mr.nii.gz", 0.9, outside=["this scan looks like MR; the model was trained on CT"])
    unreadable = ScanScore("bad.nii.gz", float("nan"), problem="unreadable")
    assert ordered([outside, unreadable, inside]) == [inside, outside, unreadable]
    assert "ranked last: this scan looks like MR" in outside.describe()
    assert ScanScore.from_dict(outside.to_dict()) == outside


def test_the_worst_organ_is_the_one_with_the_lowest_estimated_dice():
    # The big mandible carries the most likely wrong mL while being the best organ of the scan:
    # the reviewer is sent to the larynx, which the score (1 - mean estimated Dice) blames most.
    organs = {
        "Mandible": {"likely_wrong_ml": 9.0, "predicted_ml": 80.0, "estimated_dice": 0.88},
        "Larynx": {"likely_wrong_ml": 3.0, "predicted_ml": 12.0, "estimated_dice": 0.55},
        "Brainstem": {"likely_wrong_ml": 2.0, "predicted_ml": 25.0, "estimated_dice": math.nan},
    }
    score = ScanScore("scan.nii.gz", 0.3, calibrated=True, likely_wrong_ml=14.0, organs=organs)
    assert score.worst_organ() == "Larynx"
    assert "worst Larynx (est. Dice 0.55)" in score.describe()
    unestimated = {name: {**row, "estimated_dice": math.nan} for name, row in organs.items()}
    assert ScanScore("scan.nii.gz", math.nan, organs=unestimated).worst_organ() == "Mandible"
    assert ScanScore("scan.nii.gz", math.nan).worst_organ() is None
