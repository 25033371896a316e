"""How well a per-voxel score ranks the voxels a model got wrong: average precision and recall at the top.

Used to judge "where is it wrong" maps (the disagreement map, the likely-wrong map, a border
baseline) against the errors a reference label map reveals.

Ties: many scores are coarse (uint8 maps, integer distances), so voxels with one score value
form a tie group that a reviewer would meet in no particular order. Average precision counts a
tie group as one step (precision and recall after the whole group), and recall in the top share
takes the part of a group that the cut splits as catching its errors in proportion. So a
constant score gets an average precision equal to the error rate and a recall equal to the
share reviewed, whatever the voxel order, never an artefact of how ties happen to be sorted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def error_band(prediction: np.ndarray, reference: np.ndarray, width: float = 3.0) -> np.ndarray:
    """Voxels within ``width`` voxels (Euclidean, index space) of any predicted or reference organ.

    The voxels a reviewer of organ contours looks at; far background is neither wrong nor worth
    a look, and counting it would make every score look good.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction {prediction.shape} and reference {reference.shape} differ in shape")
    organ = (prediction != 0) | (reference != 0)
    if not organ.any():
        return np.zeros(prediction.shape, dtype=bool)
    return ndimage.distance_transform_edt(~organ) <= width


def _tie_groups(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(voxels, positives) accumulated after each tie group, highest score first."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    ordered = np.asarray(score, dtype=np.float64)[order]
    ends = np.append(np.flatnonzero(np.diff(ordered)) + 1, len(ordered))
    hits = np.concatenate([[0], np.cumsum(np.asarray(positive, dtype=bool)[order], dtype=np.int64)])
    return ends, hits[ends]


def _checked(score: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score, positive = np.ravel(score), np.ravel(positive)
    if score.shape != positive.shape:
        raise ValueError(f"score has {score.size} values but positive has {positive.size}")
    if score.size == 0:
        raise ValueError("no voxels to rank")
    return score, positive


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall steps of ranking by ``score`` (ties: one step); NaN if none."""
    score, positive = _checked(score, positive)
    voxels, hits = _tie_groups(score, positive)
    total = hits[-1]
    if total == 0:
        return float("nan")
    gained = np.diff(np.concatenate([[0], hits]))
    return float(np.sum(gained * hits / voxels) / total)


def recall_at(score: np.ndarray, positive: np.ndarray, fractions: Sequence[float]) -> list[float]:
    """Share of the positives among the top ``fraction`` of voxels by score, for each fraction.

    A tie group split by the cut contributes its positives in proportion to the part taken.
    """
    score, positive = _checked(score, positive)
    voxels, hits = _tie_groups(score, positive)
    total = hits[-1]
    starts = np.concatenate([[0], voxels[:-1]])
    before = np.concatenate([[0], hits[:-1]])
    recalls = []
    for fraction in fractions:
        if not 0 <= fraction <= 1:
            raise ValueError(f"fractions must be in [0, 1], got {fraction}")
        cut = fraction * len(score)
        group = min(int(np.searchsorted(voxels, cut, side="left")), len(voxels) - 1)
        taken = (cut - starts[group]) / (voxels[group] - starts[group])
        caught = before[group] + max(0.0, min(1.0, taken)) * (hits[group] - before[group])
        recalls.append(float(caught / total) if total else float("nan"))
    return recalls
