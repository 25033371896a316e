"""The specialists' version of a review region: where the generalist and the specialist heads
disagree, what the heads would draw, to take in one step (and the way back).

The maps a prediction keeps are each head's probability of its own organ (uint8, 255 = 1.0). The
heads' drawing gives a voxel to the organ whose head is surest, when that head is at least
``threshold`` sure (a head's "mine" at p >= 0.5 is its argmax); where no head claims the voxel
the heads agree on "no organ of ours": background.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cgs_engine.errors import CGSError

UINT8_ONE = 255.0


class AlternativeError(CGSError):
    """A specialists' version that cannot be made (maps missing or on another grid)."""


def specialists_drawing(
    maps: Mapping[int, np.ndarray], shape: Sequence[int], threshold: float = 0.5
) -> np.ndarray:
    """uint8 label map: each voxel to the class whose head claims it most surely, else 0.

    ``maps``: class id -> that head's own-class probability (uint8 0..255 or float 0..1), all of
    ``shape`` (a crop is fine).
    """
    if not 0 < threshold <= 1:
        raise AlternativeError(f"threshold must be in (0, 1], got {threshold}")
    drawing = np.zeros(tuple(shape), np.uint8)
    best = np.zeros(tuple(shape), np.float32)
    for class_id, probability in sorted(maps.items()):
        values = _as_probability(probability, shape, class_id)
        claims = (values >= threshold) & (values > best)
        drawing[claims] = class_id
        best[claims] = values[claims]
    return drawing


def take_in_region(
    labels: np.ndarray, replacement: np.ndarray, bbox: Sequence[slice], inside: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` with ``replacement`` (a crop of ``bbox``'s shape) written inside the region.

    ``inside``: which voxels of the box belong to the region (None: the whole box). Returns the
    new label map and the bool mask of the voxels that changed.
    """
    labels = np.asarray(labels)
    box = tuple(bbox)
    crop_shape = labels[box].shape
    replacement = np.asarray(replacement)
    if replacement.shape != crop_shape:
        raise AlternativeError(f"replacement of shape {replacement.shape} for a region of {crop_shape}")
    if inside is None:
        inside = np.ones(crop_shape, bool)
    elif inside.shape != crop_shape:
        raise AlternativeError(f"region mask of shape {inside.shape} for a box of {crop_shape}")
    new = labels.copy()
    crop = new[box]
    crop[inside] = replacement[inside].astype(labels.dtype)
    changed = np.zeros(labels.shape, bool)
    changed[box] = crop != labels[box]
    return new, changed


def region_alternative(
    labels: np.ndarray,
    maps: Mapping[int, np.ndarray],
    bbox: Sequence[slice],
    inside: np.ndarray | None = None,
    threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """The label map with the specialists' drawing taken for one region; (labels, changed)."""
    box = tuple(bbox)
    cropped = {class_id: np.asarray(values)[box] for class_id, values in maps.items()}
    shape = np.asarray(labels)[box].shape
    return take_in_region(labels, specialists_drawing(cropped, shape, threshold), box, inside)


def _as_probability(values: np.ndarray, shape: Sequence[int], class_id: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != tuple(shape):
        raise AlternativeError(f"map of class {class_id} has shape {values.shape}, expected {tuple(shape)}")
    if values.dtype == np.uint8:
        return values.astype(np.float32) / UINT8_ONE
    return values.astype(np.float32, copy=False)
