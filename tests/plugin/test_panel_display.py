"""How the panel draws over the CT: named sliders, whole-slice view, outlines, the disagreement overlay."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest

from napari_cgs.panel.display import HEAT_MAP, OFF, OUTLINES, disagreement_outline_name
from napari_cgs.panel.prediction_layers import (
    disagreement_layer_name,
    focus_layer_name,
    labels_layer_name,
)
from napari_cgs.panel.review_queue import camera_of

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def visible_field(viewer):
    """(centre, half size) of what the canvas shows, in world units of the two shown axes."""
    camera = camera_of(viewer)
    return np.asarray(camera.center[-2:]), np.asarray(viewer.canvas.size, dtype=float) / camera.zoom / 2


def test_opening_a_ct_names_the_sliders_and_frames_the_body(qtbot, viewer_and_panel, sample_slab_path):
    from cgs_engine.review.framing import body_box

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    qtbot.wait(50)
    assert tuple(viewer.dims.axis_labels) == ("axial", "coronal", "sagittal")
    z = int(round(image.world_to_data(viewer.dims.point)[0]))
    _, rows, cols = body_box(np.asarray(image.data), slices=[z])
    centre, half = visible_field(viewer)
    corners = [
        image.data_to_world((z, r, c))[1:]
        for r in (rows.start, rows.stop - 1)
        for c in (cols.start, cols.stop - 1)
    ]
    assert all((np.abs(np.asarray(corner) - centre) <= half).all() for corner in corners)  # all of the body
    body_mm = np.array([rows.stop - rows.start, cols.stop - cols.start]) * np.abs(image.scale[1:])
    assert (body_mm / (2 * half)).max() > 0.85  # and it fills the canvas (napari's own view: about 1/5)


def test_organ_outlines_and_the_disagreement_overlay(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    heat = viewer.layers[disagreement_layer_name(image)]
    outline = viewer.layers[disagreement_outline_name(image)]
    # by default an outline of disagreement >= 0.5 over the CT, the heat map hidden
    assert outline.visible and not heat.visible and outline.contour == 1
    np.testing.assert_array_equal(np.asarray(outline.data) > 0, np.asarray(heat.data) >= 128)
    order = [layer.name for layer in viewer.layers]
    assert order.index(heat.name) < order.index(outline.name) < order.index(labels.name)

    display = panel.display
    display.labels_style.setCurrentText(OUTLINES)
    assert labels.contour == 1 and labels.opacity == 1.0
    display.disagreement_style.setCurrentText(HEAT_MAP)
    assert heat.visible and not outline.visible
    display.disagreement_style.setCurrentText(OFF)
    assert not heat.visible and not outline.visible
    assert viewer.layers.selection.active.name == labels.name  # the brush stays on the labels


def test_the_review_box_leaves_the_regions_edge_voxels_uncovered(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    region = panel.review.state.current()
    focus = viewer.layers[focus_layer_name(image)]
    rectangle = np.asarray(focus.data[0])[:, -2:]  # (y, x) voxel coordinates of its corners
    half_edge = np.max(focus.edge_width) / 2
    _, y_range, x_range = region.bbox
    assert rectangle[:, 0].min() + half_edge < y_range.start - 0.5  # the line stays outside the voxels
    assert rectangle[:, 0].max() - half_edge > y_range.stop - 0.5
    assert rectangle[:, 1].min() + half_edge < x_range.start - 0.5
    assert rectangle[:, 1].max() - half_edge > x_range.stop - 0.5
