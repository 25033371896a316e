"""The default model that ships: it loads, its metadata fits its classes, it segments the sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.infer import Predictor
from cgs_engine.io import read_volume
from cgs_engine.train.config import TrainConfig
from napari_cgs._sample_data import BUNDLED_MODEL, SAMPLE_CLASS_NAMES, SAMPLE_CT, SAMPLE_LABELS

ROOT = Path(__file__).resolve().parents[2]
SMALLEST = ("Esophagus", "RightParotid", "LeftParotid")
# pt_222 measured at 0.55 (Esophagus) to 0.89 (Mandible); the floor leaves room for CPU/GPU rounding
ORGAN_DICE_FLOOR = 0.5


@pytest.fixture(scope="module")
def checkpoint():
    return load_checkpoint(BUNDLED_MODEL)


def test_bundled_model_is_small_and_describes_its_classes(checkpoint):
    assert BUNDLED_MODEL.stat().st_size < 6 * 2**20  # half-precision weights
    assert tuple(checkpoint.class_names) == SAMPLE_CLASS_NAMES
    assert len(checkpoint.class_colors) == len(SAMPLE_CLASS_NAMES)
    assert checkpoint.normalization["mode"] == "ct-window"
    assert checkpoint.method == "cgs" and checkpoint.data_fingerprint


def test_bundled_model_knows_its_scope_and_its_sample_lies_inside(checkpoint):
    from cgs_engine.scope import check_scope

    scope = checkpoint.scope  # scripts/record_default_scope.py, from its six training CTs
    assert scope["modality"] == "CT" and scope["body_region"] == "head and neck" and scope["volumes"] == 6
    assert scope["body_slices"] and checkpoint.to_payload()["weights_sha256"]
    assert check_scope(read_volume(SAMPLE_CT), scope) == []


def test_bundled_model_records_its_recipe_and_its_win_over_supervised(checkpoint):
    metrics = checkpoint.metrics
    recipe = metrics["recipe"]
    assert recipe["cgs_config"]["method"] == "cgs" and recipe["cgs_config"]["seed"] == 0
    assert recipe["settings"]["gate_tau"] == recipe["cgs_config"]["gate_tau"] == 0.95
    val = metrics["openkbp_val"]
    organs = list(SAMPLE_CLASS_NAMES[1:])
    for method in ("cgs", "supervised"):
        assert list(val[method]["dice"]) == organs and list(val[method]["hd95_mm"]) == organs
    assert val["cgs"]["mean_dice"] > val["supervised"]["mean_dice"]
    for organ in SMALLEST:
        assert val["cgs"]["dice"][organ] > val["supervised"]["dice"][organ], organ


def test_bundled_model_finds_every_organ_of_the_sample(checkpoint):
    prediction = Predictor(checkpoint, device="cpu").predict(read_volume(SAMPLE_CT), maps=False)
    truth = read_volume(SAMPLE_LABELS).array
    assert prediction.labels.geometry.is_close(read_volume(SAMPLE_CT).geometry)
    for class_id, organ in enumerate(SAMPLE_CLASS_NAMES[1:], start=1):
        pred, gt = prediction.labels.array == class_id, truth == class_id
        dice = 2 * np.count_nonzero(pred & gt) / (np.count_nonzero(pred) + np.count_nonzero(gt))
        assert dice > ORGAN_DICE_FLOOR, f"{organ}: Dice {dice:.3f}"


def test_committed_recipe_config_is_what_the_bundled_model_was_trained_with(checkpoint):
    recipe = json.loads((ROOT / "scripts" / "default_model_config.json").read_text())
    TrainConfig.from_dict(recipe)  # `cgs train --config` accepts it
    trained = checkpoint.train_config
    assert {key: trained[key] for key in recipe} == recipe


def test_bundled_model_ships_its_prior_data_its_six_training_patients(checkpoint):
    from cgs_engine.normalize import Normalization
    from cgs_engine.project.prior import find_model_prior

    folder = find_model_prior(BUNDLED_MODEL)
    assert folder == BUNDLED_MODEL.with_name("default.prior")
    manifest = json.loads((folder / "prior.json").read_text())
    assert manifest["class_names"] == checkpoint.class_names
    assert "Babier" in manifest["citation"] and "MIT" in (folder / "NOTICE.md").read_text()
    # the default-model recipe trains on OpenKBP's labeled_train split (scripts/train_default_model.py)
    trained_on = ["pt_168", "pt_172", "pt_182", "pt_187", "pt_200", "pt_201"]
    assert [c["name"] for c in manifest["cases"]] == trained_on
    assert {c["split"] for c in manifest["cases"]} == {"train"}
    normalization = Normalization.from_dict(checkpoint.normalization)
    for case in manifest["cases"]:
        image = read_volume(folder / case["image"])
        labels = read_volume(folder / case["labels"], kind="labels")
        assert image.shape == labels.shape == (128, 128, 128)
        assert labels.geometry.is_close(image.geometry)
        assert set(np.unique(labels.array)) == set(range(len(checkpoint.class_names)))
        assert normalization.apply(image.array[60:62]).min() >= 0.0
