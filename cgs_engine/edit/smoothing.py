"""Smooth an organ: Gaussian blur of its mask (sigma in millimetres), kept where the blur is >= 0.5."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgs_engine.edit.boxes import expand, intersect
from cgs_engine.edit.checks import check_sigma, check_spacing, check_within_volume
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target

TRUNCATE = 4.0  # the blur's radius in sigmas (scipy's default)
THRESHOLD = 0.5


def smooth(labels, class_id: int, sigma_mm, spacing_zyx, region=None) -> EditResult:
    """``sigma_mm``: one sigma for all axes or 3 (z, y, x); each becomes voxels through the spacing,
    so thick slices are blurred less along z. Removed voxels become background; voxels are added
    only where there was background."""
    target = edit_target(labels, class_id, region)
    sigmas_mm = check_sigma(sigma_mm)
    spacing = check_spacing(spacing_zyx)
    check_within_volume("sigma_mm", sigmas_mm, target.shape, spacing)
    if target.nothing_to_do or max(sigmas_mm) == 0:
        return target.unchanged()
    sigmas = tuple(s / d for s, d in zip(sigmas_mm, spacing, strict=True))
    reach = tuple(int(TRUNCATE * s + 0.5) + 1 for s in sigmas)
    changes = intersect(expand(target.organ_box, reach, target.shape), target.region_box)
    if changes is None:
        return target.unchanged()
    box = expand(changes, reach, target.shape)
    # "nearest": an organ cut by the edge of the scan is not eaten away at that edge.
    blurred = ndimage.gaussian_filter(
        target.organ[box].astype(np.float32), sigmas, mode="nearest", truncate=TRUNCATE
    )
    return target.apply(blurred >= THRESHOLD, box)
