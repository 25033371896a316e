"""What the review view frames: a region with its anatomy around it, never more than the body."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.review.framing import EDGE_VOXELS, MIN_FIELD_MM, MIN_FIELD_VOXELS, body_box, review_field


def ct_with_a_body_and_a_couch(shape=(6, 64, 80)) -> np.ndarray:
    array = np.full(shape, -1000, np.int16)
    array[:, 10:40, 15:65] = 40  # the body
    array[:, 50:52, 2:78] = 0  # the couch: thin, apart from the body
    return array


def test_body_box_leaves_out_the_air_and_the_couch():
    assert body_box(ct_with_a_body_and_a_couch()) == (slice(0, 6), slice(10, 40), slice(15, 65))
    assert body_box(np.full((3, 20, 20), -1000, np.int16)) is None


def test_body_box_of_an_mr_uses_its_own_background_level():
    array = np.zeros((4, 30, 30), np.float32)
    array[:, 5:25, 8:22] = 500.0
    assert body_box(array) == (slice(0, 4), slice(5, 25), slice(8, 22))


def test_a_small_region_gets_context_and_a_large_one_stays_whole():
    spacing = (3.0, 4.7, 4.7)
    centre, field = review_field((slice(10, 12), slice(50, 53), slice(60, 62)), spacing, (128, 128, 128))
    np.testing.assert_allclose(centre[1:], (51, 60.5))  # in the volume's middle: the region's centre
    assert (field >= MIN_FIELD_MM).all() and field[1] >= MIN_FIELD_VOXELS * 4.7  # 32 coarse voxels: 150 mm
    _, field = review_field((slice(0, 40), slice(20, 100), slice(20, 100)), spacing, (128, 128, 128))
    assert field[1] == pytest.approx(128 * 4.7)  # 2.5 x 80 voxels of context, capped by the volume
    body = (slice(0, 128), slice(40, 90), slice(11, 120))
    _, field = review_field((slice(0, 40), slice(50, 80), slice(20, 100)), spacing, (128, 128, 128), body)
    assert field[1] == pytest.approx(50 * 4.7)  # never more than the body, never less than the region


def test_near_the_body_edge_the_view_moves_onto_the_body():
    spacing = (3.0, 4.7, 4.7)
    body = (slice(0, 128), slice(40, 90), slice(11, 120))
    box = (slice(60, 64), slice(60, 66), slice(112, 118))  # at the body's right edge
    centre, field = review_field(box, spacing, (128, 128, 128), body)
    half_x = field[2] / 4.7 / 2
    assert (
        centre[2] + half_x <= 119.5 + EDGE_VOXELS + 1e-9
    )  # the view ends a few voxels past the body's edge ...
    assert centre[2] - half_x <= 112 - 0.5 and centre[2] + half_x >= 117.5  # ... and holds the region


def test_a_region_off_the_body_stays_in_view():
    """A false organ in the air beside the body (a strip at the image's left edge, the body in the
    middle): keeping the view on the body must not frame the region out of sight."""
    spacing = (3.0, 4.688, 4.688)
    body = (slice(0, 12), slice(48, 78), slice(47, 84))
    region = (slice(0, 12), slice(0, 124), slice(0, 6))
    centre, field = review_field(region, spacing, (12, 128, 128), body)
    half = field / np.asarray(spacing) / 2
    for axis in (1, 2):
        assert centre[axis] - half[axis] <= region[axis].start - 0.5 + 1e-9
        assert centre[axis] + half[axis] >= region[axis].stop - 0.5 - 1e-9
    assert centre[2] > 2.5  # still moved towards the body as far as the region allows
