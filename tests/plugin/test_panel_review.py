"""The review queue: list, navigation to a region's centroid slice, accept/skip, keys, slice profile."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest

from cgs_engine.review import component_mask
from napari_cgs.panel.prediction_layers import focus_layer_name, show_focus
from napari_cgs.panel.review_queue import KEY_ACCEPT, KEY_NEXT, KEY_PREVIOUS, KEY_SKIP, camera_of, region_text

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def reviewing(qtbot, viewer_and_panel, sample_slab_path):
    """A pre-segmented CT slab with its review queue (the tiny model is unsure in many places)."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    assert len(result.regions) >= 2, "the tiny model should leave several uncertain regions"
    return viewer, panel, image, result


def shown_slice(viewer, image) -> int:
    return int(round(image.world_to_data(viewer.dims.point)[0]))


def test_queue_lists_ranked_regions_with_volumes_and_class_names(reviewing):
    _, panel, _, result = reviewing
    rows = [panel.queue.list.item(i).text() for i in range(panel.queue.list.count())]
    assert len(rows) == len(result.regions)
    first, names = result.regions[0], result.prediction.class_names
    assert rows[0] == region_text(1, first, names, "pending")
    assert rows[0].startswith("1. ") and " mL · disagreement mass " in rows[0]
    if first.likely_classes:
        assert names[first.likely_classes[0]] in rows[0]
    assert f"{len(result.regions)} uncertain regions" in panel.queue.summary.text()


def assert_on_screen(viewer, image, bbox):
    """The region's whole box is inside the canvas's field of view."""
    camera = camera_of(viewer)
    half_view = np.asarray(viewer.canvas.size, dtype=float) / camera.zoom / 2
    centre = np.asarray(camera.center[-2:], dtype=float)
    for corner in ([s.start for s in bbox], [s.stop - 1 for s in bbox]):
        world = np.asarray(image.data_to_world(corner))[1:]
        assert (np.abs(world - centre) <= half_view + 1e-6).all(), (world, centre, half_view)


def test_navigation_moves_to_the_centroid_slice_and_outlines_the_region(reviewing):
    viewer, panel, image, result = reviewing
    first, second = result.regions[0], result.regions[1]
    assert shown_slice(viewer, image) == round(first.centroid[0])  # the first region is shown at once
    panel.review.next()
    assert panel.review.state.current() is second
    assert shown_slice(viewer, image) == round(second.centroid[0])
    assert_on_screen(viewer, image, second.bbox)
    focus = viewer.layers[focus_layer_name(image)]
    z_start = second.bbox[0].start
    # one 2D outline on the image's grid, shown on the region's slices only
    (rectangle,) = focus.data
    _, y_range, x_range = second.bbox
    corners = np.array([focus.data_to_world(corner) for corner in rectangle])
    y0, y1, x0, x1 = y_range.start - 1.5, y_range.stop + 0.5, x_range.start - 1.5, x_range.stop + 0.5
    expected = np.array([image.data_to_world((z_start, y, x))[1:] for y in (y0, y1) for x in (x0, x1)])
    np.testing.assert_allclose(corners.min(axis=0), expected.min(axis=0), atol=1e-6)
    np.testing.assert_allclose(corners.max(axis=0), expected.max(axis=0), atol=1e-6)
    assert focus.visible
    # a region on slice 1 of the slab: the box hides on slice 0 and shows again on slice 1
    show_focus(viewer, image, (slice(1, 2), y_range, x_range))
    viewer.dims.set_point(0, image.data_to_world((0, 0, 0))[0])
    assert shown_slice(viewer, image) == 0 and not focus.visible
    viewer.dims.set_point(0, image.data_to_world((1, 0, 0))[0])
    assert focus.visible and len(focus.data) == 1
    panel.review.previous()
    assert shown_slice(viewer, image) == round(first.centroid[0])
    assert panel.queue.list.currentRow() == 0


def test_accept_marks_the_region_reviewed_and_moves_on(reviewing):
    viewer, panel, image, result = reviewing
    first = result.regions[0]
    panel.queue.accept_button.click()
    state = panel.review.state
    assert state.status[first.id] == "accepted"
    region_voxels = component_mask(panel.review.component_map, first)
    assert state.review_mask[region_voxels].all()
    assert state.review_mask.sum() == region_voxels.sum()
    assert state.current() is result.regions[1]
    assert "accepted" in panel.queue.list.item(0).text()

    panel.queue.skip_button.click()
    assert state.status[result.regions[1].id] == "skipped"
    assert state.review_mask.sum() == region_voxels.sum()  # skipping marks nothing


def test_keys_are_bound_on_the_viewer(reviewing):
    from napari.utils.key_bindings import coerce_keybinding

    viewer, panel, image, result = reviewing
    keymap = {str(key): action for key, action in viewer.keymap.items()}
    for key in (KEY_NEXT, KEY_PREVIOUS, KEY_ACCEPT, KEY_SKIP):
        assert str(coerce_keybinding(key)) in keymap
    keymap[str(coerce_keybinding(KEY_NEXT))](viewer)
    assert panel.review.state.position == 1
    keymap[str(coerce_keybinding(KEY_ACCEPT))](viewer)
    assert panel.review.state.status[result.regions[1].id] == "accepted"


def test_a_decision_by_key_is_on_disk_at_once_as_by_button(reviewing, sample_slab_path):
    """Alt+A / Alt+S were only saved by the next autosave tick: napari killed within the minute lost them."""
    from napari.utils.key_bindings import coerce_keybinding

    from cgs_engine.review import load_session, session_path_for

    viewer, panel, image, result = reviewing
    panel.autosave.flush()
    panel.autosave.timer.stop()  # no tick may save it: only the decision itself
    keymap = {str(key): action for key, action in viewer.keymap.items()}
    keymap[str(coerce_keybinding(KEY_ACCEPT))](viewer)
    keymap[str(coerce_keybinding(KEY_SKIP))](viewer)
    panel.autosave.flush()
    assert not panel.autosave.dirty
    saved = load_session(session_path_for(sample_slab_path)).review_state
    assert saved.status[result.regions[0].id] == "accepted"
    assert saved.status[result.regions[1].id] == "skipped"
    assert saved.review_mask[component_mask(panel.review.component_map, result.regions[0])].all()


def test_clicking_the_slice_profile_jumps_to_that_slice(reviewing, qtbot):
    from qtpy.QtCore import QPoint, Qt

    viewer, panel, image, result = reviewing
    plot = panel.queue.profile
    assert len(plot.profile) == image.data.shape[0]
    np.testing.assert_allclose(plot.profile, result.profile)
    plot.resize(240, 60)
    last = image.data.shape[0] - 1
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(plot.width() - 2, 30))
    assert shown_slice(viewer, image) == last
    assert plot.current == last
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(1, 30))
    assert shown_slice(viewer, image) == 0
