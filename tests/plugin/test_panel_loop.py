"""The whole correction loop as a user runs it, with the panel docked from the Plugins menu.

Open an image, pre-segment, paint, accept a region, close napari, reopen, add the image as
corrected, retrain and activate: the paint survives the close, the review mask tells edited
voxels (2) from accepted ones (1), and the retrain judges the new model on the edited voxels.
"""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest
from test_panel_retrain import TINY_TRAIN, add_correction, wait_for_end

from cgs_engine.project import Project
from cgs_engine.review.state import ACCEPTED, EDITED
from napari_cgs.panel.prediction_layers import labels_layer_name

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

home_sessions = fx.home_sessions
sample_slab_path = fx.sample_slab_path
tiny_checkpoint = fx.tiny_checkpoint


def open_panel(make_napari_viewer, model):
    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)
    panel.load_checkpoint(model)
    return viewer, panel


def close_like_the_user(viewer) -> None:
    """Close the main window (its close button), then do napari's remaining bookkeeping.

    Window.close() would tear the viewer down first; the fixture must not close it a second time.
    """
    window = viewer.window
    window._qt_window.close()
    window._teardown()
    del window._qt_window


def test_correct_close_reopen_add_retrain_activate(
    qtbot, make_napari_viewer, tiny_checkpoint, sample_slab_path, home_sessions, tmp_path
):
    viewer, panel = open_panel(make_napari_viewer, tiny_checkpoint)
    image = fx.open_image(viewer, sample_slab_path)
    assert fx.presegment(qtbot, panel, image) is not None
    labels = viewer.layers[labels_layer_name(image)]

    panel.review.accept()  # the first region of the queue: its voxels become ACCEPTED
    accepted = panel.review_mask() == ACCEPTED
    assert accepted.any() and not (panel.review_mask() == EDITED).any()

    labels.brush_size = 7
    labels.selected_label = 7
    z = 6
    for point in [(z, 60, 40), (z, 62, 44)]:
        labels.paint(point, 7)  # two strokes of the user's brush
    two_strokes = panel.review_mask() == EDITED
    labels.paint((z, 40, 70), 7)  # a third one, elsewhere, then taken back
    assert (panel.review_mask() == EDITED).sum() > two_strokes.sum()
    labels.undo()
    edited = panel.review_mask() == EDITED
    np.testing.assert_array_equal(edited, two_strokes)
    assert edited.any() and set(np.flatnonzero(edited.any(axis=(1, 2)))) == {z}
    painted = np.array(labels.data, copy=True)

    # Close the main window as the user does (its close button), before the stroke autosave
    # fired. (viewer.close() would remove the layers first, which saves by another path.)
    close_like_the_user(viewer)

    viewer, panel = open_panel(make_napari_viewer, tiny_checkpoint)
    image = fx.open_image(viewer, sample_slab_path)  # the saved session comes back by itself
    labels = viewer.layers[labels_layer_name(image)]
    np.testing.assert_array_equal(labels.data, painted)
    np.testing.assert_array_equal(panel.review_mask() == EDITED, edited)
    assert (panel.review_mask() > 0).sum() == (edited | accepted).sum()

    section = panel.retrain_section
    project = section.create_project(tmp_path / "project")
    assert project is not None and project.active_version().id == "v0001"
    project.update_settings(train=TINY_TRAIN)
    info = add_correction(qtbot, section)
    stored = project.read_correction(info.name)
    np.testing.assert_array_equal(stored.review == EDITED, edited)
    np.testing.assert_array_equal(stored.review > 0, edited | accepted)
    assert info.edited_voxels == edited.sum()

    section.start_retrain(iterations=4)
    ended = wait_for_end(qtbot, section)
    assert ended["kind"] == "finished" and ended["version"] == "v0002", ended
    version = Project.open(project.folder).version("v0002")
    # judged on the held-out slices' edited voxels: the block with the user's strokes
    assert version.metrics["heldout"] == [f"{info.name}~heldout"]
    assert version.metrics["new"]["volumes"] == 1
    assert "held-out Dice" in section.status_label.text()
    assert "held-out Dice" not in section.progress_label.text()  # the figure is shown once

    section.select_version("v0002")
    section.activate_button.click()
    assert Project.open(project.folder).active_version().id == "v0002"
    assert panel.model_choice.value == str(version.model_path)
