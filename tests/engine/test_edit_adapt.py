"""Adapt to this scan: a copy of the model learns the corrected slices; the user's voxels stay."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cgs_engine.checkpoint import ModelCheckpoint, save_checkpoint
from cgs_engine.edit import EditError
from cgs_engine.edit.adapt import adapt_to_scan, trusted_voxels
from cgs_engine.infer import Cancelled
from cgs_engine.model import ModelConfig, build_model

NAMES = ["background", "Larynx", "Brainstem"]


@pytest.fixture
def checkpoint(tmp_path):
    import torch

    torch.manual_seed(0)
    config = ModelConfig(num_classes=3, widths=(8, 16), dropouts=(0.0, 0.0))
    path = tmp_path / "model.pt"
    model = ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=NAMES,
        input_size=32,
        normalization={"mode": "ct-window", "lower": -160.0, "upper": 240.0},
    )
    save_checkpoint(model, path)
    return path


def scan():
    """A bright square organ on every slice, drawn by the user on slices 0 and 4 only."""
    image = np.full((8, 32, 32), -120, np.int16)
    image[:, 10:20, 6:14] = 200
    truth = np.zeros(image.shape, np.uint8)
    truth[:, 10:20, 6:14] = 1
    labels = np.zeros_like(truth)
    reviewed = np.zeros(image.shape, bool)
    for z in (0, 4):
        labels[z] = truth[z]
        reviewed[z, 10:20, 6:14] = True
    return image, labels, reviewed, truth


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_trusted_voxels_are_the_corrected_organ_and_its_slices_background():
    _, labels, reviewed, _ = scan()
    trusted = trusted_voxels(labels, reviewed, (3.0, 1.0, 1.0), band_mm=3)
    assert trusted[0, 10:20, 6:14].all() and trusted[0, 8, 10] and trusted[0, 30, 30]
    assert not trusted[1].any() and not trusted[7].any()
    # an organ the user did not work on: its own voxels and the background beside it stay untrusted
    other = labels.copy()
    other[0, 24:28, 24:28] = 2
    trusted = trusted_voxels(other, reviewed, (3.0, 1.0, 1.0), band_mm=3)
    assert not trusted[0, 24:28, 24:28].any() and not trusted[0, 26, 30] and not trusted[0, 22, 26]
    assert trusted[0, 10:20, 6:14].all() and trusted[0, 2, 30] and trusted[0, 8, 10]
    erased = labels.copy()
    erased[2, 0:4, 0:4] = 1  # an organ piece beside background the user erased
    marks = np.zeros(labels.shape, bool)
    marks[2, 4, 1] = True
    assert trusted_voxels(erased, marks, (3.0, 1.0, 1.0), band_mm=2)[2, 0:4, 0:4].all()


def test_trusted_slices_are_the_patients_axial_ones_whatever_the_storage_order():
    """A scan stored sagittally, an organ reviewed on one axial slice: read along the stored first
    axis, every axial slice of the organ (never reviewed) was trusted and taught as truth."""
    from cgs_engine.orientation import Reorientation
    from cgs_engine.volume import Geometry

    _, labels, reviewed, _ = scan()
    axial = trusted_voxels(labels, reviewed, (3.0, 1.0, 1.0), band_mm=3)
    # the same patient stored sagittally: stored axes [x, y, z] of the world (voxel x runs along z)
    sagittal = Geometry(
        spacing=(3.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=(0, 0, 1, 0, 1, 0, 1, 0, 0)
    )
    turn = Reorientation.of(sagittal)
    stored = [np.ascontiguousarray(turn.from_canonical(a)) for a in (labels, reviewed)]
    assert stored[0].shape != labels.shape  # really stored another way
    trusted = trusted_voxels(*stored, geometry=sagittal, band_mm=3)
    assert np.array_equal(turn.to_canonical(trusted), axial)
    # the stored first axis, read as axial slices (what it did), trusts every axial slice of the organ
    wrong = trusted_voxels(*stored, sagittal.spacing[::-1], band_mm=3)
    assert turn.to_canonical(wrong)[1:4, 10:20, 6:14].any() and not axial[1:4].any()


def test_adapting_learns_the_corrected_slices_and_changes_nothing_the_user_made(checkpoint):
    image, labels, reviewed, truth = scan()
    before = digest(checkpoint)
    trusted = trusted_voxels(labels, reviewed, (3.0, 1.0, 1.0))
    stages = []
    result = adapt_to_scan(
        checkpoint,
        image,
        labels,
        trusted,
        keep=reviewed,
        seconds=600,  # the step bound ends it: CPU time is not what this test checks
        max_steps=40,
        lr=1e-2,
        batch=4,
        threads=1,
        progress=lambda stage, done, total: stages.append(stage),
    )
    assert result.steps == 40 and result.trained_slices == 2
    assert {"training", "predicting"} <= set(stages)
    np.testing.assert_array_equal(result.labels[reviewed], labels[reviewed])
    np.testing.assert_array_equal(result.changed, result.labels != labels)
    unseen = np.ones(len(labels), bool)
    unseen[[0, 4]] = False
    found = result.labels[unseen] == 1
    organ = truth[unseen] == 1
    assert 2 * (found & organ).sum() / (found.sum() + organ.sum()) > 0.8
    assert digest(checkpoint) == before  # the model file itself is never written


def test_cancel_stops_before_anything_changes(checkpoint):
    image, labels, reviewed, _ = scan()
    with pytest.raises(Cancelled):
        adapt_to_scan(checkpoint, image, labels, reviewed, seconds=60, cancel=lambda: True)


def test_nothing_corrected_or_another_grid_is_a_one_line_error(checkpoint):
    image, labels, reviewed, _ = scan()
    with pytest.raises(EditError, match="no corrected slice"):
        adapt_to_scan(checkpoint, image, labels, np.zeros_like(reviewed))
    with pytest.raises(EditError, match="image has shape"):
        adapt_to_scan(checkpoint, image[:-1], labels, reviewed)
    with pytest.raises(EditError, match="the model knows 3 classes"):
        adapt_to_scan(checkpoint, image, np.where(labels == 1, 5, 0).astype(np.uint8), reviewed)


def test_a_scan_stored_mirrored_is_learnt_and_predicted_in_the_canonical_orientation(checkpoint, monkeypatch):
    """The copy learns the corrected slices as the network was trained (cgs_engine.orientation), and
    the re-prediction lands on the scan's own grid; the user's voxels stay."""
    from cgs_engine.edit import adapt as adapt_module
    from cgs_engine.volume import Geometry

    image, labels, reviewed, _ = scan()
    mirrored = Geometry(spacing=(1.0, 1.0, 3.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x to the right
    seen = {}
    real_bank = adapt_module._slice_bank

    def spy(image_seen, labels_seen, *rest):
        seen["image"], seen["labels"] = image_seen.copy(), labels_seen.copy()
        return real_bank(image_seen, labels_seen, *rest)

    monkeypatch.setattr(adapt_module, "_slice_bank", spy)
    trusted = trusted_voxels(labels, reviewed, (3.0, 1.0, 1.0))
    result = adapt_to_scan(checkpoint, image, labels, trusted, keep=reviewed, max_steps=2, geometry=mirrored)
    np.testing.assert_array_equal(seen["image"], image[:, :, ::-1])  # learnt with x to the left
    np.testing.assert_array_equal(seen["labels"], labels[:, :, ::-1])
    assert result.labels.shape == labels.shape
    assert np.array_equal(result.labels[reviewed], labels[reviewed])  # the user's voxels stay
