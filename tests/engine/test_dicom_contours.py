"""Contour tracing and filling: islands, holes, islands in holes and diagonal touches round-trip."""

from __future__ import annotations

import numpy as np

from cgs_engine.dicom.contours import fill_contours, trace_contours


def test_random_masks_come_back_exactly():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random((17, 23)) < rng.uniform(0.1, 0.9)
        assert np.array_equal(fill_contours(trace_contours(mask), mask.shape), mask)


def test_a_ring_with_an_island_is_three_contours():
    rows, columns = np.mgrid[:40, :40]
    radius = np.hypot(rows - 20, columns - 20)
    mask = ((radius <= 15) & (radius > 8)) | (radius <= 3)
    contours = trace_contours(mask)
    assert len(contours) == 3
    assert np.array_equal(fill_contours(contours, mask.shape), mask)


def test_straight_runs_keep_only_their_corners():
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:10] = True
    (contour,) = trace_contours(mask)
    assert len(contour) == 8  # the four corners, each cut by marching squares into two vertices
    assert np.array_equal(fill_contours([contour], mask.shape), mask)


def test_empty_and_edge_touching_masks():
    assert trace_contours(np.zeros((5, 5), bool)) == []
    full = np.ones((6, 4), bool)
    assert np.array_equal(fill_contours(trace_contours(full), full.shape), full)


def test_a_keyhole_contour_and_contours_beyond_the_image():
    # one polygon around a square with a slit to an inner square hole (how some planning systems write holes)
    keyhole = np.array(
        [
            [0.5, 0.5],
            [0.5, 9.5],
            [9.5, 9.5],
            [9.5, 5.1],
            [6.5, 5.1],
            [6.5, 6.5],
            [3.5, 6.5],
            [3.5, 3.5],
            [6.5, 3.5],
            [6.5, 4.9],
            [9.5, 4.9],
            [9.5, 0.5],
        ]
    )
    mask = fill_contours([keyhole], (11, 11))
    assert mask[2, 2] and not mask[5, 5] and mask[8, 8]
    beyond = np.array([[-5.0, -5.0], [-5.0, 3.5], [3.5, 3.5], [3.5, -5.0]])
    assert fill_contours([beyond], (6, 6)).sum() == 16
