"""Error evidence, the calibrated error model and the per-organ likely-wrong figures (synthetic)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgs_engine.evaluate.ranking import average_precision
from cgs_engine.review.error_features import REACH, ZONES, NetworkMaps, collect_evidence
from cgs_engine.review.error_model import (
    UNCALIBRATED,
    ErrorModelError,
    assign_to,
    error_model_for,
    fit_error_model,
    load_error_model,
    save_error_model,
    sidecar_path,
)
from cgs_engine.review.likely_wrong import estimate_errors, organ_lines

NAMES = ["background", "ball", "bar"]


def _maps(labels: np.ndarray, rng: np.random.Generator, image: np.ndarray | None = None) -> NetworkMaps:
    def noise():
        return rng.integers(0, 256, labels.shape).astype(np.uint8)

    return NetworkMaps(
        labels=labels,
        confidence=noise(),
        background=noise(),
        margin=noise(),
        disagreement=noise(),
        generalist_vs_specialists=noise(),
        specialist_maps={1: noise(), 2: noise()},
        image=rng.normal(0.5, 0.05, labels.shape).astype(np.float32) if image is None else image,
    )


def _ball_and_bar(shape=(20, 30, 30)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels[(z - 10) ** 2 + (y - 10) ** 2 + (x - 10) ** 2 <= 25] = 1
    labels[8:12, 20:24, 5:25] = 2
    return labels


def test_zones_nearest_organ_and_distance():
    labels = _ball_and_bar()
    evidence = collect_evidence(_maps(labels, np.random.default_rng(0)), (2.0, 1.0, 1.0))
    zone, near = evidence.to_volume(evidence.zone + 1, np.int8), evidence.to_volume(evidence.near, np.int64)
    steps = evidence.to_volume(evidence.columns["distance_out"])
    # the ball's centre is deep inside, its surface voxel on the border layer, one step out edge_out
    assert zone[10, 10, 10] - 1 == ZONES.index("interior")
    assert zone[10, 10, 15] - 1 == ZONES.index("edge_in") and near[10, 10, 15] == 1
    assert zone[10, 10, 16] - 1 == ZONES.index("edge_out") and steps[10, 10, 16] == 1
    assert zone[10, 10, 18] - 1 == ZONES.index("outside") and steps[10, 10, 18] == 3 and near[10, 10, 18] == 1
    assert near[10, 18, 15] == 2  # next to the bar
    # candidates reach REACH steps out, no further
    assert evidence.to_volume(np.ones(evidence.count), bool)[10, 10, 15 + REACH]
    assert not evidence.to_volume(np.ones(evidence.count), bool)[10, 10, 16 + REACH]
    assert evidence.organ_ml[1] == pytest.approx((labels == 1).sum() * 2.0 / 1000)


def test_shape_size_and_intensity_columns():
    labels = _ball_and_bar()
    dent = labels.copy()
    dent[10, 10, 14:16] = 0  # two voxels cut out of the ball's surface: a dent
    image = np.where(labels == 1, 0.8, 0.2).astype(np.float32)
    evidence = collect_evidence(_maps(dent, np.random.default_rng(1), image), (1.0, 1.0, 1.0), {1: 1.0})
    shape = evidence.to_volume(evidence.columns["shape_1"])
    # the dent's deeper voxel is mostly surrounded by the organ, a voxel two steps outside is not
    assert shape[10, 10, 14] > 0.5 and shape[10, 10, 17] < 0.2
    size = evidence.to_volume(evidence.columns["size"])
    assert size[10, 10, 10] == pytest.approx(np.log((dent == 1).sum() / 1000.0))
    assert size[10, 21, 10] == 0.0  # no typical volume for the bar: no size term
    looks = evidence.to_volume(evidence.columns["looks_like_organ"])
    off = evidence.to_volume(evidence.columns["intensity_off"])
    assert looks[10, 10, 15] == 1.0 and looks[10, 10, 18] == 0.0  # the cut-out voxel looks like the ball
    assert off[10, 10, 15] < 1.0 < off[10, 10, 18]


def test_no_organ_predicted_means_no_candidates():
    labels = np.zeros((4, 8, 8), np.uint8)
    evidence = collect_evidence(_maps(labels, np.random.default_rng(2)), (1.0, 1.0, 1.0))
    assert evidence.count == 0 and not evidence.to_volume(np.zeros(0)).any()
    estimate = estimate_errors(_maps(labels, np.random.default_rng(2)), (1.0, 1.0, 1.0), UNCALIBRATED)
    assert not estimate.map.any()


def test_bad_maps_are_refused():
    labels = _ball_and_bar()
    maps = _maps(labels, np.random.default_rng(3))
    with pytest.raises(ValueError, match="margin shape"):
        collect_evidence(NetworkMaps(**{**maps.__dict__, "margin": maps.margin[:5]}), (1, 1, 1))
    with pytest.raises(ValueError, match="uint8"):
        collect_evidence(
            NetworkMaps(**{**maps.__dict__, "background": maps.background.astype(np.int32)}), (1, 1, 1)
        )


def _training_set(seed: int):
    """Evidence where the wrong voxels are the edge_out voxels the generalist doubts."""
    rng = np.random.default_rng(seed)
    labels = _ball_and_bar()
    maps = _maps(labels, rng)
    evidence = collect_evidence(maps, (1.0, 1.0, 1.0))
    doubt = 1.0 - evidence.columns["margin"]
    wrong = (evidence.zone == ZONES.index("edge_out")) & (doubt > 0.6)
    return evidence, wrong, maps


def test_a_fitted_model_finds_errors_the_evidence_explains(tmp_path):
    evidences, wrongs = zip(*[_training_set(seed)[:2] for seed in (0, 1)], strict=True)
    model = fit_error_model(evidences, wrongs, NAMES, {1: 0.5, 2: 0.3}, fitted_on={"cases": ["a", "b"]})
    held_out, wrong, _ = _training_set(5)
    probabilities = model.probabilities(held_out)
    assert average_precision(probabilities, wrong) > 0.9
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    # saved beside a checkpoint it is found again, for the same classes only
    checkpoint = tmp_path / "model.pt"
    assert sidecar_path(checkpoint) == tmp_path / "model.review.json"
    save_error_model(model, sidecar_path(checkpoint))
    found = error_model_for(checkpoint, NAMES)
    assert found.calibrated and found.fitted_on["cases"] == ["a", "b"]
    assert np.allclose(found.probabilities(held_out), probabilities, atol=1e-6)
    assert error_model_for(checkpoint, ["background", "other", "bar"]) is UNCALIBRATED
    assert error_model_for(tmp_path / "elsewhere.pt", NAMES) is UNCALIBRATED
    assert error_model_for(None, NAMES) is UNCALIBRATED


def test_an_error_model_of_other_weights_is_refused_as_stale(tmp_path, caplog):
    """A model.pt overwritten by another training keeps the old model.review.json beside it."""
    evidences, wrongs = zip(*[_training_set(seed)[:2] for seed in (0, 1)], strict=True)
    fitted_on = {"cases": ["a", "b"], "weights_sha256": "aaaa"}
    model = fit_error_model(evidences, wrongs, NAMES, {1: 0.5, 2: 0.3}, fitted_on=fitted_on)
    checkpoint = tmp_path / "model.pt"
    save_error_model(model, sidecar_path(checkpoint))
    assert error_model_for(checkpoint, NAMES, "aaaa").calibrated  # the weights it was fitted on
    with caplog.at_level("WARNING"):
        assert error_model_for(checkpoint, NAMES, "bbbb") is UNCALIBRATED
    assert "model.review.json: it was fitted on other weights than model.pt (stale)" in caplog.text
    assert "--fit-error-model" in caplog.text and len(caplog.records) == 1
    # handed down on purpose (a retrained version inheriting its parent's): accepted for those
    # weights only, and the record of what it was fitted on is kept
    handed = assign_to(model, "bbbb", "inherited from v0001")
    save_error_model(handed, sidecar_path(checkpoint), overwrite=True)
    found = error_model_for(checkpoint, NAMES, "bbbb")
    assert found.calibrated and found.fitted_on["weights_sha256"] == "aaaa"
    assert error_model_for(checkpoint, NAMES, "cccc") is UNCALIBRATED
    # a file from before digests were recorded cannot tell, and is used
    save_error_model(fit_error_model(evidences, wrongs, NAMES, {}), sidecar_path(checkpoint), overwrite=True)
    assert error_model_for(checkpoint, NAMES, "cccc").calibrated


def test_a_predictor_checks_the_error_model_against_its_weights(tmp_path, caplog):
    from review_model import checkpoint as tiny_checkpoint

    from cgs_engine.checkpoint import save_checkpoint, weights_digest
    from cgs_engine.infer import Predictor

    model_file, tiny = tmp_path / "best.pt", tiny_checkpoint()
    save_checkpoint(tiny, model_file)
    evidences, wrongs = zip(*[_training_set(seed)[:2] for seed in (0, 1)], strict=True)
    fitted_on = {"weights_sha256": weights_digest(tiny.state_dict)}
    save_error_model(
        fit_error_model(evidences, wrongs, tiny.class_names, {}, fitted_on=fitted_on),
        sidecar_path(model_file),
    )
    assert Predictor(model_file).error_model.calibrated
    # the same file name, other weights (a resumed training wrote a new best.pt)
    tiny.state_dict = {k: v * 1.01 if v.is_floating_point() else v for k, v in tiny.state_dict.items()}
    save_checkpoint(tiny, model_file)
    with caplog.at_level("WARNING"):
        assert Predictor(model_file).error_model is UNCALIBRATED
    assert "best.review.json: it was fitted on other weights than best.pt (stale)" in caplog.text


def test_training_data_without_errors_is_refused():
    evidence, wrong, _ = _training_set(0)
    with pytest.raises(ErrorModelError, match="no errors"):
        fit_error_model([evidence], [np.zeros_like(wrong)], NAMES, {})


def test_a_case_where_no_organ_was_predicted_adds_no_rows():
    """An untrained model (the end of a tiny `cgs train`) predicts nothing on some cases."""
    nothing = collect_evidence(_maps(np.zeros((4, 8, 8), np.uint8), np.random.default_rng(2)), (1, 1, 1))
    evidence, wrong, _ = _training_set(0)
    model = fit_error_model([evidence, nothing], [wrong, np.zeros(0, bool)], NAMES, {})
    assert model.probabilities(nothing).shape == (0,) and UNCALIBRATED.probabilities(nothing).shape == (0,)
    with pytest.raises(ErrorModelError, match="predicted no organ"):
        fit_error_model([nothing, nothing], [np.zeros(0, bool)] * 2, NAMES, {})


def test_damaged_error_model_files(tmp_path):
    evidence, wrong, _ = _training_set(0)
    model = fit_error_model([evidence], [wrong], NAMES, {})
    path = save_error_model(model, tmp_path / "m.review.json")
    data = json.loads(path.read_text())
    for change, message in (
        ({"format": "other"}, "not a napari-cgs error model"),
        ({"weights": data["weights"][:-1]}, "columns do not match"),
        ({"bias": "x"}, "damaged error model"),
        ({"scale": [0.0] * len(data["scale"])}, "non-positive"),
    ):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(ErrorModelError, match=message):
            load_error_model(path)
        assert error_model_for(tmp_path / "m.pt", NAMES) is UNCALIBRATED  # the review still works
    path.write_text("{not json")
    with pytest.raises(ErrorModelError, match="not a readable error model"):
        load_error_model(path)


def test_organ_figures_add_up_to_the_probabilities():
    evidence, wrong, maps = _training_set(0)
    model = fit_error_model([evidence], [wrong], NAMES, {1: 0.5, 2: 0.3})
    estimate = estimate_errors(maps, (1.0, 1.0, 1.0), model)
    probabilities = model.probabilities(collect_evidence(maps, (1.0, 1.0, 1.0), model.typical_ml))
    assert estimate.calibrated
    assert estimate.likely_wrong_ml() == pytest.approx(probabilities.sum() / 1000, rel=1e-4)
    ball = estimate.organs[1]
    assert ball.predicted_ml == pytest.approx((maps.labels == 1).sum() / 1000)
    assert 0.0 < ball.estimated_dice < 1.0 and 0.0 < ball.likely_missed_ml <= ball.likely_wrong_ml
    assert estimate.scan_score() == pytest.approx(
        1 - np.mean([o.estimated_dice for o in estimate.organs.values()])
    )
    lines = organ_lines(estimate, NAMES)
    assert len(lines) == 2 and "likely wrong" in lines[0] and "est. Dice" in lines[0]
    # the uint8 map holds the probabilities
    assert (
        np.abs(estimate.map.astype(float) / 255 - evidence_volume(maps, probabilities)).max()
        <= 0.5 / 255 + 1e-6
    )


def evidence_volume(maps, probabilities):
    return collect_evidence(maps, (1.0, 1.0, 1.0)).to_volume(probabilities)


def test_the_fallback_is_a_score_not_a_volume():
    _, _, maps = _training_set(0)
    estimate = estimate_errors(maps, (1.0, 1.0, 1.0), UNCALIBRATED)
    assert not estimate.calibrated and organ_lines(estimate, NAMES) == []
    assert estimate.map.max() > 0 and not np.isnan(estimate.scan_score())


def test_l2_choice_holds_out_each_case_or_blocks_of_neighbours():
    from cgs_engine.review.calibrate import MAX_L2_FOLDS, held_out_groups

    assert [list(g) for g in held_out_groups(4)] == [[0], [1], [2], [3]]  # few cases: one by one
    blocks = held_out_groups(26)
    assert len(blocks) == MAX_L2_FOLDS
    assert sorted(i for block in blocks for i in block) == list(range(26))  # each case held out once
    assert all(list(b) == list(range(b.start, b.stop)) and len(b) in (4, 5) for b in blocks)
    assert held_out_groups(2 * MAX_L2_FOLDS)[0] == range(0, 2)  # a patient's two frames stay together


def test_rows_over_the_cap_are_a_uniform_sample_the_same_each_time():
    from cgs_engine.review.calibrate import sampled_rows

    band = np.zeros(1000, bool)
    band[::2] = True  # 500 rows
    assert sampled_rows(band, "a", most=600) is band  # under the cap: every row
    kept = sampled_rows(band, "a", most=100)
    assert kept.sum() == 100 and not (kept & ~band).any()
    np.testing.assert_array_equal(kept, sampled_rows(band, "a", most=100))  # reproducible
    assert not np.array_equal(kept, sampled_rows(band, "b", most=100))  # but not one pattern for all
    rows = np.flatnonzero(kept)
    assert rows.min() < 200 and rows.max() > 800  # spread over the band, not its first rows


def test_a_model_that_finds_organs_everywhere_is_calibrated_on_a_sample(tmp_path, monkeypatch):
    """A 4-iteration `cgs train` made every voxel a row: 13 minutes and 8 GB for its calibration."""
    from review_model import GEOMETRY, image
    from review_model import checkpoint as tiny_checkpoint

    from cgs_engine.checkpoint import save_checkpoint
    from cgs_engine.infer import Predictor
    from cgs_engine.review import calibrate
    from cgs_engine.volume import Volume

    save_checkpoint(tiny_checkpoint(), tmp_path / "best.pt")
    predictor = Predictor(tmp_path / "best.pt")
    volume, reference = Volume(image(), GEOMETRY), np.zeros(image().shape, np.uint8)
    whole = calibrate.calibration_case(predictor, "case", volume, reference, False)
    assert whole.wrong.size == whole.band_voxels > 300
    monkeypatch.setattr(calibrate, "MAX_ROWS_PER_CASE", 300)
    sampled = calibrate.calibration_case(predictor, "case", volume, reference, False)
    assert sampled.band_voxels == whole.band_voxels and sampled.wrong.size == sampled.evidence.count == 300
    assert all(column.shape == (300,) for column in sampled.evidence.columns.values())
