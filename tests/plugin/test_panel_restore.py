"""Restore gives back exactly what the user left: colours, maps, profile, queue and the active labels layer.

The user opens the CT first and docks the panel afterwards (Plugins > napari-cgs > CGS): the
session is then restored while the panel is still being built.
"""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest
from qtpy.QtWidgets import QApplication

from cgs_engine.checkpoint import load_checkpoint
from napari_cgs.panel.fit import plain
from napari_cgs.panel.prediction_layers import (
    disagreement_layer_name,
    labels_layer_name,
    specialist_layer_name,
)

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def left_session(qtbot, viewer_and_panel, sample_slab_path):
    """A review left half-way: pre-segmented, one region accepted, one skipped, a stroke painted."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    assert len(result.regions) >= 3
    panel.review.accept()
    panel.review.skip()
    labels = viewer.layers[labels_layer_name(image)]
    labels.brush_size = 3
    labels.paint((4, 50, 50), 5)
    panel.autosave.save_now(wait=True)
    left = {
        "labels": np.array(labels.data),
        "mask": panel.review_mask().copy(),
        "status": dict(panel.review.state.status),
        "position": panel.review.state.position,
        "maps": {layer.name: np.array(layer.data) for layer in map_layers(viewer, image, panel.class_names)},
        "profile": panel.queue.profile.profile.copy(),
    }
    panel.autosave.stop()
    viewer.layers.clear()
    return left


def map_layers(viewer, image, class_names):
    names = [specialist_layer_name(image, name) for name in class_names[1:]]
    names.append(disagreement_layer_name(image))
    return [viewer.layers[name] for name in names if name in viewer.layers]


def test_restore_when_the_ct_is_opened_before_the_panel_is_docked(
    make_napari_viewer, tiny_checkpoint, sample_slab_path, left_session
):
    viewer = make_napari_viewer()
    image = fx.open_image(viewer, sample_slab_path)  # first the CT ...
    panel = fx.dock_panel(viewer)  # ... then the panel: the session comes back while it is built
    QApplication.processEvents()
    labels = viewer.layers[labels_layer_name(image)]
    np.testing.assert_array_equal(labels.data, left_session["labels"])

    # the colours of the model that made the labels (Brainstem (230, 25, 75), not napari's palette)
    colours = load_checkpoint(tiny_checkpoint).class_colors
    for class_id in range(1, len(colours)):
        np.testing.assert_allclose(
            labels.colormap.map(class_id)[:3], np.array(colours[class_id]) / 255, atol=1e-6
        )
    section = panel.correct_section
    first = section.organ_choice.itemIcon(0).pixmap(8, 8).toImage().pixelColor(4, 4)
    assert (first.red(), first.green(), first.blue()) == tuple(colours[1])

    # the maps, the slice profile and the specialists' buttons
    restored_maps = {
        layer.name: np.asarray(layer.data) for layer in map_layers(viewer, image, panel.class_names)
    }
    assert restored_maps.keys() == left_session["maps"].keys()
    for name, data in left_session["maps"].items():
        np.testing.assert_array_equal(restored_maps[name], data, err_msg=name)
    np.testing.assert_allclose(panel.queue.profile.profile, left_session["profile"])
    assert section.take_button.isEnabled() and section.back_button.isEnabled()

    # the queue as it was left, and the brush works on the labels at once
    state = panel.review.state
    assert dict(state.status) == left_session["status"] and state.position == left_session["position"]
    np.testing.assert_array_equal(panel.review_mask(), left_session["mask"])
    assert viewer.layers.selection.active is not None
    assert viewer.layers.selection.active.name == labels.name
    assert "Restored" in plain(panel.status_label.text())
    assert "Choose a model" not in panel.status_label.text()
    panel.autosave.stop()


def test_restore_into_an_open_panel_gives_back_the_same(
    make_napari_viewer, tiny_checkpoint, sample_slab_path, left_session
):
    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)
    panel.load_checkpoint(tiny_checkpoint)
    image = fx.open_image(viewer, sample_slab_path)
    QApplication.processEvents()
    np.testing.assert_array_equal(viewer.layers[labels_layer_name(image)].data, left_session["labels"])
    assert {layer.name for layer in map_layers(viewer, image, panel.class_names)} == left_session[
        "maps"
    ].keys()
    assert viewer.layers.selection.active.name == labels_layer_name(image)
    assert panel.review.state.position == left_session["position"]
    panel.autosave.stop()


def test_undo_right_after_a_restore_cannot_empty_the_saved_review(
    make_napari_viewer, tiny_checkpoint, sample_slab_path, left_session
):
    """The restore was an undo step: one Ctrl+Z too many emptied the layer, and the autosave then
    wrote the empty labels over the session (the review mask still saying 'edited' there)."""
    from cgs_engine.review import load_session, session_path_for

    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)
    panel.load_checkpoint(tiny_checkpoint)
    image = fx.open_image(viewer, sample_slab_path)
    QApplication.processEvents()
    labels = viewer.layers[labels_layer_name(image)]
    np.testing.assert_array_equal(labels.data, left_session["labels"])
    labels.undo()
    np.testing.assert_array_equal(labels.data, left_session["labels"])
    panel.autosave.save_now(wait=True)
    saved = load_session(session_path_for(sample_slab_path))
    np.testing.assert_array_equal(saved.labels, left_session["labels"])
    np.testing.assert_array_equal(saved.review_state.review_mask, left_session["mask"])
    # a stroke after the restore is undone as before
    labels.brush_size = 1
    labels.paint((2, 10, 10), 4)
    labels.undo()
    np.testing.assert_array_equal(labels.data, left_session["labels"])
    # a restore that replaced other labels on screen stays one Ctrl+Z away
    labels.paint((2, 10, 10), 4)
    panel.stroke_timer.stop()  # not saved yet: the session still holds the labels without it
    panel.autosave.timer.stop()
    strokes = np.array(labels.data)
    assert panel.restore_session() is not None
    np.testing.assert_array_equal(labels.data, left_session["labels"])
    labels.undo()
    np.testing.assert_array_equal(labels.data, strokes)
    panel.autosave.stop()


def test_a_labels_file_saved_from_the_viewer_is_never_taken_for_the_sessions_labels(
    qtbot, make_napari_viewer, tiny_checkpoint, viewer_and_panel, sample_slab_path
):
    """File > Save Selected Layers names the labels file after the layer, "<image> labels". Opened
    with the scan the next day, the panel took it for its own labels layer: the strokes made after
    it was saved vanished from the screen, and the next autosave wrote them back to the old labels
    while the review mask still marked them as the user's edits."""
    from cgs_engine.review import load_session, session_path_for

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    labels.brush_size = 3
    labels.paint((4, 50, 50), 3)
    saved_file = sample_slab_path.parent / f"{labels.name}.nii.gz"
    labels.save(str(saved_file), plugin="napari-cgs")
    labels.paint((6, 30, 30), 5)  # the later stroke
    panel.autosave.save_now(wait=True)
    work, mask = np.array(labels.data), panel.review_mask().copy()
    panel.autosave.stop()
    viewer.layers.clear()

    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)
    panel.load_checkpoint(tiny_checkpoint)
    opened = fx.open_image(viewer, saved_file)  # the file dialog lists it first
    image = fx.open_image(viewer, sample_slab_path)
    QApplication.processEvents()
    assert panel.labels_layer is not opened
    np.testing.assert_array_equal(panel.labels_layer.data, work)
    panel.autosave.save_now(wait=True)
    saved = load_session(session_path_for(sample_slab_path))
    np.testing.assert_array_equal(saved.labels, work)
    np.testing.assert_array_equal(saved.review_state.review_mask, mask)
    # closing the scan leaves the file the user opened alone: it is not one of the panel's layers
    viewer.layers.remove(image)
    QApplication.processEvents()
    assert opened in viewer.layers and opened.name == f"{labels.name}"
    panel.autosave.stop()
