"""Segment-editor tools on synthetic volumes whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.edit import (
    EditError,
    EditResult,
    fill_between_slices,
    fill_holes,
    grow,
    keep_largest_island,
    remove_small_islands,
    shrink,
    smooth,
)
from cgs_engine.errors import CGSError

ISO = (1.0, 1.0, 1.0)

# ITK's SWIG wrapping (loaded by fill_between_slices) warns about its own types on Python 3.11+.
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")


def ball(shape, center, radius, spacing=ISO) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing, strict=True))
    return distance2 <= radius**2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def extent(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of the True voxels along z, y, x."""
    spans = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        spans.append((int(hits[0]), int(hits[-1])))
    return spans


def labelled(mask: np.ndarray, class_id: int = 1, dtype=np.uint8) -> np.ndarray:
    return np.where(mask, class_id, 0).astype(dtype)


# ----------------------------------------------------------------------------- fill between slices


def test_fill_between_slices_restores_a_sphere_drawn_on_every_third_slice():
    sphere = ball((36, 32, 32), (17, 16, 16), 11)
    drawn = sphere & (np.arange(36) % 3 == 0)[:, None, None]
    labels = labelled(drawn)
    result = fill_between_slices(labels, 1)
    filled = result.labels == 1
    assert dice(drawn, sphere) < 0.5
    assert dice(filled, sphere) > 0.9
    assert np.array_equal(filled[::3], drawn[::3])  # drawn slices stay as drawn
    assert not result.changed[::3].any()
    assert np.array_equal(labels, labelled(drawn))  # input untouched


def test_fill_between_slices_along_x_and_only_between_the_outer_drawn_slices():
    sphere = ball((32, 32, 36), (16, 16, 17), 11)
    drawn = sphere & (np.arange(36) % 3 == 0)[None, None, :]
    result = fill_between_slices(labelled(drawn), 1, axis=2)
    assert dice(result.labels == 1, sphere) > 0.9
    first, last = extent(drawn)[2]
    assert not result.changed[:, :, :first].any() and not result.changed[:, :, last + 1 :].any()


def test_fill_between_slices_leaves_a_single_slice_alone():
    labels = labelled(ball((10, 20, 20), (5, 10, 10), 6) & (np.arange(10) == 5)[:, None, None])
    assert fill_between_slices(labels, 1).changed_voxels == 0


# ----------------------------------------------------------------------------- islands


def test_keep_largest_island_removes_the_smaller_piece_and_counts_corner_contact_as_connected():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:7, 2:7, 2:7] = 1  # 125 voxels
    labels[7, 7, 7] = 1  # touches the big cube only at a corner: same island (26-connectivity)
    labels[12:15, 12:15, 12:15] = 1  # 27 voxels, apart
    result = keep_largest_island(labels, 1)
    assert result.changed_voxels == 27
    assert result.changed[12:15, 12:15, 12:15].all()
    assert result.labels[7, 7, 7] == 1 and (result.labels[2:7, 2:7, 2:7] == 1).all()


def test_remove_small_islands_by_volume_with_exact_voxel_volumes():
    spacing = (2.0, 2.5, 2.5)  # 12.5 mm^3 a voxel, so 80 voxels are exactly 1 mL
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[2:12, 2:12, 2:12] = 1  # 1000 voxels = 12.5 mL
    labels[20:25, 20:24, 20:24] = 1  # 80 voxels = 1 mL
    removed = remove_small_islands(labels, 1, 2.0, spacing)
    assert removed.changed_voxels == 80 and removed.changed[20:25, 20:24, 20:24].all()
    assert remove_small_islands(labels, 1, 0.5, spacing).changed_voxels == 0
    assert remove_small_islands(labels, 1, 1.0, spacing).changed_voxels == 0  # exactly min_ml stays
    assert remove_small_islands(labels, 1, 13.0, spacing).changed_voxels == 1080


def test_an_island_of_exactly_the_volume_asked_for_stays_at_spacings_a_header_rounds():
    """NIfTI stores 0.7 mm as float32 (0.699999988): 40 voxels at 0.7 x 0.7 x 5 mm, 0.098 mL, were
    removed by --ml 0.098 though an island of exactly min_ml stays."""
    spacing = tuple(float(np.float32(v)) for v in (5.0, 0.7, 0.7))
    labels = np.zeros((10, 30, 30), np.uint8)
    labels[1:6, 2:10, 2:10] = 1  # 320 voxels
    labels[7, 20:25, 20:28] = 1  # 40 voxels = 0.098 mL
    assert remove_small_islands(labels, 1, 40 * 0.7 * 0.7 * 5 / 1000, spacing).changed_voxels == 0
    assert remove_small_islands(labels, 1, 41 * 0.7 * 0.7 * 5 / 1000, spacing).changed_voxels == 40


# ----------------------------------------------------------------------------- holes


def test_fill_holes_per_slice_fills_a_tube_that_3d_leaves_open():
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[2:8, 5:15, 5:15] = 1
    labels[2:8, 8:12, 8:12] = 0  # a square tube, open at both ends
    per_slice = fill_holes(labels, 1)
    assert per_slice.changed_voxels == 6 * 16 and (per_slice.labels[2:8, 5:15, 5:15] == 1).all()
    assert fill_holes(labels, 1, mode="3d").changed_voxels == 0


def test_fill_holes_in_3d_fills_a_closed_cavity_but_keeps_another_organ_inside():
    labels = labelled(ball((24, 24, 24), (12, 12, 12), 9) & ~ball((24, 24, 24), (12, 12, 12), 4))
    labels[12, 12, 12] = 2
    result = fill_holes(labels, 1, mode="3d")
    cavity = ball((24, 24, 24), (12, 12, 12), 4)
    assert result.changed_voxels == np.count_nonzero(cavity) - 1
    assert result.labels[12, 12, 12] == 2


# ----------------------------------------------------------------------------- smoothing


def test_smooth_removes_a_spike_and_fills_a_notch_but_keeps_the_body():
    labels = np.zeros((20, 30, 30), np.uint8)
    labels[5:15, 8:22, 8:22] = 1
    labels[10, 22:27, 15] = 1  # a one-voxel-thin spike
    labels[10, 8, 12] = 0  # a one-voxel notch in a face
    result = smooth(labels, 1, 1.0, ISO)
    assert not (result.labels[10, 23:27, 15] == 1).any()
    assert result.labels[10, 8, 12] == 1
    assert (result.labels[7:13, 10:20, 10:20] == 1).all()
    assert smooth(labels, 1, 0.0, ISO).changed_voxels == 0


def test_smooth_sigma_is_in_millimetres_per_axis():
    """A plate one slice thick: a 1 mm sigma blurs it away on 1 mm slices, hardly at all on 5 mm ones."""
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[5, 4:16, 4:16] = 1
    assert (smooth(labels, 1, 1.0, ISO).labels == 0).all()
    assert smooth(labels, 1, 1.0, (5.0, 1.0, 1.0)).labels[5, 10, 10] == 1
    assert smooth(labels, 1, (0.0, 1.0, 1.0), ISO).labels[5, 10, 10] == 1


# ----------------------------------------------------------------------------- margins


def test_grow_2mm_on_1_1_2_spacing_grows_two_voxels_in_plane_and_one_along_z():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[8:12, 8:12, 8:12] = 1
    result = grow(labels, 1, 2.0, (2.0, 1.0, 1.0))
    assert extent(result.labels == 1) == [(7, 12), (6, 13), (6, 13)]
    assert result.labels[7, 6, 6] == 0  # corner: sqrt(2^2 + 2^2 + 2^2) mm away
    assert result.labels[8, 6, 8] == 1 and result.labels[7, 8, 8] == 1


def test_shrink_is_the_near_inverse_of_grow():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:15, 5:15, 5:15] = 1
    shrunk = shrink(labels, 1, 2.0, (2.0, 1.0, 1.0))
    assert extent(shrunk.labels == 1) == [(6, 13), (7, 12), (7, 12)]
    assert np.array_equal(shrink(grow(labels, 1, 2.0, ISO).labels, 1, 2.0, ISO).labels, labels)
    sphere = labelled(ball((40, 40, 40), (20, 20, 20), 12))
    back = shrink(grow(sphere, 1, 3.0, (1.5, 1.0, 1.0)).labels, 1, 3.0, (1.5, 1.0, 1.0)).labels
    assert dice(back == 1, sphere == 1) > 0.99


def test_shrink_takes_another_organ_as_outside_but_not_the_volume_edge():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:, :, :5] = 1
    labels[:, :, 5:] = 2
    result = shrink(labels, 1, 1.0, ISO)
    assert (result.labels[:, :, 4] == 0).all() and (result.labels[:, :, :4] == 1).all()


# ----------------------------------------------------------------------------- every tool


def two_organs() -> np.ndarray:
    """Organ 1: a ball with a closed cavity, drawn only on every other slice at its top, with a spike
    and a far island; organ 2 beside it, in one of the gaps and inside the cavity."""
    shape = (30, 30, 30)
    organ = ball(shape, (15, 15, 15), 9) & ~ball(shape, (11, 15, 15), 2)
    organ[19::2] = False
    organ[15, 15, 24:28] = True
    organ[26:28, 2:4, 2:4] = True
    labels = labelled(organ)
    labels[8:24, 5:25, 25:29] = 2
    labels[19, 13:17, 13:17] = 2
    labels[11, 15, 15] = 2
    return labels


TOOLS = {
    "fill_between_slices": lambda labels, **kw: fill_between_slices(labels, 1, **kw),
    "keep_largest_island": lambda labels, **kw: keep_largest_island(labels, 1, **kw),
    "remove_small_islands": lambda labels, **kw: remove_small_islands(labels, 1, 0.1, ISO, **kw),
    "fill_holes": lambda labels, **kw: fill_holes(labels, 1, **kw),
    "fill_holes_3d": lambda labels, **kw: fill_holes(labels, 1, mode="3d", **kw),
    "smooth": lambda labels, **kw: smooth(labels, 1, 1.5, (2.0, 1.0, 1.0), **kw),
    "grow": lambda labels, **kw: grow(labels, 1, 3.0, (2.0, 1.0, 1.0), **kw),
    "shrink": lambda labels, **kw: shrink(labels, 1, 1.0, (2.0, 1.0, 1.0), **kw),
}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_changes_only_organ_and_background_and_reports_exactly_the_difference(tool):
    labels = two_organs()
    before = labels.copy()
    result = TOOLS[tool](labels)
    assert isinstance(result, EditResult)
    assert np.array_equal(labels, before)  # input untouched
    assert result.labels is not labels and result.labels.dtype == labels.dtype
    assert np.array_equal(result.changed, result.labels != labels)
    assert result.changed_voxels == np.count_nonzero(result.labels != labels) > 0
    assert np.array_equal(result.labels == 2, labels == 2)  # the other organ is never touched
    assert set(np.unique(result.labels[result.changed])) <= {0, 1}
    assert set(np.unique(labels[result.changed])) <= {0, 1}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_changes_nothing_outside_its_region(tool):
    labels = two_organs()
    box = (slice(10, 30), slice(0, 30), slice(12, 30))
    free = TOOLS[tool](labels)
    boxed = TOOLS[tool](labels, region=box)
    inside = np.zeros(labels.shape, bool)
    inside[box] = True
    assert not boxed.changed[~inside].any()
    # the tool still sees the whole organ: inside the box it does what it does without a box
    assert np.array_equal(boxed.changed, free.changed & inside)
    mask = ball(labels.shape, (15, 15, 20), 7)
    masked = TOOLS[tool](labels, region=mask)
    assert np.array_equal(masked.changed, free.changed & mask)


def test_uint16_labels_and_an_absent_organ():
    labels = np.zeros((8, 8, 8), np.uint16)
    labels[2:6, 2:6, 2:6] = 300
    grown = grow(labels, 300, 1.0, ISO)
    assert grown.labels.dtype == np.uint16 and grown.changed_voxels == 6 * 16
    assert grown.changed_ml((2.0, 1.0, 1.0)) == pytest.approx(6 * 16 * 2 / 1000)
    assert grow(labels, 7, 1.0, ISO).changed_voxels == 0


# ----------------------------------------------------------------------------- bad input

GOOD = np.zeros((4, 5, 6), np.uint8)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: grow(GOOD, 0, 1.0, ISO), "class id 0"),
        (lambda: grow(GOOD, 256, 1.0, ISO), "out of range 1..255"),
        (lambda: grow(GOOD, 1.5, 1.0, ISO), "whole number"),
        (lambda: grow(GOOD, 1, -1.0, ISO), "margin_mm"),
        (lambda: shrink(GOOD, 1, float("nan"), ISO), "margin_mm"),
        (lambda: smooth(GOOD, 1, -0.5, ISO), "sigma_mm"),
        (lambda: smooth(GOOD, 1, (1.0, 1.0), ISO), "sigma_mm"),
        (lambda: remove_small_islands(GOOD, 1, -2, ISO), "min_ml"),
        (lambda: grow(GOOD, 1, 1.0, (1.0, 0.0, 1.0)), "spacing_zyx"),
        (lambda: grow(GOOD, 1, 1.0, (1.0, 1.0)), "spacing_zyx"),
        (lambda: fill_holes(GOOD, 1, region=np.zeros((4, 5, 7), bool)), "region mask shape"),
        (lambda: fill_holes(GOOD, 1, region=(slice(0, 2), slice(0, 2))), "3 slices"),
        (lambda: fill_holes(GOOD, 1, region=(slice(0, 4, 2),) * 3), "step 1"),
        (lambda: fill_holes(GOOD, 1, mode="2d"), "mode"),
        (lambda: fill_between_slices(GOOD, 1, axis=3), "axis"),
        (lambda: keep_largest_island(np.zeros((5, 6), np.uint8), 1), "3D"),
        (lambda: keep_largest_island(np.zeros((4, 5, 6), np.float32), 1), "integer class ids"),
    ],
)
def test_bad_input_is_a_one_line_edit_error(call, words):
    with pytest.raises(EditError) as raised:
        call()
    message = str(raised.value)
    assert isinstance(raised.value, CGSError)
    assert "\n" not in message and words in message
