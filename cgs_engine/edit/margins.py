"""Grow or shrink an organ by a margin in millimetres (Euclidean distance on the voxel grid)."""

from __future__ import annotations

from scipy import ndimage

from cgs_engine.edit.boxes import expand, intersect, reach_in_voxels
from cgs_engine.edit.checks import check_amount, check_spacing, check_within_volume
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target

# Voxel centres exactly one margin away (2 x 0.7 mm vs 1.4 mm) must not fall out by float rounding.
TOLERANCE_MM = 1e-6


def grow(labels, class_id: int, margin_mm: float, spacing_zyx, region=None) -> EditResult:
    """Add the background voxels whose centre lies within ``margin_mm`` of the organ."""
    return _margin(labels, class_id, margin_mm, spacing_zyx, region, outward=True)


def shrink(labels, class_id: int, margin_mm: float, spacing_zyx, region=None) -> EditResult:
    """Remove the organ voxels whose centre lies within ``margin_mm`` of a voxel outside the organ
    (another organ counts as outside; beyond the volume's edge does not)."""
    return _margin(labels, class_id, margin_mm, spacing_zyx, region, outward=False)


def _margin(labels, class_id, margin_mm, spacing_zyx, region, outward: bool) -> EditResult:
    target = edit_target(labels, class_id, region)
    margin = check_amount("margin_mm", margin_mm)
    spacing = check_spacing(spacing_zyx)
    check_within_volume("margin_mm", margin, target.shape, spacing)
    if target.nothing_to_do or margin == 0:
        return target.unchanged()
    reach = reach_in_voxels(margin, spacing)
    may_change = expand(target.organ_box, reach, target.shape) if outward else target.organ_box
    changes = intersect(may_change, target.region_box)
    if changes is None:
        return target.unchanged()
    # Whatever decides a voxel in `changes` lies within one margin of it.
    box = expand(changes, reach, target.shape)
    organ = target.organ[box]
    if outward:
        proposed = ndimage.distance_transform_edt(~organ, sampling=spacing) <= margin + TOLERANCE_MM
    elif organ.all():
        return target.unchanged()  # no voxel outside the organ within reach
    else:
        proposed = ndimage.distance_transform_edt(organ, sampling=spacing) > margin + TOLERANCE_MM
    return target.apply(proposed, box)
