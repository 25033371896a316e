"""Metrics of cgs_engine.evaluate against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cgs_engine.evaluate import (
    ClassMetrics,
    dice_per_class,
    evaluate_masks,
    evaluate_volume,
    surface_distance_metrics,
    surface_voxels,
)
from cgs_engine.evaluate import surface as surface_module

ANISOTROPIC_ZYX = (5.0, 0.7, 0.7)


def _labels(shape=(10, 10, 10)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_offset_cubes_dice_and_jaccard_are_exact_fractions():
    pred, gt = _labels(), _labels()
    pred[2:6, 2:6, 2:6] = 1
    gt[2:6, 2:6, 3:7] = 1  # shifted one voxel along x: overlap 4*4*3 = 48 of 64 each
    result = evaluate_volume(pred, gt, [1])[1]
    assert result.dice == pytest.approx(96 / 128)
    assert result.jaccard == pytest.approx(48 / 80)
    assert (result.pred_voxels, result.gt_voxels, result.status) == (64, 64, "ok")

    gt[:] = 0
    gt[3:7, 3:7, 2:6] = 1  # shifted along z and y: overlap 3*3*4 = 36
    result = evaluate_volume(pred, gt, {1: "cube"})[1]
    assert result.dice == pytest.approx(72 / 128)
    assert result.jaccard == pytest.approx(36 / 92)


@pytest.mark.parametrize(
    ("shift_zyx", "expected_mm"),
    [((1, 0, 0), 5.0), ((0, 1, 0), 0.7), ((0, 0, 1), 0.7)],
)
def test_single_voxel_shift_is_one_voxel_and_one_spacing(shift_zyx, expected_mm):
    pred, gt = _labels(), _labels()
    pred[4, 4, 4] = 2
    gt[4 + shift_zyx[0], 4 + shift_zyx[1], 4 + shift_zyx[2]] = 2
    result = evaluate_volume(pred, gt, [2], spacing_zyx=ANISOTROPIC_ZYX)[2]
    assert result.hd95_vox == pytest.approx(1.0)
    assert result.asd_vox == pytest.approx(1.0)
    assert result.hd95_mm == pytest.approx(expected_mm)
    assert result.asd_mm == pytest.approx(expected_mm)
    assert result.dice == 0.0 and result.status == "ok"


def test_slab_shifted_along_z_has_every_surface_distance_equal_to_the_z_spacing():
    pred, gt = _labels(), _labels()
    pred[3, 2:8, 1:9] = 1
    gt[4, 2:8, 1:9] = 1
    result = evaluate_volume(pred, gt, [1], spacing_zyx=ANISOTROPIC_ZYX)[1]
    assert (result.hd95_vox, result.asd_vox) == pytest.approx((1.0, 1.0))
    assert (result.hd95_mm, result.asd_mm) == pytest.approx((5.0, 5.0))


def test_diagonal_shift_differs_between_voxels_and_millimetres():
    pred, gt = _labels(), _labels()
    pred[4, 4, 4] = 1
    gt[5, 4, 5] = 1
    result = evaluate_volume(pred, gt, [1], spacing_zyx=ANISOTROPIC_ZYX)[1]
    assert result.hd95_vox == pytest.approx(math.sqrt(2))
    assert result.hd95_mm == pytest.approx(math.sqrt(5.0**2 + 0.7**2))


def test_anisotropy_changes_the_nearest_neighbour_and_hd95_is_max_of_directed_percentiles():
    # pred: one voxel.  gt: one voxel a z-step away and one two x-steps away.
    pred, gt = _labels(), _labels()
    pred[4, 4, 4] = 1
    gt[5, 4, 4] = 1
    gt[4, 4, 6] = 1
    result = evaluate_volume(pred, gt, [1], spacing_zyx=ANISOTROPIC_ZYX)[1]
    # voxels: pred->gt = [1]; gt->pred = [1, 2]
    assert result.hd95_vox == pytest.approx(max(1.0, np.percentile([1.0, 2.0], 95)))  # 1.95, pooled 1.9
    assert result.asd_vox == pytest.approx(4 / 3)
    # mm: pred->gt = [1.4] (x neighbour now nearer); gt->pred = [5, 1.4]
    assert result.hd95_mm == pytest.approx(max(1.4, np.percentile([5.0, 1.4], 95)))  # 4.82
    assert result.asd_mm == pytest.approx((1.4 + 5.0 + 1.4) / 3)


def test_surface_uses_face_connectivity_and_array_border_counts_as_background():
    mask = np.zeros((7, 7, 7), dtype=bool)
    mask[1:6, 1:6, 1:6] = True
    assert surface_voxels(mask).sum() == 5**3 - 3**3
    mask[1, 1, 1] = False  # (2, 2, 2) now touches background only through a corner
    surface = surface_voxels(mask)
    assert not surface[2, 2, 2]
    assert surface[1, 1, 2] and surface[1, 2, 1] and surface[2, 1, 1]

    touching_border = np.zeros((4, 4, 4), dtype=bool)
    touching_border[:, :, :] = True
    assert surface_voxels(touching_border).sum() == 4**3 - 2**3


def test_empty_prediction_ground_truth_and_absent_classes():
    pred, gt = _labels(), _labels()
    gt[1:3, 1:3, 1:3] = 1  # class 1 only in gt
    pred[5:7, 5:7, 5:7] = 2  # class 2 only in pred
    results = evaluate_volume(pred, gt, {1: "a", 2: "b", 3: "c"}, spacing_zyx=ANISOTROPIC_ZYX)
    assert results[1] == ClassMetrics(0.0, 0.0, None, None, None, None, 0, 8, "empty_pred")
    assert results[2] == ClassMetrics(0.0, 0.0, None, None, None, None, 8, 0, "empty_gt")
    assert results[3] == ClassMetrics(None, None, None, None, None, None, 0, 0, "absent")


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
        evaluate_volume(np.zeros((4, 5, 6), np.uint8), np.zeros((4, 5, 7), np.uint8), [1])


def test_label_map_types():
    gt = _labels()
    gt[2:4, 2:4, 2:4] = 1
    as_float = evaluate_volume(gt.astype(np.float32), gt, [1])[1]
    assert as_float.dice == 1.0 and as_float.hd95_mm == 0.0
    assert evaluate_volume(gt.astype(bool), gt, [1])[1].dice == 1.0
    with pytest.raises(ValueError, match="integer label map"):
        evaluate_volume(gt + 0.5, gt, [1])


def _random_blobs(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    smooth = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    return smooth > 0.08


def test_cropping_gives_the_same_result_as_the_full_array():
    rng = np.random.default_rng(7)
    shape = (30, 40, 36)
    pred_mask = np.zeros(shape, dtype=bool)
    gt_mask = np.zeros(shape, dtype=bool)
    pred_mask[5:20, 8:30, 0:20] = _random_blobs(rng, (15, 22, 20))  # touches the x=0 border
    gt_mask[6:22, 10:31, 0:22] = _random_blobs(rng, (16, 21, 22))
    spacing = (2.5, 0.8, 1.1)

    cropped = surface_distance_metrics(pred_mask, gt_mask, spacing, crop=True)
    full = surface_distance_metrics(pred_mask, gt_mask, spacing, crop=False)
    assert cropped == full
    assert cropped.hd95_vox != pytest.approx(cropped.hd95_mm)

    labels_pred = pred_mask.astype(np.uint8) * 3
    labels_gt = gt_mask.astype(np.uint8) * 3
    via_volume = evaluate_volume(labels_pred, labels_gt, [3], spacing_zyx=spacing)[3]
    assert via_volume == evaluate_masks(pred_mask, gt_mask, spacing, crop=False)


def test_dice_per_class_matches_evaluate_volume_and_marks_absent_as_nan():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 3, size=(6, 7, 8), dtype=np.uint8)
    gt = rng.integers(0, 3, size=(6, 7, 8), dtype=np.uint8)
    fast = dice_per_class(pred, gt, num_classes=4)
    full = evaluate_volume(pred, gt, [1, 2])
    assert fast[1:3] == pytest.approx([full[1].dice, full[2].dice])
    assert np.isnan(fast[3])

    two_d = dice_per_class(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]), num_classes=2)
    assert two_d == pytest.approx([2 / 3, 4 / 5])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dice_per_class(np.array([0, 2]), np.array([0, 1]), num_classes=2)


def test_threaded_distance_transforms_match_the_serial_path(monkeypatch):
    rng = np.random.default_rng(11)
    pred_mask = _random_blobs(rng, (12, 16, 14))
    gt_mask = _random_blobs(rng, (12, 16, 14))
    serial = surface_distance_metrics(pred_mask, gt_mask, ANISOTROPIC_ZYX)
    monkeypatch.setattr(surface_module, "PARALLEL_MIN_VOXELS", 0)
    assert surface_distance_metrics(pred_mask, gt_mask, ANISOTROPIC_ZYX) == serial
