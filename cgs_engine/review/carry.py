"""A new review queue that keeps the user's decisions where the regions are the same places.

Running the pre-segmentation again (the same model, or a retrained one) finds its uncertain
regions afresh; the user's accepts, skips and place in the queue must survive it. A new region
takes the status of an old one when the two are the same place: each holds more than half of
the other's voxels (on the component maps; without them, on the bounding boxes). A region that
grew into new uncertain voxels, shrank to a part of the old one, or is new is pending: there is
something to look at again. The voxels the user accepted stay in the review mask either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cgs_engine.review.regions import Region
from cgs_engine.review.state import ReviewState

SAME_PLACE = 0.5  # share of each region's voxels the other one must hold


def carry_over(
    previous: ReviewState,
    previous_map: np.ndarray | None,
    regions: Sequence[Region],
    component_map: np.ndarray | None,
    review_mask: np.ndarray | None = None,
) -> ReviewState:
    """The review state of ``regions`` with ``previous``'s statuses and position carried over.

    ``review_mask``: the mask to continue with (default: a copy of ``previous``'s).
    """
    mask = np.array(previous.review_mask, copy=True) if review_mask is None else review_mask
    same = _same_places(previous, previous_map, regions, component_map)
    status = {
        region.id: previous.status[same[region.id]]
        for region in regions
        if region.id in same and previous.status[same[region.id]] != "pending"
    }
    current = previous.current()
    position = 0
    matched = [
        index
        for index, region in enumerate(regions)
        if current is not None and same.get(region.id) == current.id
    ]
    if matched:
        position = matched[0]
    else:
        pending = [
            index for index, region in enumerate(regions) if status.get(region.id, "pending") == "pending"
        ]
        position = pending[0] if pending else 0
    return ReviewState(regions, review_mask=mask, status=status, position=position)


def _same_places(
    previous: ReviewState,
    previous_map: np.ndarray | None,
    regions: Sequence[Region],
    component_map: np.ndarray | None,
) -> dict[int, int]:
    """New region id -> the old region id that is the same place."""
    if previous_map is not None and component_map is not None and previous_map.shape == component_map.shape:
        return _same_by_voxels(previous, previous_map, regions, component_map)
    return _same_by_boxes(previous.regions, regions)


def _same_by_voxels(
    previous: ReviewState, previous_map: np.ndarray, regions: Sequence[Region], component_map: np.ndarray
) -> dict[int, int]:
    old_sizes = {region.id: region.voxels for region in previous.regions}
    same = {}
    for region in regions:
        box = tuple(region.bbox)
        inside = component_map[box] == region.id
        old_ids = previous_map[box][inside]
        old_ids = old_ids[old_ids > 0]
        if old_ids.size == 0:
            continue
        counts = np.bincount(old_ids.astype(np.int64))
        best = int(np.argmax(counts))
        shared = int(counts[best])
        if (
            best in old_sizes
            and shared > SAME_PLACE * region.voxels
            and shared > SAME_PLACE * old_sizes[best]
        ):
            same[region.id] = best
    return same


def _same_by_boxes(old_regions: Sequence[Region], regions: Sequence[Region]) -> dict[int, int]:
    same = {}
    for region in regions:
        size = _box_size(region.bbox)
        for old in old_regions:
            overlap = [
                slice(max(a.start, b.start), min(a.stop, b.stop))
                for a, b in zip(region.bbox, old.bbox, strict=True)
            ]
            shared = _box_size(overlap)
            if shared > SAME_PLACE * size and shared > SAME_PLACE * _box_size(old.bbox):
                same[region.id] = old.id
                break
    return same


def _box_size(box: Sequence[slice]) -> int:
    return int(np.prod([max(0, part.stop - part.start) for part in box]))
