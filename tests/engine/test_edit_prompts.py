"""Click and box prompts on synthetic volumes whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.edit import EditError, box_from_drawing, box_prompt, click

SHAPE = (24, 40, 40)
SPACING = (2.0, 1.0, 1.0)


def ball(center, radius, spacing=SPACING, shape=SHAPE) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    distance2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, center, spacing, strict=True))
    return distance2 <= radius**2


def scene():
    """A round organ (class 1, P = 0.9 inside) that the labels miss on its right side (P = 0.3
    there), a false bulge on its left (labelled, P = 0.6), and another organ (class 2) beside it."""
    organ = ball((12, 20, 20), 8)
    missed = organ & (np.arange(40) >= 24)[None, None, :]
    bulge = ball((12, 20, 10), 4) & ~organ
    other = ball((12, 20, 33), 4) & ~organ
    labels = np.zeros(SHAPE, np.uint8)
    labels[(organ & ~missed) | bulge] = 1
    labels[other] = 2
    probability = np.full(SHAPE, 0.02, np.float32)
    probability[organ] = 0.9
    probability[missed] = 0.3
    probability[bulge] = 0.6
    probability[other] = 0.3  # the head is unsure there too, but the voxels belong to organ 2
    image = np.where(organ | bulge, 40, -100).astype(np.int16)
    image[other] = 40
    return labels, probability, image, organ, missed, bulge, other


def test_a_positive_click_adds_the_missed_side_and_nothing_of_another_organ():
    labels, probability, image, organ, missed, _, other = scene()
    result = click(labels, 1, (12, 20, 25), True, probability, SPACING, image=image, reach_mm=15)
    added = result.changed & (result.labels == 1)
    assert (labels[result.changed] == 0).all() and (result.labels[result.changed] == 1).all()
    assert added[missed].mean() > 0.5  # most of the missed side, in 3D, from one click
    assert not (result.changed & other).any() and (result.labels[other] == 2).all()
    assert not (result.changed & ~organ).any()  # background at P = 0.02 stays background
    np.testing.assert_array_equal(result.changed, result.labels != labels)


def test_a_negative_click_removes_the_false_bulge_and_keeps_the_sure_organ():
    labels, probability, image, organ, _, bulge, _ = scene()
    result = click(labels, 1, (12, 20, 8), False, probability, SPACING, image=image, reach_mm=15)
    assert (result.labels[result.changed] == 0).all()
    assert result.changed[bulge].mean() > 0.8
    assert not result.changed[organ].any()


def test_locked_voxels_never_change_except_the_clicked_one():
    labels, probability, image, _, missed, _, _ = scene()
    locked = missed.copy()
    result = click(labels, 1, (12, 20, 25), True, probability, SPACING, image=image, locked=locked)
    assert np.argwhere(result.changed).tolist() == [[12, 20, 25]]


def test_image_support_keeps_a_positive_click_out_of_unlike_tissue():
    labels, probability, image, _, missed, _, _ = scene()
    image[missed & (np.arange(40) >= 26)[None, None, :]] = 900  # bone-bright: not this organ
    result = click(labels, 1, (12, 20, 25), True, probability, SPACING, image=image)
    assert not (result.changed & (image == 900)).any()
    assert result.changed[12, 20, 25]


def test_a_scribble_acts_from_every_point_and_clicks_on_the_wrong_voxels_do_nothing():
    labels, probability, image, _, missed, _, _ = scene()
    top, bottom = (8, 20, 25), (16, 20, 25)
    one = click(labels, 1, top, True, probability, SPACING, image=image, reach_mm=4)
    both = click(labels, 1, [top, bottom], True, probability, SPACING, image=image, reach_mm=4)
    assert both.changed_voxels > one.changed_voxels and both.changed[bottom]
    assert click(labels, 1, (12, 20, 33), True, probability, SPACING).changed_voxels == 0  # organ 2
    assert click(labels, 1, (0, 0, 0), False, probability, SPACING).changed_voxels == 0  # background


def test_a_box_resegments_inside_and_clears_the_organ_outside():
    labels, probability, _, organ, _, bulge, other = scene()
    box = (slice(3, 22), slice(11, 30), slice(11, 30))  # the organ's extent: most of the bulge is outside
    result = box_prompt(labels, 1, box, probability)
    inside = np.zeros(SHAPE, bool)
    inside[box] = True
    assert (labels[bulge & ~inside] == 1).all() and not (result.labels[bulge & ~inside] == 1).any()
    now = result.labels == 1
    assert 2 * (now & organ).sum() / (now.sum() + organ.sum()) > 0.9  # the missed side is back
    assert (result.labels[other] == 2).all()
    np.testing.assert_array_equal(result.changed, result.labels != labels)


def test_a_box_keeps_locked_voxels():
    labels, probability, _, _, _, bulge, _ = scene()
    box = (slice(3, 22), slice(11, 30), slice(11, 30))
    result = box_prompt(labels, 1, box, probability, locked=bulge)
    assert (result.labels[bulge] == 1).all()


@pytest.mark.parametrize(
    "points, message",
    [((12, 20), "index or a list"), ((30, 0, 0), "outside the volume"), ((np.nan, 1, 1), "finite")],
)
def test_bad_points_are_one_line_errors(points, message):
    labels, probability, *_ = scene()
    with pytest.raises(EditError, match=message):
        click(labels, 1, points, True, probability, SPACING)


def test_a_box_that_holds_nothing_of_the_organ_changes_nothing():
    """It would clear the whole organ outside the box and find none inside: refused, one line."""
    labels, probability, *_ = scene()
    with pytest.raises(EditError, match="the box holds nothing of class 1") as error:
        box_prompt(labels, 1, (slice(0, 2), slice(0, 2), slice(0, 2)), probability)
    assert "\n" not in str(error.value)


def test_maps_of_another_grid_and_empty_boxes_are_refused():
    labels, probability, *_ = scene()
    with pytest.raises(EditError, match="probability has shape"):
        click(labels, 1, (1, 1, 1), True, probability[:-1], SPACING)
    with pytest.raises(EditError, match="no voxel along y"):
        box_prompt(labels, 1, (slice(0, 5), slice(9, 9), slice(0, 5)), probability)
    with pytest.raises(EditError, match="reach_mm"):
        click(labels, 1, (1, 1, 1), True, probability, SPACING, reach_mm=0)


def test_a_rectangle_drawn_on_a_slice_becomes_a_box_of_whole_voxels():
    corners = [(12, 4.6, 10.4), (12, 4.6, 20.5), (12, 15.2, 20.5), (12, 15.2, 10.4)]
    box = box_from_drawing(corners, SHAPE, SPACING, slice_axis=0, depth_mm=4.0)
    assert box == (slice(10, 15), slice(5, 16), slice(11, 21))
    assert box_from_drawing(corners, SHAPE, SPACING, slice_axis=0)[0] == slice(0, 24)
    coronal = box_from_drawing([(3.2, 7, 1.0), (9.7, 7, 6.0)], SHAPE, SPACING, slice_axis=1, depth_mm=1.0)
    assert coronal == (slice(4, 10), slice(6, 9), slice(1, 7))
    thin = box_from_drawing([(12, 4.6, 10.4), (12, 4.8, 20.5)], SHAPE, SPACING, slice_axis=0)
    assert thin[1] == slice(5, 6)  # between two voxel centres: the nearer row


@pytest.mark.parametrize("rows", [(-10, -5), (-3, -0.6), (SHAPE[1] + 2, SHAPE[1] + 9)])
def test_a_rectangle_drawn_off_the_image_is_refused(rows):
    """Drawn wholly above the image it became the first row (an organ touching that edge was
    cleared everywhere else); below the image it was refused."""
    corners = [(12, rows[0], 10), (12, rows[1], 20)]
    with pytest.raises(EditError, match="outside the image along y"):
        box_from_drawing(corners, SHAPE, SPACING, slice_axis=0)
    overlapping = box_from_drawing([(12, -4, 10), (12, 0.2, 20)], SHAPE, SPACING, slice_axis=0)
    assert overlapping[1] == slice(0, 1)
    last = SHAPE[1] - 1  # over either edge by less than half a voxel: the edge row, alike
    assert box_from_drawing([(12, -3, 10), (12, -0.3, 20)], SHAPE, SPACING, slice_axis=0)[1] == slice(0, 1)
    edge = box_from_drawing([(12, last + 0.3, 10), (12, last + 3, 20)], SHAPE, SPACING, slice_axis=0)
    assert edge[1] == slice(last, last + 1)


def test_why_a_click_does_nothing_is_said_in_words():
    """A click on a voxel it cannot change (adding on the organ or on another organ, removing
    outside it) did nothing, and the panel said only "changed nothing"."""
    from cgs_engine.edit import why_click_does_nothing

    labels, *_ = scene()
    names = ["background", "Parotid", "Mandible"]
    inside, other, outside = (12, 20, 20), (12, 20, 33), (12, 2, 2)
    assert "is Parotid already" in why_click_does_nothing(labels, 1, inside, True, names)
    assert "is Mandible: a click adds only background" in why_click_does_nothing(
        labels, 1, other, True, names
    )
    assert "is not Parotid: click inside it" in why_click_does_nothing(labels, 1, outside, False, names)
    assert why_click_does_nothing(labels, 1, outside, True, names) is None
    assert why_click_does_nothing(labels, 1, inside, False, {1: "Parotid"}) is None
    assert "class 2" in why_click_does_nothing(labels, 1, other, True)
    for point in ((-1, -1, -1), (labels.shape[0], 0, 0), (1, 2)):  # (-1: the last voxel was described)
        with pytest.raises(EditError, match="outside the volume"):
            why_click_does_nothing(labels, 1, point, True, names)
