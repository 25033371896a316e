"""`cgs train` ends by calibrating its model's likely-wrong map on the store's labeled and val volumes,
and calibration leaves out volumes whose labels are only partly reviewed."""

from __future__ import annotations

import json

import numpy as np
from review_model import GEOMETRY, NAMES, checkpoint, image
from synthetic import make_store
from test_train_loop import TINY

from cgs_engine.checkpoint import save_checkpoint
from cgs_engine.cli.main import main
from cgs_engine.normalize import Normalization
from cgs_engine.review.error_model import error_model_for, load_error_model, sidecar_path
from cgs_engine.store import SliceStore


def _train(tmp_path, store, *extra) -> int:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "val_every": 2, "iterations": 2}))
    return main(["train", str(store), "-o", str(tmp_path / "run"), "--config", str(config), *extra])


def test_train_writes_the_error_model_of_its_model(tmp_path, capsys):
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    assert _train(tmp_path, store) == 0
    out = capsys.readouterr().out
    best = tmp_path / "run" / "best.pt"
    assert f"error model: {sidecar_path(best)}" in out
    fitted = load_error_model(sidecar_path(best))
    assert fitted.fitted_on["cases"] == ["labeled_0", "labeled_1", "val_0"]
    assert fitted.fitted_on["validation_cases"] == ["val_0"]
    assert error_model_for(best, fitted.class_names).calibrated  # what every prediction with it reads


def test_train_without_the_error_model_when_told(tmp_path, capsys):
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    assert _train(tmp_path, store, "--no-error-model") == 0
    assert "error model" not in capsys.readouterr().out
    assert not list((tmp_path / "run").glob("*.review.json"))


def test_a_resumed_run_remembers_no_error_model(tmp_path, capsys):
    """It was not recorded: a run started with --no-error-model, killed and resumed, fitted one
    after all (minutes and gigabytes for an untrained model)."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    assert _train(tmp_path, store, "--no-error-model") == 0
    capsys.readouterr()
    assert main(["train", str(store), "-o", str(tmp_path / "run"), "--resume"]) == 0
    assert "not fitted (the run was started with --no-error-model)" in capsys.readouterr().out
    assert not list((tmp_path / "run").glob("*.review.json"))


def test_a_fresh_run_in_a_folder_left_by_an_abandoned_start_fits_its_error_model(tmp_path, capsys):
    """The marker of an earlier start with --no-error-model must not outlive it."""
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".no-error-model").touch()  # an earlier start, killed before its first saved state
    assert _train(tmp_path, store) == 0
    assert not (run / ".no-error-model").exists()
    capsys.readouterr()
    assert main(["train", str(store), "-o", str(run), "--resume"]) == 0
    assert "up to date" in capsys.readouterr().out  # fitted by the run, kept by its resume


def test_a_finished_run_resumed_again_keeps_its_error_model(tmp_path, capsys):
    store = make_store(tmp_path / "store.h5", labeled=2, unlabeled=1, val=1)
    assert _train(tmp_path, store) == 0
    fitted = sidecar_path(tmp_path / "run" / "best.pt")
    before = fitted.read_bytes()
    capsys.readouterr()
    assert main(["train", str(store), "-o", str(tmp_path / "run"), "--resume"]) == 0
    assert f"error model: {fitted} is up to date" in capsys.readouterr().out
    assert fitted.read_bytes() == before


def test_train_succeeds_when_its_store_cannot_calibrate(tmp_path, capsys):
    store = make_store(tmp_path / "store.h5", labeled=1, unlabeled=1, val=0)
    assert _train(tmp_path, store) == 0  # the training succeeded: calibration is best effort
    out = capsys.readouterr().out
    assert "error model: not fitted" in out and "calibrating needs at least 2" in out
    assert "cgs review --fit-error-model" in out
    assert not list((tmp_path / "run").glob("*.review.json"))


def test_partly_reviewed_volumes_do_not_calibrate(tmp_path, capsys):
    model = tmp_path / "model.pt"
    save_checkpoint(checkpoint(), model)
    prior = tmp_path / "prior.h5"
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[2:6, 8:20, 8:20] = 1
    labels[3:5, 22:26, 10:14] = 2
    labels[3:5, 4:7, 24:28] = 3
    partly = np.zeros(labels.shape, bool)
    partly[3] = True  # one corrected slice; the rest was never looked at
    with SliceStore.create(prior, NAMES, Normalization(mode="identity")) as target:
        for name, review in (("full0", None), ("full1", np.ones(labels.shape, bool)), ("some", partly)):
            target.add_volume(name, image(), labels, review, GEOMETRY, split="labeled")
    assert main(["review", "--fit-error-model", str(model), "--prior-data", str(prior), "--l2", "0.001"]) == 0
    assert "some: skipped (only partly reviewed" in capsys.readouterr().out
    assert load_error_model(sidecar_path(model)).fitted_on["cases"] == ["full0", "full1"]


def test_volumes_stored_without_their_spacing_leave_the_size_term_out(tmp_path, capsys):
    """`cgs import acdc` stores 1 mm placeholder voxels (spacing unknown): typical organ volumes
    fitted there were voxel counts, read against millilitres of the true spacing at prediction (an
    ACDC left ventricle 2.9 log-units "too small"), shifting P(wrong) and the queue in silence."""
    model = tmp_path / "model.pt"
    save_checkpoint(checkpoint(), model)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[2:6, 8:20, 8:20] = 1
    labels[3:5, 22:26, 10:14] = 2
    labels[3:5, 4:7, 24:28] = 3
    fitted = {}
    for known in (True, False):
        prior = tmp_path / f"prior_{known}.h5"
        with SliceStore.create(prior, NAMES, Normalization(mode="identity")) as target:
            for name in ("a", "b"):
                target.add_volume(name, image(), labels, None, GEOMETRY if known else None, split="labeled")
        argv = ["review", "--fit-error-model", str(model), "--prior-data", str(prior), "--l2", "0.001"]
        assert main([*argv, "--overwrite"]) == 0
        fitted[known] = load_error_model(sidecar_path(model))
    capsys.readouterr()
    assert fitted[True].typical_ml and fitted[False].typical_ml == {}
    # the widths of the evidence: the cases' (canonical z, y, x) spacing where known, else their voxels
    assert fitted[True].reference_spacing_zyx == tuple(GEOMETRY.spacing[::-1])
    assert fitted[False].reference_spacing_zyx is None
