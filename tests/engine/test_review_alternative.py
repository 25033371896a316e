"""The specialists' version of a review region: what the heads draw, taken in one step and back."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.review.alternative import (
    AlternativeError,
    region_alternative,
    specialists_drawing,
    take_in_region,
)


def maps_for(shape):
    """Head 1 sure on the left half, head 2 sure on the right half, both unsure on row 0."""
    left, right = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    half = shape[-1] // 2
    left[..., :half], right[..., half:] = 230, 200
    left[:, 0, :], right[:, 0, :] = 100, 90  # below 0.5: nobody claims row 0
    return {1: left, 2: right}


def test_each_voxel_goes_to_the_surest_head_that_claims_it():
    shape = (2, 4, 6)
    maps = maps_for(shape)
    maps[2][:, 3, 2] = 250  # head 2 surer than head 1 there
    drawing = specialists_drawing(maps, shape)
    assert (drawing[:, 1:, :3][:, [0, 1], :] == 1).all()
    assert drawing[0, 3, 2] == 2 and (drawing[:, 1:, 3:] == 2).all()
    assert (drawing[:, 0, :] == 0).all()
    float_maps = {k: v.astype(np.float32) / 255 for k, v in maps.items()}
    np.testing.assert_array_equal(specialists_drawing(float_maps, shape), drawing)


def test_taking_it_changes_only_the_region_and_reports_what_changed():
    shape = (3, 6, 8)
    labels = np.full(shape, 5, np.uint8)
    labels[:, :, :2] = 0
    box = (slice(1, 2), slice(1, 5), slice(0, 8))
    inside = np.zeros((1, 4, 8), bool)
    inside[:, :, 1:7] = True
    new, changed = region_alternative(labels, maps_for(shape), box, inside)
    assert (new[0] == labels[0]).all() and (new[2] == labels[2]).all()
    assert (new[1, 1:5, 0] == labels[1, 1:5, 0]).all() and (new[1, 1:5, 7] == labels[1, 1:5, 7]).all()
    assert (new[1, 1:5, 1:4] == 1).all() and (new[1, 1:5, 4:7] == 2).all()
    np.testing.assert_array_equal(changed, new != labels)
    assert labels[1, 2, 2] == 5  # the input is not modified


def test_the_way_back_restores_the_prediction_in_the_region_only():
    predicted = np.random.default_rng(0).integers(0, 4, (3, 5, 5)).astype(np.uint8)
    edited = predicted.copy()
    edited[1] = 7
    box = (slice(1, 2), slice(0, 5), slice(0, 3))
    back, changed = take_in_region(edited, predicted[box], box)
    np.testing.assert_array_equal(back[box], predicted[box])
    assert (back[1, :, 3:] == 7).all()
    assert changed.sum() == np.count_nonzero(edited[box] != predicted[box])


def test_bad_input():
    with pytest.raises(AlternativeError, match="shape"):
        specialists_drawing({1: np.zeros((2, 2, 2), np.uint8)}, (2, 2, 3))
    with pytest.raises(AlternativeError, match="threshold"):
        specialists_drawing({}, (1, 1, 1), threshold=0)
    with pytest.raises(AlternativeError, match="region mask"):
        take_in_region(np.zeros((2, 2, 2)), np.zeros((1, 1, 1)), (slice(0, 1),) * 3, np.ones((1, 2, 2), bool))
