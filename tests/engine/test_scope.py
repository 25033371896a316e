"""Training scope: modality guess, body cross-section, checkpoints, import -> train, real-data warnings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from synthetic import CLASS_NAMES, make_store

from cgs_engine.checkpoint import (
    CheckpointError,
    ModelCheckpoint,
    atomic_torch_save,
    load_checkpoint,
    save_checkpoint,
)
from cgs_engine.cli.main import main
from cgs_engine.io import read_volume, write_volume
from cgs_engine.model import build_model
from cgs_engine.normalize import Normalization
from cgs_engine.scope import (
    TrainingScope,
    check_scope,
    guess_modality,
    measure_scan,
    measure_scope,
)
from cgs_engine.store import SliceStore
from cgs_engine.store.importers import import_nifti
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.loop import train
from cgs_engine.train.session import model_config_for
from cgs_engine.volume import Geometry, Volume

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
TINY = dict(
    input_size=32,
    batch_labeled=2,
    batch_unlabeled=2,
    widths=(4, 8),
    dropouts=(0.0, 0.0),
    precision="fp32",
    seed=1,
)


def body_volume(
    radius_lr_mm: float,
    radius_ap_mm: float,
    spacing=(1.0, 1.0, 2.5),
    shape=(12, 256, 256),
    modality: str = "CT",
    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
) -> Volume:
    """An elliptic cylinder of body (LR along x, AP along y) in air, with a bony core for CT."""
    rng = np.random.default_rng(0)
    sx, sy, _ = spacing
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    x_mm, y_mm = (xx - (shape[2] - 1) / 2) * sx, (yy - (shape[1] - 1) / 2) * sy
    body = (x_mm / radius_lr_mm) ** 2 + (y_mm / radius_ap_mm) ** 2 <= 1.0
    bone = x_mm**2 + y_mm**2 <= 15.0**2
    if modality == "CT":
        image = np.where(body, 40.0, -1000.0) + np.where(bone, 660.0, 0.0)
        noise = 10.0
    else:  # MR: non-negative scanner units, a dim noisy background
        image = np.where(body, 300.0, 5.0)
        noise = 3.0
    array = image[None] + rng.normal(0.0, noise, (shape[0], *image.shape))
    if modality != "CT":
        array = np.abs(array)
    return Volume(array.astype(np.float32), Geometry(spacing=spacing, direction=direction))


# ------------------------------------------------------------------------- measurement
def test_modality_guess_ct_and_mr():
    assert measure_scan(body_volume(100, 100)).modality == "CT"
    assert measure_scan(body_volume(100, 100, modality="MR")).modality == "MR"
    assert guess_modality(np.full(1000, -1000.0)) == "CT"
    soft_tissue_crop = np.r_[np.full(900, 40.0), np.full(100, -100.0)]  # no air, but fat in HU
    assert guess_modality(soft_tissue_crop) == "CT"
    assert guess_modality(np.r_[np.zeros(10), np.linspace(0, 2000, 990)]) == "MR"


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_body_area_of_a_known_disc(modality):
    scan = measure_scan(body_volume(100, 100, modality=modality))
    assert scan.areas_cm2.size == 12
    assert scan.median_area_cm2 == pytest.approx(math.pi * 10.0**2, rel=0.03)  # r = 10 cm
    assert np.median(scan.width_to_depth) == pytest.approx(1.0, abs=0.03)


def test_body_area_and_shape_on_anisotropic_spacing():
    scan = measure_scan(body_volume(150, 100, spacing=(0.8, 1.25, 3.0), shape=(6, 200, 400)))
    assert scan.median_area_cm2 == pytest.approx(math.pi * 15.0 * 10.0, rel=0.03)
    assert np.median(scan.width_to_depth) == pytest.approx(1.5, rel=0.04)


def test_measurement_follows_the_direction_not_the_array_order():
    axial = body_volume(150, 100, spacing=(1.0, 1.2, 2.5), shape=(8, 200, 320))
    # the same body stored coronally: array [y, z, x], ITK axes x, z, y
    coronal = Volume(
        np.ascontiguousarray(np.transpose(axial.array, (1, 0, 2))),
        Geometry(spacing=(1.0, 2.5, 1.2), direction=(1, 0, 0, 0, 0, 1, 0, 1, 0)),
    )
    flipped = Volume(axial.array, Geometry(spacing=(1.0, 1.2, 2.5), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)))
    reference = measure_scan(axial)
    for other in (coronal, flipped):
        scan = measure_scan(other)
        np.testing.assert_allclose(scan.areas_cm2, reference.areas_cm2, rtol=1e-6)
        np.testing.assert_allclose(scan.width_to_depth, reference.width_to_depth, rtol=1e-6)


def test_scope_is_plain_json_and_check_warns_only_outside_it():
    trained = [body_volume(r, r * 1.2) for r in (80, 95, 110)]
    scope = measure_scope(trained, body_region="test region")
    data = scope.to_dict()
    assert json.loads(json.dumps(data)) == data and TrainingScope.from_dict(data) == scope
    assert data["modality"] == "CT" and data["body_region"] == "test region" and data["volumes"] == 3
    assert data["spacing_mm"] == {"min": [1.0, 1.0, 2.5], "max": [1.0, 1.0, 2.5]}
    assert set(data["intensity"]) == {"unit", "body_p1", "body_p50", "body_p99"}
    assert set(data["body_area_cm2"]) == set(data["body_width_to_depth"]) == {"p10", "p50", "p90"}
    assert check_scope(body_volume(100, 115), data) == []
    assert check_scope(body_volume(100, 115), scope) == []
    wide = check_scope(body_volume(240, 110, shape=(6, 256, 512)), data)
    assert len(wide) == 1 and "likely outside the model's body region" in wide[0]
    assert "test region" in wide[0] and "\n" not in wide[0]
    (mr,) = check_scope(body_volume(100, 115, modality="MR"), data)
    assert mr.startswith("this scan looks like MR") and "trained on CT" in mr
    assert check_scope(body_volume(240, 110), {}) == [] and check_scope(body_volume(240, 110), None) == []


def test_check_warns_of_a_scan_without_a_body_or_of_a_far_too_small_field():
    """An 8 x 8 pixel, 37 mm patch of a neck CT came back with three organs labelled, and an image
    of air empty, both without a word (found by an audit)."""
    scope = measure_scope([body_volume(r, r * 1.2) for r in (80, 95, 110)]).to_dict()
    assert scope["field_mm"]["min"] == 256.0  # body_volume: 256 x 256 pixels of 1 mm
    (air,) = check_scope(
        Volume(np.full((4, 256, 256), -1000, np.int16), Geometry(spacing=(1.0, 1.0, 2.5))), scope
    )
    assert air.startswith("no body cross-section of 20 cm^2") and "\n" not in air
    patch = Volume(body_volume(100, 115).array[:, 100:180, 100:180].copy(), Geometry(spacing=(1.0, 1.0, 2.5)))
    (small,) = [line for line in check_scope(patch, scope) if "mm across" in line]  # (and "looks like MR")
    assert small.startswith("its slices are 80 mm across") and "256-256 mm" in small
    a_third = Volume(body_volume(100, 115).array[:, 40:216, 40:216].copy(), Geometry(spacing=(1.0, 1.0, 2.5)))
    assert not [line for line in check_scope(a_third, scope) if "mm across" in line]  # 176 mm: padded


# ------------------------------------------------------------------------- checkpoints
def _checkpoint(scope: dict | None = None) -> ModelCheckpoint:
    config = model_config_for(TrainConfig(**TINY), len(CLASS_NAMES))
    return ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=list(CLASS_NAMES),
        input_size=32,
        normalization=Normalization(mode="identity").to_dict(),
        scope=scope or {},
    )


def test_checkpoint_round_trip_of_the_scope_and_old_checkpoints_without_one(tmp_path):
    scope = measure_scope([body_volume(100, 100)], body_region="test region").to_dict()
    path = save_checkpoint(_checkpoint(scope), tmp_path / "model.pt", half=True)
    loaded = load_checkpoint(path)
    assert loaded.scope == scope and loaded.scope["modality"] == "CT"
    payload = torch.load(path, weights_only=True)
    del payload["scope"]  # as written before scopes existed; the weights checksum still holds
    atomic_torch_save(payload, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.scope == {} and check_scope(body_volume(100, 100, modality="MR"), old.scope) == []
    payload["scope"] = ["not", "a", "table"]
    atomic_torch_save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="training scope"):
        load_checkpoint(tmp_path / "bad.pt")


def _write(path: Path, volume: Volume) -> Path:
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.geometry.spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_import_records_the_raw_scope_and_training_copies_it(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir(), labels.mkdir()
    shape = (4, 48, 48)
    label = np.zeros(shape, np.uint8)
    label[:, 20:28, 20:28], label[:, 10:13, 10:13], label[:, 35:37, 35:37] = 1, 2, 3
    for name, radius in (("a", 70), ("b", 80)):
        volume = body_volume(radius, radius, spacing=(4.0, 4.0, 3.0), shape=shape)
        _write(images / f"{name}.nii.gz", volume)
        _write(labels / f"{name}.nii.gz", volume.like(label, "labels"))
    unlabeled = _write(tmp_path / "u.nii.gz", body_volume(75, 75, spacing=(4.0, 4.0, 3.0), shape=shape))
    store_path = import_nifti(
        sorted(images.iterdir()),
        sorted(labels.iterdir()),
        [unlabeled],
        tmp_path / "store.h5",
        class_names=CLASS_NAMES,
        body_region="test region",
    )
    with SliceStore.open(store_path) as store:
        scope = store.scope
    assert scope["modality"] == "CT" and scope["body_region"] == "test region" and scope["volumes"] == 3
    assert scope["intensity"]["body_p50"] == pytest.approx(40, abs=10)  # raw HU, not normalised
    run = train(store_path, tmp_path / "run", TrainConfig(iterations=1, **TINY))
    assert load_checkpoint(run.final_checkpoint).scope == scope


def test_fine_tuning_on_a_store_without_a_scope_keeps_the_models_scope(tmp_path):
    scope = measure_scope([body_volume(100, 100)], body_region="test region").to_dict()
    base = save_checkpoint(_checkpoint(scope), tmp_path / "base.pt")
    store_path = make_store(tmp_path / "store.h5", labeled=1, unlabeled=1, val=0)
    with SliceStore.open(store_path) as store:
        assert store.scope == {}
    run = train(store_path, tmp_path / "run", TrainConfig(iterations=1, init_checkpoint=str(base), **TINY))
    assert load_checkpoint(run.final_checkpoint).scope == scope


# ------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def bundled_scope() -> dict:
    scope = load_checkpoint(BUNDLED_MODEL).scope
    assert scope["modality"] == "CT" and scope["body_region"] == "head and neck"
    return scope


def test_every_openkbp_ct_passes_the_bundled_models_scope(shared_data, bundled_scope):
    folder = shared_data / "openkbp"
    paths = sorted((folder / "images").glob("*.nii.gz")) + sorted((folder / "unlabeled").glob("*.nii.gz"))
    assert len(paths) == 52
    warned = {path.name: check_scope(read_volume(path), bundled_scope) for path in paths}
    assert {name: warnings for name, warnings in warned.items() if warnings} == {}


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "example_ct.nii.gz"])
def test_totalsegmentator_abdominal_ct_is_outside_the_body_region(shared_data, bundled_scope, name):
    volume = read_volume(shared_data / "totalsegmentator_example" / name)
    (warning,) = check_scope(volume, bundled_scope)
    assert "outside the model's body region" in warning and "head and neck" in warning


def test_totalsegmentator_mr_is_named_as_mr(shared_data, bundled_scope):
    volume = read_volume(shared_data / "totalsegmentator_example" / "example_mr_sm.nii.gz")
    warnings = check_scope(volume, bundled_scope)
    assert warnings[0] == (
        "this scan looks like MR (no air near -1000 HU), the model was trained on CT: "
        "results are not to be trusted"
    )


def test_predict_prints_the_warning_and_still_predicts(shared_data, tmp_path, capsys):
    mr = shared_data / "totalsegmentator_example" / "example_mr_sm.nii.gz"
    assert main(["predict", str(BUNDLED_MODEL), str(mr), "-o", str(tmp_path), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert f"warning: {mr}: this scan looks like MR" in "\n".join(lines)
    assert any("outside the model's body region" in line for line in lines)
    assert list(tmp_path.glob("example_mr_sm*"))  # a warning, not a refusal


def test_predict_on_a_label_map_says_so_not_that_it_looks_like_mr(tmp_path, capsys):
    # `cgs predict MODEL out/scan_labels.nii.gz`: it said "looks like MR" and predicted on the ids
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[2:4, 20:40, 20:40] = 3
    labels[2:4, 40:50, 10:20] = 7
    path = tmp_path / "scan_labels.nii.gz"
    write_volume(Volume(labels, Geometry(spacing=(4.0, 4.0, 3.0)), "labels"), path)
    out = tmp_path / "out"
    assert main(["predict", str(BUNDLED_MODEL), str(path), "-o", str(out), "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert lines == [
        f"warning: {path}: looks like a label map, not a scan (its voxels hold only the whole numbers "
        "(0, 3, 7)): its prediction means nothing"
    ]
