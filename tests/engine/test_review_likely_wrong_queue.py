"""The likely-wrong map through the predictor, the queue's regions, `cgs predict --maps` and `cgs review`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from review_model import GEOMETRY, NAMES, checkpoint, image

from cgs_engine.checkpoint import save_checkpoint
from cgs_engine.cli.main import main
from cgs_engine.infer import Predictor, write_prediction
from cgs_engine.io import read_volume, write_volume
from cgs_engine.review.error_features import ZONES, collect_evidence
from cgs_engine.review.error_model import fit_error_model, save_error_model, sidecar_path
from cgs_engine.review.prediction import analyse_prediction, network_maps
from cgs_engine.review.regions import Region, find_regions, find_regions_with_map
from cgs_engine.volume import Volume


@pytest.fixture
def volume() -> Volume:
    return Volume(image(), GEOMETRY)


def _calibrated(tmp_path, volume) -> tuple[str, Predictor]:
    """A checkpoint file with an error model fitted beside it (on this volume: a test, not a benchmark)."""
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint(), path)
    predictor = Predictor(path, precision="fp32")
    prediction = predictor.predict(volume, maps=True)
    assert prediction.labels.array.any(), "the test model must predict some organ"
    evidence = collect_evidence(network_maps(prediction, volume.array), (2.0, 1.0, 1.0))
    wrong = evidence.zone == ZONES.index("edge_out")
    save_error_model(fit_error_model([evidence], [wrong], NAMES, {1: 1.0}), sidecar_path(path))
    return str(path), Predictor(path, precision="fp32")


def test_predictions_with_maps_carry_the_evidence_and_an_error_estimate(volume):
    predictor = Predictor(checkpoint(), precision="fp32")
    prediction = predictor.predict(volume, maps=True)
    assert set(prediction.evidence) == {"background", "margin", "generalist_vs_specialists"}
    for layer in prediction.evidence.values():
        assert layer.array.dtype == np.uint8 and layer.shape == volume.shape and layer.geometry == GEOMETRY
    # background + margin never exceed 1 where background is the top class (the margin is top - second)
    assert prediction.errors is not None and not prediction.errors.calibrated  # nothing beside it
    assert prediction.errors.map.shape == volume.shape and prediction.errors.map.dtype == np.uint8
    bare = predictor.predict(volume, maps=False)
    assert bare.evidence == {} and bare.errors is None


def test_a_calibrated_model_beside_the_checkpoint_is_used_and_ranks_the_queue(tmp_path, volume):
    _, predictor = _calibrated(tmp_path, volume)
    assert predictor.error_model.calibrated
    prediction = predictor.predict(volume, maps=True)
    assert prediction.errors.calibrated and set(prediction.errors.organs) == {1, 2, 3}
    regions, component_map, profile = analyse_prediction(prediction)
    assert regions and all(r.source == "likely-wrong" for r in regions)
    masses = [r.mass for r in regions]
    assert masses == sorted(masses, reverse=True)
    first = regions[0]
    inside = component_map == first.id
    expected = prediction.errors.map[inside].astype(float).sum() / 255
    assert first.mass == pytest.approx(expected, rel=1e-6)
    assert first.likely_wrong_ml == pytest.approx(expected * 2.0 / 1000, rel=1e-6)
    assert profile is not None and len(profile) == volume.shape[0]


def test_likely_wrong_regions_rank_by_expected_wrong_volume():
    shape = (10, 20, 30)
    disagreement = np.zeros(shape, np.uint8)
    disagreement[1:3, 1:3, 1:3] = 255  # the heads' only disagreement: ignored with a likely-wrong map
    likely = np.zeros(shape, np.uint8)
    likely[5:7, 2:6, 2:6] = 255  # 32 voxels surely wrong: 32 expected
    likely[5:7, 10:18, 10:18] = 102  # 128 voxels at 0.4: 51 expected, ranks first
    likely[0, 15:19, 25:29] = 20  # below the threshold (0.1): no region
    regions, component_map = find_regions_with_map(disagreement, likely_wrong=likely, spacing_zyx=(2, 1, 1))
    assert [r.voxels for r in regions] == [128, 32]
    assert regions[0].mass == pytest.approx(128 * 102 / 255)
    assert regions[0].likely_wrong_ml == pytest.approx(128 * 102 / 255 * 2 / 1000)
    assert {r.source for r in regions} == {"likely-wrong"} and component_map[1, 1, 1] == 0
    assert [r.voxels for r in find_regions(disagreement, likely_wrong=likely, wrong_threshold=0.5)] == [32]
    with pytest.raises(ValueError, match="wrong_threshold"):
        find_regions(disagreement, likely_wrong=likely, wrong_threshold=0)
    with pytest.raises(ValueError, match="likely_wrong shape"):
        find_regions(disagreement, likely_wrong=likely[:5])
    # a region's dict round-trips; one saved before likely_wrong_ml existed still loads
    assert Region.from_dict(regions[0].to_dict()) == regions[0]
    old = {k: v for k, v in find_regions(disagreement)[0].to_dict().items() if k != "likely_wrong_ml"}
    assert Region.from_dict(old).likely_wrong_ml == 0.0


def test_cgs_predict_writes_the_map_and_cgs_review_ranks_by_it(tmp_path, volume, capsys):
    model, _ = _calibrated(tmp_path, volume)
    scan = tmp_path / "scan.nii.gz"
    write_volume(volume, scan)
    out = tmp_path / "out"
    assert main(["predict", model, str(scan), "-o", str(out), "--maps"]) == 0
    summary = json.loads((out / "scan_likely_wrong.json").read_text())
    assert summary["calibrated"] and set(summary["organs"]) == {"a", "b", "c"}
    assert (out / "scan_likely_wrong.nii.gz").is_file()
    capsys.readouterr()
    report = tmp_path / "queue.json"
    disagreement = str(out / "scan_disagreement.nii.gz")
    assert main(["review", disagreement, "--maps-dir", str(out), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "likely wrong per organ" in printed and "likely-wrong" in printed
    queue = json.loads(report.read_text())
    assert queue["ranked_by"] == "likely wrong volume" and queue["organs"]["a"]["predicted_ml"] >= 0
    # an uncalibrated estimate ranks voxels but claims no volumes: the queue is the disagreement's
    (out / "scan_likely_wrong.json").write_text(json.dumps({**summary, "calibrated": False}))
    assert main(["review", disagreement, "--maps-dir", str(out), "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())["ranked_by"] == "disagreement mass"
    assert "likely wrong per organ" not in capsys.readouterr().out


def _predicted_with_maps(tmp_path, volume):
    """`cgs predict --maps` of the volume with a calibrated model: (output folder, labels, the
    disagreement map's path)."""
    model, _ = _calibrated(tmp_path, volume)
    scan = tmp_path / "scan.nii.gz"
    write_volume(volume, scan)
    out = tmp_path / "out"
    assert main(["predict", model, str(scan), "-o", str(out), "--maps"]) == 0
    return out, read_volume(out / "scan_labels.nii.gz", kind="labels"), str(out / "scan_disagreement.nii.gz")


def test_review_of_edited_labels_marks_the_organs_whose_figures_are_the_predictions(tmp_path, volume, capsys):
    """`cgs review --labels edited.nii.gz` printed "likely wrong 1.6 mL of 1.1 mL" for an organ the
    edit had erased: the figures are the prediction's, and nothing said so."""
    out, predicted, disagreement = _predicted_with_maps(tmp_path, volume)
    present = [k for k in (1, 2, 3) if (predicted.array == k).any()]
    assert present
    capsys.readouterr()
    # the prediction's own labels: nothing marked
    assert main(["review", disagreement, "--labels", str(out / "scan_labels.nii.gz")]) == 0
    assert "differs from them" not in capsys.readouterr().out
    edited = tmp_path / "edited.nii.gz"
    write_volume(
        predicted.like(np.where(predicted.array == present[0], 0, predicted.array), "labels"), edited
    )
    report = tmp_path / "queue.json"
    assert main(["review", disagreement, "--labels", str(edited), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    name = "abc"[present[0] - 1]
    assert f"edited.nii.gz differs from them in {name}" in printed
    assert any(line.strip().startswith(name) and line.endswith(" *") for line in printed.splitlines())
    assert json.loads(report.read_text())["organs_changed_in_labels"] == [name]


def test_review_reads_labels_numbered_otherwise_by_their_class_table(tmp_path, volume, capsys):
    """The same organs renumbered (their class file says so) were read by id: the queue named other
    organs and marked organs as changed that were not, exit 0."""
    from cgs_engine.classes.files import write_class_file

    out, predicted, disagreement = _predicted_with_maps(tmp_path, volume)
    capsys.readouterr()
    report = tmp_path / "own.json"
    assert (
        main(["review", disagreement, "--labels", str(out / "scan_labels.nii.gz"), "--json", str(report)])
        == 0
    )
    own = json.loads(report.read_text())
    reversed_ids = np.where(predicted.array > 0, 4 - predicted.array, 0).astype(np.uint8)
    renumbered = tmp_path / "renumbered.nii.gz"
    write_volume(predicted.like(reversed_ids, "labels"), renumbered)
    write_class_file(
        tmp_path / "renumbered_classes.json",
        [
            {"id": 0, "name": "background"},
            {"id": 1, "name": "c"},
            {"id": 2, "name": "b"},
            {"id": 3, "name": "a"},
        ],
        renumbered,
    )
    report = tmp_path / "renumbered.json"
    assert main(["review", disagreement, "--labels", str(renumbered), "--json", str(report)]) == 0
    assert "ids renumbered by the class table renumbered_classes.json" in capsys.readouterr().out
    again = json.loads(report.read_text())
    assert again["regions"] == own["regions"] and again["organs_changed_in_labels"] == []


def test_export_names_the_likely_wrong_files(tmp_path, volume):
    prediction = Predictor(checkpoint(), precision="fp32").predict(volume)
    paths = write_prediction(prediction, tmp_path, "case", maps=True)
    assert paths["likely_wrong"].name == "case_likely_wrong.nii.gz"
    assert json.loads(paths["likely_wrong_json"].read_text())["calibrated"] is False
