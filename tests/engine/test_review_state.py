"""ReviewState: navigation without wrapping, decisions, the review mask and the dict round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgs_engine.review import ReviewState, find_regions_with_map
from cgs_engine.review.state import ACCEPTED, EDITED

SHAPE = (8, 16, 16)


@pytest.fixture
def found():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[1:3, 1:4, 1:4] = 255  # 18 voxels
    disagreement[5, 8:12, 8:12] = 255  # 16 voxels
    disagreement[5, 8, 8] = 0  # an L-ish shape: its bbox holds one voxel that is not in it
    disagreement[6, 0:2, 10:15] = 255  # 10 voxels
    return find_regions_with_map(disagreement)


def test_navigation_stops_at_both_ends(found):
    regions, _ = found
    state = ReviewState(regions, SHAPE)
    assert state.current() is regions[0]
    assert state.previous() is None and state.position == 0
    assert state.next() is regions[1]
    assert state.next() is regions[2]
    assert state.next() is None
    assert state.current() is regions[2] and state.position == 2
    assert state.previous() is regions[1]
    assert state.go_to(regions[0].id) is regions[0]


def test_empty_queue():
    state = ReviewState([], SHAPE)
    assert state.current() is None and state.next() is None and state.previous() is None
    assert state.next_pending() is None
    assert state.counts() == {"pending": 0, "accepted": 0, "skipped": 0}


def test_accept_with_component_map_marks_exact_voxels(found):
    regions, component_map = found
    state = ReviewState(regions, SHAPE)
    second = regions[1]
    assert second.voxels == 15
    state.accept(second.id, component_map)
    assert state.status[second.id] == "accepted"
    assert state.review_mask.dtype == np.uint8
    assert state.review_mask.sum() == 15
    assert state.review_mask[5, 8, 8] == 0


def test_accept_without_component_map_marks_the_bbox(found):
    regions, _ = found
    state = ReviewState(regions, SHAPE)
    state.accept(regions[1].id)
    assert state.review_mask.sum() == 16
    assert state.review_mask[regions[1].bbox].all()


def test_skip_counts_and_next_pending(found):
    regions, component_map = found
    state = ReviewState(regions, SHAPE)
    state.accept(regions[1].id, component_map)
    state.skip(regions[0].id)
    assert state.counts() == {"pending": 1, "accepted": 1, "skipped": 1}
    assert state.next_pending() is regions[2]
    assert state.next_pending() is None
    state.skip(regions[1].id)  # a second thought: the voxels stay reviewed
    assert state.status[regions[1].id] == "skipped" and state.review_mask.sum() == 15
    with pytest.raises(KeyError, match="no region with id 99"):
        state.accept(99)


def test_mark_edited_forms():
    state = ReviewState([], SHAPE)
    painted = np.zeros(SHAPE, bool)
    painted[0, 0, 0:3] = True
    state.mark_edited(painted)
    edited = lambda: int((state.review_mask == EDITED).sum())  # noqa: E731
    assert edited() == 3 and set(np.unique(state.review_mask)) == {0, EDITED}
    box = (slice(2, 3), slice(0, 2), slice(0, 2))
    state.mark_edited(box, np.array([[[1, 0], [0, 1]]]))
    assert edited() == 5 and state.review_mask[2, 0, 1] == 0
    state.mark_edited(box)
    assert edited() == 7
    state.mark_edited((3, slice(0, 2), slice(0, 1)), np.array([[True], [True]]))  # one z plane
    assert (state.review_mask[3] == EDITED).sum() == 2
    state.mark_edited((np.array([7, 7]), np.array([15, 14]), np.array([15, 15])))  # napari paint indices
    assert edited() == 11 and state.review_mask[7, 14, 15] == EDITED
    with pytest.raises(ValueError, match="shape"):
        state.mark_edited(np.ones((2, 2, 2), bool))


def test_accepting_never_downgrades_edited_voxels(found):
    regions, component_map = found
    state = ReviewState(regions, SHAPE)
    inside = np.argwhere(component_map == regions[0].id)[0]
    state.mark_edited(tuple(np.array([i]) for i in inside))
    state.accept(regions[0].id, component_map)
    assert state.review_mask[tuple(inside)] == EDITED
    assert (state.review_mask[component_map == regions[0].id] > 0).all()
    assert set(np.unique(state.review_mask)) == {0, ACCEPTED, EDITED}


def test_dict_round_trip(found):
    regions, component_map = found
    state = ReviewState(regions, SHAPE)
    state.accept(regions[0].id, component_map)
    state.skip(regions[2].id)
    state.next()
    data = json.loads(json.dumps(state.to_dict()))
    assert "review_mask" not in data
    restored = ReviewState.from_dict(data, state.review_mask.copy())
    assert restored.regions == regions
    assert restored.status == state.status
    assert restored.position == 1
    assert np.array_equal(restored.review_mask, state.review_mask)
    with pytest.raises(ValueError, match="shape"):
        ReviewState.from_dict(data, np.zeros((1, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown review status"):
        ReviewState.from_dict({**data, "status": {"1": "maybe"}}, state.review_mask)
