"""Changed voxels per class and the change map between two label maps."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.review.changes import (
    ADDED,
    RELABELLED,
    REMOVED,
    UNCHANGED,
    change_map,
    count_label_changes,
)

NAMES = ["background", "liver", "kidney"]


def maps() -> tuple[np.ndarray, np.ndarray]:
    before = np.zeros((2, 3, 4), np.uint8)
    before[0, 0, :2] = 1  # two liver voxels
    before[1, 2, 3] = 2  # one kidney voxel
    after = before.copy()
    after[0, 0, 0] = 0  # liver -> background
    after[0, 1, :3] = 1  # background -> liver (3 voxels)
    after[1, 2, 3] = 1  # kidney -> liver
    return before, after


def test_counts_gained_and_lost_per_class():
    before, after = maps()
    changes = count_label_changes(before, after, NAMES)
    assert changes.changed == 5 and changes.voxels == 24
    assert changes.share == pytest.approx(5 / 24)
    by_name = {c.name: (c.gained, c.lost) for c in changes.per_class}
    assert by_name == {"background": (1, 3), "liver": (4, 1), "kidney": (0, 1)}
    assert changes.describe() == ("5 voxels changed (20.8%): background +1/-3, liver +4/-1, kidney +0/-1")


def test_identical_maps_and_unnamed_ids():
    before, _ = maps()
    assert count_label_changes(before, before, NAMES).describe() == "no voxel changed"
    after = before.copy()
    after[0, 2, 2] = 5
    (background, unnamed) = count_label_changes(before, after, NAMES).per_class
    assert (background.name, background.lost) == ("background", 1)
    assert (unnamed.name, unnamed.gained) == ("class 5", 1)


def test_change_map_codes():
    before, after = maps()
    codes = change_map(before, after)
    assert codes.dtype == np.uint8 and codes.shape == before.shape
    assert codes[0, 0, 0] == REMOVED and codes[0, 0, 1] == UNCHANGED
    assert (codes[0, 1, :3] == ADDED).all() and codes[1, 2, 3] == RELABELLED
    assert np.count_nonzero(codes) == count_label_changes(before, after, NAMES).changed


def test_refuses_mismatched_or_non_integer_maps():
    before, after = maps()
    with pytest.raises(ValueError, match="differ in shape"):
        count_label_changes(before, after[:1], NAMES)
    with pytest.raises(ValueError, match="integer class ids"):
        change_map(before.astype(np.float32), after)
    with pytest.raises(ValueError, match="negative"):
        count_label_changes(before.astype(np.int16) - 1, after, NAMES)
