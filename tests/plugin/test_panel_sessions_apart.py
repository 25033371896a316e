"""Each image's review goes to its own session file: never into another image's.

Found by an audit: choosing scan B while scan A was pre-segmented, then pre-segmenting B, wrote
B's labels into A's session (and reopening A showed B's labels); ct.nii.gz and ct.nrrd in one
folder shared one session file; a session of an image rewritten since was overwritten silently;
an undone stroke stayed in the session."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest
import SimpleITK as sitk

from cgs_engine.review import load_session, session_path_for
from napari_cgs._layers import same_layer
from napari_cgs.panel.dock import STROKE_SAVE_MS
from napari_cgs.panel.fit import plain

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def other_scan(source, target):
    """The slab with other voxels, on the same grid, written as ``target``."""
    image = sitk.ReadImage(str(source))
    changed = sitk.GetImageFromArray(np.flip(sitk.GetArrayFromImage(image), axis=2).copy())
    changed.CopyInformation(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(changed, str(target))
    return target


def two_scans(viewer, panel, slab_path):
    """The slab (A, chosen) and another scan (B) in a folder of its own, both open."""
    image_a = fx.open_image(viewer, slab_path)
    image_b = fx.open_image(viewer, other_scan(slab_path, slab_path.parent / "b" / "ct_b.nii.gz"))
    panel.select_image(image_a)
    return image_a, image_b


def test_an_image_chosen_during_a_presegmentation_gets_its_own_session(
    qtbot, viewer_and_panel, sample_slab_path
):
    viewer, panel = viewer_and_panel
    image_a, image_b = two_scans(viewer, panel, sample_slab_path)
    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS):
        panel.presegment()
        panel.image_choice.value = image_b  # the user looks at the next scan meanwhile
    fx.wait_until_finished(panel)
    # the result is A's: shown on A and saved in A's session; then B, chosen meanwhile, is taken up
    qtbot.waitUntil(lambda: same_layer(panel._followed, image_b))
    assert panel.image_choice.value is image_b
    panel.autosave.flush()
    a_session = session_path_for(sample_slab_path)
    a_labels = load_session(a_session).labels.copy()
    np.testing.assert_array_equal(a_labels, np.asarray(viewer.layers[f"{image_a.name} labels"].data))

    fx.presegment(qtbot, panel)
    panel.autosave.flush()
    assert panel.review.image_layer is image_b
    b_session = load_session(session_path_for(image_b.metadata["cgs_source"]))
    np.testing.assert_array_equal(b_session.labels, np.asarray(viewer.layers[f"{image_b.name} labels"].data))
    np.testing.assert_array_equal(load_session(a_session).labels, a_labels)  # A's is A's


def test_an_image_switched_to_after_a_cancelled_run_saves_into_its_own_session(
    qtbot, viewer_and_panel, sample_slab_path
):
    viewer, panel = viewer_and_panel
    image_a, image_b = two_scans(viewer, panel, sample_slab_path)
    panel.presegment()
    panel.image_choice.value = image_b
    panel.cancel()
    fx.wait_until_finished(panel)
    fx.presegment(qtbot, panel)  # the Image box says B
    panel.autosave.flush()
    assert panel.review.image_layer is image_b
    assert session_path_for(image_b.metadata["cgs_source"]).is_file()
    assert not session_path_for(sample_slab_path).exists()


@pytest.mark.parametrize("other_name", ["ct_slab.nrrd", "rewritten"])
def test_a_session_file_of_other_voxels_is_kept_and_the_panel_says_so(
    qtbot, viewer_and_panel, sample_slab_path, other_name
):
    """Two scans of one name in a folder, or the image rewritten on disk since its review."""
    viewer, panel = viewer_and_panel
    first = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, first)
    panel.autosave.flush()
    usual = session_path_for(sample_slab_path)
    kept = usual.read_bytes()
    if other_name == "rewritten":
        viewer.layers.remove(first)
        path = other_scan(sample_slab_path, sample_slab_path)
    else:
        path = other_scan(sample_slab_path, sample_slab_path.parent / other_name)
    second = fx.open_image(viewer, path)
    panel.select_image(second)
    assert "belongs to other voxels" in plain(panel.session_label.text())
    fx.presegment(qtbot, panel, second)
    panel.autosave.flush()
    assert usual.read_bytes() == kept  # the first review is still there, as it was
    assert (
        panel.autosave.path != usual and load_session(panel.autosave.path).labels.shape == second.data.shape
    )


def test_an_undone_stroke_is_not_brought_back_by_the_session(qtbot, viewer_and_panel, sample_slab_path):
    """napari's Ctrl+Z rewrites the labels without a paint event: the session kept the stroke."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[f"{image.name} labels"]
    before = np.array(labels.data)
    labels.paint((3, 30, 30), 6)
    panel.autosave.save_now(wait=True)
    labels.undo()
    assert panel.autosave.dirty
    panel.autosave.save_now(wait=True)
    np.testing.assert_array_equal(load_session(session_path_for(sample_slab_path)).labels, before)
    labels.redo()
    assert panel.autosave.dirty


@pytest.mark.parametrize("renamed", ["image", "labels"])
def test_renaming_a_layer_keeps_the_review_through_a_rerun(
    qtbot, viewer_and_panel, sample_slab_path, renamed
):
    """A renamed image cleared its review (the Image box was rebuilt without it for a moment) and a
    renamed labels layer was not found by name: a re-run then lost the user's edits."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    labels = panel.labels_layer
    labels.paint((3, 30, 30), 6)
    panel.review.accept()
    edited = np.asarray(labels.data) == 6
    (image if renamed == "image" else labels).name = "Patient 0042 CT"
    assert panel.review.state is not None and panel.tracks_image(image)
    fx.presegment(qtbot, panel, image)  # "fill only voxels I have not touched", the default
    assert panel.labels_layer is labels
    assert (np.asarray(labels.data)[edited] == 6).all()
    assert (panel.review_mask()[edited] == 2).all()
    assert panel.review.state.status[result.regions[0].id] == "accepted"


def test_an_image_chosen_again_is_followed_again(qtbot, viewer_and_panel, sample_slab_path):
    """A, then B, then A again: the panel stopped following A's labels (it offered 'Restore session'),
    which stayed editable, so strokes painted on them went into no session, and a Restore replaced them."""
    from napari_cgs._layers import same_layer
    from napari_cgs.panel.prediction_layers import labels_layer_name

    viewer, panel = viewer_and_panel
    first = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, first)
    labels = viewer.layers[labels_layer_name(first)]
    labels.brush_size = 1
    labels.paint((2, 30, 30), 7)
    fx.open_and_presegment_another(qtbot, viewer, panel, sample_slab_path)
    panel.select_image(first)
    assert same_layer(panel.labels_layer, labels) and panel.review.state is not None
    labels.paint((6, 50, 50), 5)
    assert panel.review_mask()[6, 50, 50] == 2 and panel.review_mask()[2, 30, 30] == 2
    panel.autosave.save_now(wait=True)
    saved = load_session(session_path_for(sample_slab_path))
    assert saved.labels[6, 50, 50] == 5 and saved.labels[2, 30, 30] == 7
    assert saved.review_state.review_mask[6, 50, 50] == 2


def test_strokes_on_an_image_not_followed_go_into_that_images_session(
    qtbot, viewer_and_panel, sample_slab_path
):
    """Found by an audit: a stroke on A's labels while B was chosen went into no session (and the
    next ones neither: choosing A again only offered Restore), and napari closed without them."""
    from napari_cgs.panel.prediction_layers import find_labels_layer

    viewer, panel = viewer_and_panel
    image_a, image_b = two_scans(viewer, panel, sample_slab_path)
    fx.presegment(qtbot, panel, image_a)
    labels_a = find_labels_layer(viewer, image_a)
    panel.image_choice.value = image_b
    fx.presegment(qtbot, panel, image_b)
    panel.autosave.flush()
    a_session = session_path_for(sample_slab_path)
    viewer.layers.selection.active = labels_a
    assert labels_a.data[2, 20, 20] != 3
    labels_a.paint((2, 20, 20), 3)  # A's labels, painted while B is followed
    qtbot.waitUntil(lambda: panel.review.image_layer is image_a, timeout=5_000)
    assert "Now following" in plain(panel.status_label.text())
    panel.autosave.save_now(wait=True)
    saved = load_session(a_session)
    np.testing.assert_array_equal(saved.labels, np.asarray(labels_a.data))
    assert panel.review_mask()[2, 20, 20] == 2 and saved.review_state.review_mask[2, 20, 20] == 2

    # labels changed without a stroke event (a plugin, a script) while B is followed: A chosen again
    # keeps them, counted as edits, instead of only offering to restore the older file over them
    panel.image_choice.value = image_b
    panel.autosave.flush()
    data = np.array(labels_a.data)
    data[3, 10:14, 10:14] = 2
    labels_a.data = data
    panel.image_choice.value = image_a
    np.testing.assert_array_equal(np.asarray(labels_a.data), data)
    assert panel.review.image_layer is image_a and panel.review_mask()[3, 12, 12] == 2
    panel.autosave.flush()
    qtbot.waitUntil(lambda: np.array_equal(load_session(a_session).labels, data), timeout=5_000)


def test_closing_the_dock_with_its_x_shuts_the_panel_down(
    qtbot, viewer_and_panel, sample_slab_path, tiny_checkpoint
):
    """napari takes the panel out of its dock (setParent(None)) and never closes it: the hidden panel
    went on saving this image's session, so a panel opened again from the Plugins menu was diverted
    to a conflict file, and the accept made there was gone on reopening."""
    from qtpy.QtWidgets import QDockWidget

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = panel.labels_layer
    dock = panel.parent()
    while not isinstance(dock, QDockWidget):
        dock = dock.parent()
    viewer.window.remove_dock_widget(dock)  # what the dock's X does
    assert panel._shut_down
    again = fx.dock_panel(viewer)
    again.load_checkpoint(tiny_checkpoint)
    again.select_image(image)
    assert same_layer(again.labels_layer, labels)
    assert again.review.state is not None and again.review.state.current() is not None
    again.review.accept()
    assert (again.review_mask() == 1).any()
    labels.brush_size = 5
    labels.paint((4, 70, 64), 3)
    qtbot.wait(STROKE_SAVE_MS + 600)  # each panel still listening saves the stroke
    again.review.accept()
    again.autosave.save_if_changed(wait=True)
    folder = sample_slab_path.parent
    assert not [p.name for p in folder.iterdir() if "conflict" in p.name]
    saved = load_session(session_path_for(sample_slab_path))
    assert (saved.review_state.review_mask == 1).any() and (saved.labels == 3).any()
    again.close()
