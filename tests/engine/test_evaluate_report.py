"""Summaries, table, JSON and file pairing of cgs_engine.evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cgs_engine.evaluate import ClassMetrics, evaluate_volume, format_table, pair_files, summarise, to_json

NAMES = {1: "liver", 2: "spleen"}


def _ok(dice: float, hd95_mm: float = 2.0) -> ClassMetrics:
    return ClassMetrics(dice, dice / (2 - dice), 1.0, 0.5, hd95_mm, 1.0, 100, 100, "ok")


EMPTY_PRED = ClassMetrics(0.0, 0.0, None, None, None, None, 0, 50, "empty_pred")
ABSENT = ClassMetrics(None, None, None, None, None, None, 0, 0, "absent")


@pytest.fixture
def per_volume() -> dict[str, dict[int, ClassMetrics]]:
    return {
        "case_a": {1: _ok(1.0, hd95_mm=2.0), 2: EMPTY_PRED},
        "case_b": {1: _ok(0.5, hd95_mm=4.0), 2: ABSENT},
    }


def test_summary_averages_over_volumes_then_over_classes(per_volume):
    summary = summarise(per_volume, NAMES)
    liver, spleen = summary.classes
    assert (liver.name, spleen.name) == ("liver", "spleen")
    assert liver.metrics["dice"].mean == pytest.approx(0.75)
    assert liver.metrics["dice"].std == pytest.approx(0.25)
    # empty_pred counts as Dice 0; the absent case is skipped and counted
    assert spleen.metrics["dice"].mean == 0.0
    assert (spleen.metrics["dice"].n, spleen.metrics["dice"].n_missing) == (1, 1)
    # class means first: (0.75 + 0) / 2, not the pooled (1 + 0.5 + 0) / 3
    assert summary.mean["dice"].mean == pytest.approx(0.375)
    assert summary.n_volumes == 2


def test_summary_counts_statuses_and_missing_distances(per_volume):
    spleen = summarise(per_volume, NAMES).classes[1]
    assert (spleen.n_volumes, spleen.n_ok, spleen.n_empty_pred, spleen.n_empty_gt, spleen.n_absent) == (
        2,
        0,
        1,
        0,
        1,
    )
    hd95 = spleen.metrics["hd95_mm"]
    assert (hd95.mean, hd95.n, hd95.n_missing) == (None, 0, 2)
    summary = summarise(per_volume, NAMES)
    # the mean over classes skips spleen, whose HD95 is missing everywhere
    assert summary.mean["hd95_mm"].mean == pytest.approx(3.0)
    assert (summary.mean["hd95_mm"].n, summary.mean["hd95_mm"].n_missing) == (1, 1)


def test_summary_from_evaluated_volumes_counts_empty_cases():
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[1:4, 1:4, 1:4] = 1
    pred = gt.copy()
    pred[5:7, 5:7, 5:7] = 2
    per_volume = {"v1": evaluate_volume(pred, gt, NAMES), "v2": evaluate_volume(gt, gt, NAMES)}
    summary = summarise(per_volume, NAMES)
    liver, spleen = summary.classes
    assert liver.metrics["dice"].mean == 1.0 and liver.n_ok == 2
    assert (spleen.n_empty_gt, spleen.n_absent, spleen.metrics["dice"].mean) == (1, 1, 0.0)


def test_table_has_a_row_per_class_and_a_mean_row(per_volume):
    table = format_table(summarise(per_volume, NAMES))
    lines = table.splitlines()
    header = lines[0]
    for column in ("class", "Dice", "Jaccard", "HD95 mm", "ASD mm", "HD95 vox", "ASD vox", "empty pred"):
        assert column in header
    liver_row = next(line for line in lines if line.startswith("liver"))
    spleen_row = next(line for line in lines if line.startswith("spleen"))
    mean_row = next(line for line in lines if line.startswith("mean"))
    assert "0.7500±0.2500" in liver_row
    assert "-" in spleen_row.split()  # HD95 missing, shown as '-'
    assert "0.3750" in mean_row
    assert len({len(line) for line in (header, liver_row)}) == 1  # aligned columns


def test_json_round_trip_keeps_none_for_missing(per_volume):
    summary = summarise(per_volume, NAMES)
    data = to_json(summary, per_volume)
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["volumes"]["case_b"]["2"]["dice"] is None
    assert data["volumes"]["case_a"]["2"]["status"] == "empty_pred"
    assert data["classes"][1]["metrics"]["hd95_mm"] == {"mean": None, "std": None, "n": 0, "n_missing": 2}
    assert data["mean"]["dice"]["mean"] == pytest.approx(0.375)
    assert "volumes" not in to_json(summary)


def _touch(directory: Path, *names: str) -> None:
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def test_pairing_accepts_extensions_and_prediction_suffixes_and_reports_unpaired(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _touch(gt_dir, "case1.nii.gz", "case2.mha", "case3.NRRD", "case4.nii", "case5.mhd", "case5.raw")
    _touch(
        pred_dir,
        "case1.nii.gz",
        "case2_labels.nii.gz",
        "case3_seg.mha",
        "case5.nhdr",
        "extra.nii",
        "notes.json",
        ".hidden.nii.gz",
    )
    (pred_dir / "subdir.nii").mkdir()
    result = pair_files(pred_dir, gt_dir)
    assert [name for name, _, _ in result.pairs] == ["case1", "case2", "case3", "case5"]
    assert result.pairs[1] == ("case2", pred_dir / "case2_labels.nii.gz", gt_dir / "case2.mha")
    assert result.missing_pred == ["case4"]
    assert result.missing_gt == ["extra"]


def test_pairing_prefers_the_exact_name(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _touch(gt_dir, "a.nii.gz", "b.nii.gz", "b_seg.nii.gz")
    _touch(pred_dir, "a.nii.gz", "a_seg.nii.gz", "b_seg.nii.gz", "b_labels.nii.gz")
    result = pair_files(pred_dir, gt_dir)
    assert [(name, pred.name) for name, pred, _ in result.pairs] == [
        ("a", "a.nii.gz"),
        ("b", "b_labels.nii.gz"),
        ("b_seg", "b_seg.nii.gz"),
    ]
    assert result.missing_gt == ["a_seg"] and result.missing_pred == []


def test_predictions_written_beside_the_scans_are_paired_not_the_scans(tmp_path):
    """`cgs predict -o scans/`: the CT pt_222 was taken as the prediction of reference pt_222 (and
    refused for its negative HU) while pt_222_labels was skipped as unpaired."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "scans"
    _touch(gt_dir, "pt_222.nii.gz", "pt_225.nii.gz")
    _touch(pred_dir, "pt_222.nii.gz", "pt_222_labels.nii.gz", "pt_225.nii.gz", "pt_225_labels.nii.gz")
    (pred_dir / "pt_222_classes.json").write_text(
        json.dumps({"labels": "pt_222_labels.nii.gz", "classes": []})
    )
    (pred_dir / "pt_225_classes.json").write_text(json.dumps({"labels": "pt_225.nii.gz", "classes": []}))
    result = pair_files(pred_dir, gt_dir)
    assert [(name, pred.name) for name, pred, _ in result.pairs] == [
        ("pt_222", "pt_222_labels.nii.gz"),
        ("pt_225", "pt_225.nii.gz"),  # its table names pt_225 itself: an edited map, the exact name
    ]
    assert result.missing_gt == ["pt_225_labels"]
    (pred_dir / "pt_225_classes.json").write_text(json.dumps({"classes": []}))  # an older predict's
    result = pair_files(pred_dir, gt_dir)
    assert [pred.name for _, pred, _ in result.pairs] == ["pt_222_labels.nii.gz", "pt_225_labels.nii.gz"]


def test_maps_written_by_predict_are_not_reported_as_unpaired(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _touch(gt_dir, "ct.nii.gz")
    _touch(
        pred_dir,
        "ct_labels.nii.gz",
        "ct_map_Brainstem.nii.gz",
        "ct_map_Left_Parotid.nii.gz",
        "ct_disagreement.nii.gz",
        "ct_likely_wrong.nii.gz",  # written with the maps once the model has an error model
        "ct_likely_wrong.json",
        "ct_classes.json",
        "other_map_Brainstem.nii.gz",  # the map of a case that was not evaluated: still reported
    )
    result = pair_files(pred_dir, gt_dir)
    assert [(name, pred.name) for name, pred, _ in result.pairs] == [("ct", "ct_labels.nii.gz")]
    assert result.maps_ignored == 4 and result.missing_gt == ["other_map_Brainstem"]


def test_pairing_errors_name_the_directory(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _touch(gt_dir, "x.nii.gz")
    _touch(pred_dir, "y.nii.gz")
    with pytest.raises(ValueError, match="no prediction in .*pred") as error:
        pair_files(pred_dir, gt_dir)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"missing: no such folder \(--pred\)"):
        pair_files(tmp_path / "missing", gt_dir)
    with pytest.raises(ValueError, match=r"x.nii.gz: is a file; --gt takes a folder"):
        pair_files(pred_dir, gt_dir / "x.nii.gz")
    # the maps beside a prediction are not counted as predictions that matched nothing
    _touch(pred_dir, "y_disagreement.nii.gz", "y_likely_wrong.nii.gz", "y_map_Brainstem.nii.gz")
    with pytest.raises(ValueError, match=r"\(1 predictions besides 3 maps, 1 ground truths\)"):
        pair_files(pred_dir, gt_dir)
    _touch(tmp_path / "empty")
    with pytest.raises(ValueError, match="no ground-truth image files .*empty"):
        pair_files(pred_dir, tmp_path / "empty")
    _touch(pred_dir, "y.mha")
    with pytest.raises(ValueError, match="two images for case 'y'"):
        pair_files(pred_dir, gt_dir)


def test_cgs_evaluate_scores_a_reference_numbered_otherwise_by_class_name(tmp_path, capsys):
    """A reference whose class file calls 1 what the predictions call 2 is compared organ by organ,
    not id by id (the ids alone would score each organ against the other)."""
    from cgs_engine.classes.files import write_class_file
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Volume

    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, :4] = 1
    labels[:, 4:6] = 2
    write_volume(Volume(labels, kind="labels"), tmp_path / "pred" / "case.nii.gz")
    entries = [{"id": 0, "name": "background"}, {"id": 1, "name": "Liver"}, {"id": 2, "name": "Spleen"}]
    write_class_file(tmp_path / "pred" / "case_classes.json", entries, tmp_path / "pred" / "case.nii.gz")
    swapped = np.where(labels == 1, 2, np.where(labels == 2, 1, 0)).astype(np.uint8)
    write_volume(Volume(swapped, kind="labels"), tmp_path / "gt" / "case.nii.gz")
    flipped = [entries[0], {"id": 1, "name": "spleen"}, {"id": 2, "name": "Liver"}]
    write_class_file(tmp_path / "gt" / "case_classes.json", flipped, tmp_path / "gt" / "case.nii.gz")
    json_out = tmp_path / "scores.json"
    folders = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main(["evaluate", *folders, "--json", str(json_out)]) == 0
    out = capsys.readouterr().out
    assert "spleen 1 -> 2, Liver 2 -> 1" in out
    summary = json.loads(json_out.read_text())
    assert "Liver" in json.dumps(summary) and "Spleen" in json.dumps(summary)
    dice = [value for value in _values_named(summary, "dice") if value is not None]
    assert dice and all(value == pytest.approx(1.0) for value in dice)

    flipped[1] = {"id": 1, "name": "Heart"}
    write_class_file(tmp_path / "gt" / "case_classes.json", flipped, tmp_path / "gt" / "case.nii.gz")
    assert main(["evaluate", *folders]) == 2
    err = capsys.readouterr().err
    assert "calls value 1 'Heart', a class this evaluation does not have" in err


def test_cgs_evaluate_names_predictions_without_a_table_by_the_references_and_says_so(tmp_path, capsys):
    """Predictions without a class table beside references with one: the references' table was
    never read, raw ids were scored under class_N names, and nothing said so. Now the references'
    table names the classes, and a note says the predictions' ids are read by it."""
    from cgs_engine.classes.files import write_class_file
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Volume

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, :4], labels[:, 4:6] = 3, 5
    write_volume(Volume(labels, kind="labels"), pred / "case.nii.gz")
    write_volume(Volume(labels, kind="labels"), gt / "case.nii.gz")
    entries = [{"id": 3, "name": "Parotid_L"}, {"id": 5, "name": "Brainstem"}]
    write_class_file(gt / "case_classes.json", entries, gt / "case.nii.gz")
    out_json = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--json", str(out_json)]) == 0
    captured = capsys.readouterr()
    assert "the predictions have no class table" in captured.err and "case_classes.json" in captured.err
    scored = json.dumps(json.loads(out_json.read_text()))
    assert "Parotid_L" in scored and "Brainstem" in scored and "class_3" not in scored


def _values_named(data, key):
    if isinstance(data, dict):
        for name, value in data.items():
            if name == key and not isinstance(value, (dict, list)):
                yield value
            else:
                yield from _values_named(value, key)
    elif isinstance(data, list):
        for item in data:
            yield from _values_named(item, key)


def test_cgs_evaluate_by_organ_edges(tmp_path, capsys):
    """The same organ under its TG-263 name, a reference numbering its organs past the predictions'
    highest id, and --classes (the user names the ids as they are: nothing renumbered)."""
    from cgs_engine.classes.files import write_class_file
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Volume

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, :4] = 1
    labels[:, 4:6] = 2
    write_volume(Volume(labels, kind="labels"), pred / "case.nii.gz")
    write_class_file(
        pred / "case_classes.json",
        [{"id": 1, "name": "LeftParotid"}, {"id": 2, "name": "Brainstem"}],
        pred / "case.nii.gz",
    )
    reference = np.where(labels == 1, 3, np.where(labels == 2, 5, 0)).astype(np.uint8)
    write_volume(Volume(reference, kind="labels"), gt / "case.nii.gz")
    entries = [{"id": i, "name": f"Other{i}"} for i in (1, 2, 4)]
    entries += [{"id": 3, "name": "Parotid_L"}, {"id": 5, "name": "Brainstem"}]
    write_class_file(gt / "case_classes.json", entries, gt / "case.nii.gz")
    out_json = tmp_path / "scores.json"
    folders = ["--pred", str(pred), "--gt", str(gt)]
    assert main(["evaluate", *folders, "--json", str(out_json)]) == 0
    assert "Parotid_L 3 -> 1, Brainstem 5 -> 2" in capsys.readouterr().out
    dice = [value for value in _values_named(json.loads(out_json.read_text()), "dice") if value is not None]
    assert dice and all(value == pytest.approx(1.0) for value in dice)

    # --classes names the classes scored: maps with class files are renumbered onto them
    assert (
        main(
            ["evaluate", *folders, "--classes", "Parotid_L,Brainstem", "--json", str(out_json), "--overwrite"]
        )
        == 0
    )
    assert "Parotid_L 3 -> 1, Brainstem 5 -> 2" in capsys.readouterr().out
    dice = [value for value in _values_named(json.loads(out_json.read_text()), "dice") if value is not None]
    assert dice and all(value == pytest.approx(1.0) for value in dice)
    assert main(["evaluate", *folders, "--classes", "a,b"]) == 2
    assert (
        "calls value 1 'LeftParotid', a class this evaluation does not have (a, b)" in capsys.readouterr().err
    )


def test_cgs_evaluate_scores_maps_of_a_class_table_with_gaps(tmp_path, capsys):
    """Ids 1, 2 and 5 (4 retired): maps imported through such a table could not be scored at all."""
    from cgs_engine.classes.files import write_class_file
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Volume

    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        labels = np.zeros((4, 8, 8), np.uint8)
        labels[:, :3], labels[:, 3:5], labels[:, 6:] = 1, 2, 5
        write_volume(Volume(labels, kind="labels"), tmp_path / folder / "case.nii.gz")
        entries = [{"id": 1, "name": "Liver"}, {"id": 2, "name": "Spleen"}, {"id": 5, "name": "Kidney_L"}]
        write_class_file(tmp_path / folder / "case_classes.json", entries, tmp_path / folder / "case.nii.gz")
    out_json = tmp_path / "scores.json"
    folders = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    assert main(["evaluate", *folders, "--json", str(out_json)]) == 0
    text = json.dumps(json.loads(out_json.read_text()))
    assert "Kidney_L" in text and "class_4" not in text
    # an id the maps hold that the table does not name is still refused, naming it
    labels[0, 0, 0] = 3
    write_volume(Volume(labels, kind="labels"), tmp_path / "gt" / "case.nii.gz", overwrite=True)
    assert main(["evaluate", *folders]) == 2
    assert "does not name the value 3" in capsys.readouterr().err


def test_cgs_evaluate_refuses_a_map_given_as_its_own_reference(tmp_path, capsys):
    """--pred and --gt naming one folder (tab completion) scored every map against itself: Dice
    1.0000, HD95 0, exit 0."""
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Volume

    (tmp_path / "pred").mkdir()
    labels = np.zeros((4, 8, 8), np.uint8)
    labels[:, :4] = 1
    write_volume(Volume(labels, kind="labels"), tmp_path / "pred" / "case.nii.gz")
    (tmp_path / "same").symlink_to(tmp_path / "pred")
    for gt in ("pred", "same"):
        assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / gt)]) == 2
        err = capsys.readouterr().err.strip()
        assert "is both the prediction and the reference" in err and "\n" not in err
