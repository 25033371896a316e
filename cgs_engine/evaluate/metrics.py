"""Per-class segmentation metrics for label maps: Dice, Jaccard, HD95 and ASD.

Empty-mask policy (never a silent 0 for distances):

* ``ok``         both masks non-empty: every metric is a number.
* ``empty_pred`` / ``empty_gt``  exactly one is empty: Dice = Jaccard = 0, distances None.
* ``absent``     both empty: every metric is None; summaries count these separately.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .surface import BoundingBox, surface_distance_metrics, union_bounding_box

STATUS_OK = "ok"
STATUS_EMPTY_PRED = "empty_pred"
STATUS_EMPTY_GT = "empty_gt"
STATUS_ABSENT = "absent"
STATUSES = (STATUS_OK, STATUS_EMPTY_PRED, STATUS_EMPTY_GT, STATUS_ABSENT)

ClassSpec = Mapping[int, str] | Sequence[int]


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one volume; None marks a value that cannot be defined."""

    dice: float | None
    jaccard: float | None
    hd95_vox: float | None
    asd_vox: float | None
    hd95_mm: float | None
    asd_mm: float | None
    pred_voxels: int
    gt_voxels: int
    status: str


def class_ids(classes: ClassSpec) -> list[int]:
    """Class ids from a ``{id: name}`` mapping or a list of ids, in the given order."""
    ids = [int(c) for c in (classes.keys() if isinstance(classes, Mapping) else classes)]
    if any(c < 0 for c in ids):
        raise ValueError(f"class ids must be non-negative, got {ids}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class ids must be unique, got {ids}")
    return ids


def evaluate_volume(
    pred: np.ndarray,
    gt: np.ndarray,
    classes: ClassSpec,
    spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[int, ClassMetrics]:
    """Metrics of every requested class for one 3D label-map pair indexed [z, y, x].

    ``spacing_zyx`` is per array axis, i.e. ``Geometry.spacing[::-1]``.  Each class is cut to
    the bounding box of its prediction and ground truth (one ``find_objects`` pass per
    array) before any per-voxel work, so large volumes with small organs stay cheap.
    """
    pred = _as_label_array(pred, "prediction")
    gt = _as_label_array(gt, "ground truth")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    if pred.ndim != 3:
        raise ValueError(f"evaluate_volume needs 3D label maps, got shape {pred.shape}")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ValueError(f"spacing_zyx must be 3 positive finite values, got {spacing_zyx}")

    ids = class_ids(classes)
    pred_boxes = _class_boxes(pred, ids)
    gt_boxes = _class_boxes(gt, ids)
    results = {}
    for class_id in ids:
        box = union_bounding_box([pred_boxes[class_id], gt_boxes[class_id]], pred.shape)
        if box is None:
            results[class_id] = _absent()
            continue
        results[class_id] = evaluate_masks(pred[box] == class_id, gt[box] == class_id, spacing, crop=False)
    return results


def evaluate_masks(
    pred_mask: np.ndarray, gt_mask: np.ndarray, spacing_zyx: Sequence[float], crop: bool = True
) -> ClassMetrics:
    """Metrics of one binary mask pair (any dimensionality matching ``spacing_zyx``)."""
    pred_mask = np.asarray(pred_mask, dtype=bool)
    gt_mask = np.asarray(gt_mask, dtype=bool)
    pred_voxels = int(np.count_nonzero(pred_mask))
    gt_voxels = int(np.count_nonzero(gt_mask))
    if pred_voxels == 0 and gt_voxels == 0:
        return _absent()
    if pred_voxels == 0 or gt_voxels == 0:
        status = STATUS_EMPTY_PRED if pred_voxels == 0 else STATUS_EMPTY_GT
        return ClassMetrics(0.0, 0.0, None, None, None, None, pred_voxels, gt_voxels, status)

    intersection = int(np.count_nonzero(pred_mask & gt_mask))
    union = pred_voxels + gt_voxels - intersection
    distances = surface_distance_metrics(pred_mask, gt_mask, spacing_zyx, crop=crop)
    return ClassMetrics(
        dice=2.0 * intersection / (pred_voxels + gt_voxels),
        jaccard=intersection / union,
        hd95_vox=distances.hd95_vox,
        asd_vox=distances.asd_vox,
        hd95_mm=distances.hd95_mm,
        asd_mm=distances.asd_mm,
        pred_voxels=pred_voxels,
        gt_voxels=gt_voxels,
        status=STATUS_OK,
    )


def dice_per_class(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Fast Dice for classes ``0..num_classes-1`` of integer label maps of any shape (2D/3D).

    Meant for validation during training: three ``bincount`` passes, no distances, no torch.
    Returns a float64 array of length ``num_classes``; NaN where a class is in neither map
    (use ``np.nanmean`` to average).  Index 0 is background; callers usually drop it.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    for name, labels in (("prediction", pred), ("ground truth", gt)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise ValueError(f"{name} must be an integer label map, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}"
            )
    pred_flat = pred.ravel()
    gt_flat = gt.ravel()
    pred_counts = np.bincount(pred_flat, minlength=num_classes)
    gt_counts = np.bincount(gt_flat, minlength=num_classes)
    intersection = np.bincount(pred_flat[pred_flat == gt_flat], minlength=num_classes)
    denominator = (pred_counts + gt_counts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2.0 * intersection / denominator
    dice[denominator == 0] = np.nan
    return dice


def _absent() -> ClassMetrics:
    return ClassMetrics(None, None, None, None, None, None, 0, 0, STATUS_ABSENT)


def _class_boxes(labels: np.ndarray, ids: list[int]) -> dict[int, BoundingBox | None]:
    """Bounding box of every requested class; the background (0) gets the whole array."""
    max_label = max(ids, default=0)
    boxes = ndimage.find_objects(labels, max_label=max_label) if max_label > 0 else []
    whole = tuple(slice(0, size) for size in labels.shape)
    return {c: (whole if c == 0 else boxes[c - 1]) for c in ids}


def _as_label_array(labels: np.ndarray, name: str) -> np.ndarray:
    """Integer view of a label map; float maps are accepted only if they hold whole numbers."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if np.issubdtype(labels.dtype, np.floating):
        rounded = np.rint(labels)
        if np.array_equal(rounded, labels):
            return rounded.astype(np.int32)
    raise ValueError(f"{name} must be an integer label map, got dtype {labels.dtype}")
