"""A re-run pre-segmentation keeps the review queue's decisions where the regions are the same places."""

from __future__ import annotations

import numpy as np

from cgs_engine.review import ReviewState, find_regions_with_map
from cgs_engine.review.carry import carry_over

SHAPE = (8, 24, 24)


def disagreement_with(*boxes):
    array = np.zeros(SHAPE, np.uint8)
    for box in boxes:
        array[box] = 220
    return array


A = np.s_[1:3, 2:6, 2:6]
B = np.s_[4:6, 10:14, 10:14]
C = np.s_[1:3, 16:20, 16:22]
D = np.s_[5:7, 2:5, 18:22]


def reviewed_queue():
    regions, component_map = find_regions_with_map(disagreement_with(A, B, C, D))
    state = ReviewState(regions, SHAPE)
    state.accept(regions[0].id, component_map)
    state.next_pending()
    state.skip(state.current().id)
    state.next_pending()
    return state, component_map


def test_the_same_regions_keep_their_statuses_and_the_position():
    state, component_map = reviewed_queue()
    regions, new_map = find_regions_with_map(disagreement_with(A, B, C, D))
    carried = carry_over(state, component_map, regions, new_map)
    assert carried.counts() == state.counts() == {"pending": 2, "accepted": 1, "skipped": 1}
    assert carried.position == state.position == 2
    np.testing.assert_array_equal(carried.review_mask, state.review_mask)
    assert carried.review_mask is not state.review_mask


def test_a_changed_region_is_pending_again_and_a_vanished_one_is_gone():
    state, component_map = reviewed_queue()
    accepted = state.regions[0]
    skipped = next(r for r in state.regions if state.status[r.id] == "skipped")
    boxes = {r.id: r.bbox for r in state.regions}
    grown = tuple(
        slice(s.start, s.stop + 4) if i else s for i, s in enumerate(boxes[accepted.id])
    )  # 4x larger
    others = [box for rid, box in boxes.items() if rid not in (accepted.id, skipped.id)]
    regions, new_map = find_regions_with_map(disagreement_with(grown, *others))  # the skipped one vanished
    carried = carry_over(state, component_map, regions, new_map)
    assert carried.counts() == {"pending": 3, "accepted": 0, "skipped": 0}
    assert carried.review_mask.sum() == state.review_mask.sum()  # the accepted voxels stay reviewed


def test_without_component_maps_the_boxes_decide():
    state, component_map = reviewed_queue()
    regions, new_map = find_regions_with_map(disagreement_with(A, B, C, D))
    carried = carry_over(state, None, regions, None)
    assert carried.counts() == state.counts()
