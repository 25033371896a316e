"""The CGS panel: model choice, pre-segmentation of the bundled CT, layers, undo, re-run, cancel."""

from __future__ import annotations

import time

import numpy as np
import panel_fixtures as fx
import pytest
from qtpy.QtWidgets import QAbstractButton, QComboBox

import napari_cgs.panel.dock as panel_module
from cgs_engine.infer.predictor import Predictor
from cgs_engine.review.state import EDITED
from napari_cgs._layers import same_layer
from napari_cgs._sample_data import SAMPLE_CLASS_NAMES
from napari_cgs.panel import dialogs
from napari_cgs.panel.display import OUTLINE, disagreement_outline_name
from napari_cgs.panel.dock import NO_MODEL_HINT, CGSPanel
from napari_cgs.panel.fit import plain
from napari_cgs.panel.prediction_layers import (
    disagreement_layer_name,
    labels_layer_name,
    specialist_layer_name,
)

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

# Fixtures shared with the other panel test modules (pytest finds them as module globals).
tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def test_panel_is_a_registered_widget_with_tooltips_everywhere(make_napari_viewer):
    viewer = make_napari_viewer()
    _, panel = viewer.window.add_plugin_dock_widget("napari-cgs", "CGS")
    assert isinstance(panel, CGSPanel)
    controls = panel.findChildren(QAbstractButton) + panel.findChildren(QComboBox)
    assert len(controls) >= 9
    untipped = [c.text() if hasattr(c, "text") else type(c).__name__ for c in controls if not c.toolTip()]
    assert not untipped, f"controls without a tooltip: {untipped}"
    # It starts on the bundled default model, ready to run.
    assert panel.checkpoint.class_names == list(SAMPLE_CLASS_NAMES)
    assert panel.model_info.text().startswith("7 organs: Brainstem, SpinalCord")
    assert "method cgs · best validation Dice 69." in panel.model_info.text()
    assert panel.run_button.isEnabled()
    panel.autosave.stop()


def test_without_a_bundled_model_the_panel_says_what_to_do(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setattr(panel_module, "BUNDLED_MODEL", tmp_path / "absent.pt")
    panel = fx.dock_panel(make_napari_viewer())
    assert panel.checkpoint is None and panel.model_info.text() == NO_MODEL_HINT
    assert not panel.run_button.isEnabled()
    panel.autosave.stop()


def test_model_details_and_runtime(viewer_and_panel):
    _, panel = viewer_and_panel
    info = panel.model_info.text()
    assert "7 organs" in info and "Brainstem" in info and "Mandible" in info
    assert "method cgs" in info and "Trained 20" in info
    assert panel.runtime_label.text().startswith("Runs on: cpu (")
    assert panel.run_button.isEnabled()


def test_presegment_sample_layers_colours_names_and_one_step_undo(qtbot, viewer_and_panel, home_sessions):
    viewer, panel = viewer_and_panel
    (image,) = viewer.open_sample(*fx.SAMPLE_KEY)
    result = fx.presegment(qtbot, panel, image)
    assert result is not None

    labels = viewer.layers[labels_layer_name(image)]
    np.testing.assert_array_equal(labels.data, result.prediction.labels.array)
    names = result.prediction.class_names
    derived = [labels, viewer.layers[disagreement_layer_name(image)]]
    derived += [viewer.layers[specialist_layer_name(image, name)] for name in names[1:]]
    for layer in derived:
        assert layer.data.shape == image.data.shape
        fx.assert_same_transforms(layer, image)

    # Fixed class colours from the checkpoint, class names in the features table (status bar).
    colours = panel.checkpoint.class_colors
    for class_id in range(1, len(names)):
        expected = np.array(colours[class_id]) / 255
        np.testing.assert_allclose(labels.colormap.map(class_id)[:3], expected, atol=1e-6)
    assert labels.colormap.map(0)[3] == 0
    assert list(labels.features["class"]) == names
    voxel = (64, 64, 64)
    status = labels.get_status(image.data_to_world(voxel), world=True)
    assert f"class: {names[labels.data[voxel]]}" in str(status)

    # Maps: specialists hidden, additive; disagreement kept with a perceptual map but shown by default
    # as an outline (the display's first choice: the CT stays readable); labels on top.
    specialist = viewer.layers[specialist_layer_name(image, "Mandible")]
    assert not specialist.visible and specialist.blending == "additive"
    disagreement = viewer.layers[disagreement_layer_name(image)]
    assert panel.display.disagreement_style.currentText() == OUTLINE
    assert not disagreement.visible and disagreement.colormap.name == "inferno"
    assert viewer.layers[disagreement_outline_name(image)].visible
    order = [layer.name for layer in viewer.layers]
    assert order.index(image.name) < order.index(disagreement.name) < order.index(labels.name)

    # Ctrl+Z: one undo step takes the whole prediction away.
    labels.undo()
    assert not labels.data.any()
    labels.redo()
    np.testing.assert_array_equal(labels.data, result.prediction.labels.array)


def presegment_and_paint(qtbot, viewer, panel, path, painted=(5, 40, 60)):
    """Pre-segment the image at ``path`` and paint one voxel with a label the model did not give it."""
    image = fx.open_image(viewer, path)
    first = fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    new_label = 7 if first.prediction.labels.array[painted] != 7 else 6
    labels.selected_label, labels.brush_size = new_label, 1
    labels.paint(painted, new_label)  # the user's brush: a paint event with a history item
    return image, first, labels, new_label


def test_rerun_fills_only_untouched_voxels_by_default(qtbot, viewer_and_panel, sample_slab_path, monkeypatch):
    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, first, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    assert labels.data[painted] == new_label
    assert panel.review_mask()[painted] == EDITED and np.count_nonzero(panel.review_mask()) == 1

    labels.undo()  # an undone stroke is no edit any more
    assert labels.data[painted] == first.prediction.labels.array[painted]
    assert not panel.review_mask().any()
    labels.redo()
    assert panel.review_mask()[painted] == EDITED

    second = fx.presegment(qtbot, panel, image)
    assert labels.data[painted] == new_label  # the user's voxel survived
    mask = panel.review_mask()
    assert np.count_nonzero(mask) == 1 and mask[painted] == EDITED  # a re-run marks nothing as reviewed
    untouched = mask == 0
    np.testing.assert_array_equal(labels.data[untouched], second.prediction.labels.array[untouched])
    # the stroke undone after the re-run is no edit any more either (it stayed 'yours' before)
    undone = 0
    while labels.data[painted] == new_label and undone < 3:
        labels.undo()
        undone += 1
    assert labels.data[painted] == first.prediction.labels.array[painted]
    assert not panel.review_mask().any()
    for _ in range(undone):
        labels.redo()
    assert labels.data[painted] == new_label and panel.review_mask()[painted] == EDITED

    # Replace everything asks first when it discards reviewed voxels: No keeps them, not run
    asked = []
    monkeypatch.setattr(dialogs, "confirm_discard_review", lambda *args: asked.append(args[1:]) or False)
    panel.replace_button.setChecked(True)
    assert panel.presegment() is None and asked == [(image.name, 1, 0)]
    assert labels.data[painted] == new_label and panel.review_mask()[painted] == EDITED
    assert "Not run: your review is kept" in panel.status_label.text()
    # Yes replaces it; Ctrl+Z brought the labels back without their marks (the stroke then counted
    # as the model's, never trained on), so it cannot go back past this run
    monkeypatch.setattr(dialogs, "confirm_discard_review", lambda *args: True)
    third = fx.presegment(qtbot, panel, image)
    np.testing.assert_array_equal(labels.data, third.prediction.labels.array)
    assert "Ctrl+Z cannot go back past this run" in panel.status_label.text()
    labels.undo()
    np.testing.assert_array_equal(labels.data, third.prediction.labels.array)
    assert not panel.review_mask().any()


def test_rerun_after_the_labels_layer_was_removed_keeps_the_users_work(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    """Removing the labels layer and pre-segmenting again wiped every stroke and accept, without a
    question, and the session then saved the emptied state."""
    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    panel.review.accept()
    accepted = int((panel.review_mask() == 1).sum())
    assert accepted > 0
    viewer.layers.remove(labels)

    second = fx.presegment(qtbot, panel, image)
    again = viewer.layers[labels_layer_name(image)]
    assert again.data[painted] == new_label
    mask = panel.review_mask()
    assert mask[painted] == EDITED and int((mask == 1).sum()) == accepted
    untouched = mask == 0
    np.testing.assert_array_equal(again.data[untouched], second.prediction.labels.array[untouched])
    assert "your edits kept" in panel.status_label.text()

    monkeypatch.setattr(dialogs, "confirm_discard_review", lambda *args: True)
    panel.replace_button.setChecked(True)  # asked for: everything replaced
    viewer.layers.remove(again)
    third = fx.presegment(qtbot, panel, image)
    np.testing.assert_array_equal(viewer.layers[labels_layer_name(image)].data, third.prediction.labels.array)


def test_an_image_removed_while_it_is_presegmented_ends_the_run_quietly(
    qtbot, viewer_and_panel, sample_slab_path
):
    """Its result raised 'is not a valid choice' and the status stayed at 'Pre-segmenting…'."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    panel.select_image(image)
    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS) as blocker:
        assert panel.presegment() is not None
        viewer.layers.remove(image)
    fx.wait_until_finished(panel)
    assert blocker.args == [None]
    assert "was closed during its pre-segmentation" in panel.status_label.text()
    assert labels_layer_name(image) not in viewer.layers and panel.run_button.isEnabled()

    # the same file removed and added back during a re-run: afterwards its session comes back
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    panel.review.accept()
    assert panel.review.state.counts()["accepted"] == 1
    panel.autosave.flush()
    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS):
        assert panel.presegment() is not None
        viewer.layers.remove(image)
        back = fx.open_image(viewer, sample_slab_path)
    fx.wait_until_finished(panel)
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, back))
    assert panel.review.state.counts()["accepted"] == 1


def test_an_image_closed_and_opened_again_comes_back_in_one_set_of_layers(
    qtbot, viewer_and_panel, sample_slab_path
):
    """Its labels stayed editable but untracked (strokes there were never saved), and opening the
    file again restored into a second "… labels [1]" beside the old maps."""
    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    panel.review.accept()
    layers_before = len(viewer.layers)
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: len(viewer.layers) == 0)  # its layers went with it: its session has them
    assert "was closed: its review is saved" in plain(panel.status_label.text())

    back = fx.open_image(viewer, sample_slab_path)
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, back))
    restored = viewer.layers[labels_layer_name(back)]
    assert restored.editable and restored.data[painted] == new_label
    assert panel.review.state.counts()["accepted"] == 1 and panel.review_mask()[painted] == EDITED
    assert len(viewer.layers) == layers_before  # one set again
    assert not any(layer.name.endswith(("[1]", "(closed)")) for layer in viewer.layers)


def test_an_image_closed_whose_review_could_not_be_saved_leaves_its_labels_read_only(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    import napari_cgs.panel.session as session_module
    from cgs_engine.review.session import SessionError

    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    panel.autosave.save_now(wait=True)  # a session on disk, before the disk fills up

    def full_disk(*args, **kwargs):
        raise SessionError("No space left on device")

    monkeypatch.setattr(session_module, "save_session", full_disk)
    labels.paint((6, 30, 30), new_label)  # not saved: the disk is full
    name = labels.name
    viewer.layers.remove(image)
    qtbot.wait(50)
    assert labels in viewer.layers and not labels.editable and labels.data[painted] == new_label
    assert labels.name == f"{name} (image closed, read-only)"
    assert "could not be saved" in plain(panel.status_label.text())

    viewer.layers.append(image)  # the same image back: its session goes into a new labels layer
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, image))
    assert not same_layer(panel.labels_layer, labels) and labels.data[6, 30, 30] == new_label


def test_labels_painted_while_another_image_was_followed_are_followed_and_saved(
    qtbot, viewer_and_panel, sample_slab_path
):
    """Switched away, painted on the first image's labels, and back: the panel offered the session
    but did not follow the labels on screen, so those strokes and the next ones were in no session
    (closing the image or napari lost them). Now the stroke makes the panel follow that image, and
    its session holds every stroke when the image is closed."""
    from cgs_engine.review import load_session, session_path_for

    viewer, panel = viewer_and_panel
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path)
    panel.autosave.flush()
    other_path = sample_slab_path.with_name("other.nii.gz")
    other_path.write_bytes(sample_slab_path.read_bytes())
    other = fx.open_image(viewer, other_path)
    panel.select_image(other)
    labels.paint((6, 20, 20), new_label)  # painted while another image is followed
    qtbot.waitUntil(lambda: same_layer(panel.labels_layer, labels), timeout=5_000)
    assert same_layer(panel.image_layer, image)
    labels.paint((6, 30, 30), new_label)
    expected = np.array(labels.data)
    viewer.layers.remove(image)
    qtbot.wait(50)
    assert "its review is saved" in plain(panel.status_label.text())
    np.testing.assert_array_equal(load_session(session_path_for(sample_slab_path)).labels, expected)


def test_every_layer_selected_and_deleted_at_once(qtbot, viewer_and_panel, sample_slab_path):
    """napari deletes a selection one layer after the other: the layers the panel removes with their
    image must not be gone before napari gets to them."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    viewer.layers.select_all()
    viewer.layers.remove_selected()
    qtbot.wait(50)
    assert len(viewer.layers) == 0 and panel.review.state is None


def test_the_same_image_layer_added_back_gets_its_review_again(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: labels not in viewer.layers)
    viewer.layers.append(image)
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, image))
    again = viewer.layers[labels_layer_name(image)]
    assert again.editable and again.data[painted] == new_label and same_layer(panel.labels_layer, again)
    again.paint((6, 30, 30), new_label)  # tracked: the stroke counts as the user's
    assert panel.review_mask()[6, 30, 30] == EDITED


def test_a_result_that_arrives_after_the_panel_was_deleted_is_dropped(
    qapp, tiny_checkpoint, sample_slab_path
):
    """Closing the viewer during a run deletes the panel's widgets; showing the result then raised
    'wrapped C/C++ object of type QPushButton has been deleted'."""
    from qtpy.QtWidgets import QPushButton

    from cgs_engine.io import read_volume
    from napari_cgs.panel.workers import PredictionJob, qt_object_deleted

    owner = QPushButton()
    answers = []
    job = PredictionJob(
        lambda: Predictor(tiny_checkpoint, device="cpu"),
        read_volume(sample_slab_path),
        "test",
        on_done=answers.append,
        on_error=answers.append,
        owner=owner,
    )
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication

    owner.deleteLater()
    QApplication.sendPostedEvents(owner, QEvent.Type.DeferredDelete.value)  # deleted here
    assert qt_object_deleted(owner)
    job.start()
    deadline = time.monotonic() + 60
    while not job.finished and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    assert job.finished and answers == []


class SlowPredictor(Predictor):
    """The real predictor, one slice per batch and a pause after each, so a test can cancel mid-run."""

    def predict(self, volume, maps=True, progress=None, cancel=None):
        def slow_progress(done, total):
            self.batches_done = done
            time.sleep(0.1)
            if progress is not None:
                progress(done, total)

        return super().predict(volume, maps=maps, progress=slow_progress, cancel=cancel)


def test_cancel_really_stops_a_running_presegmentation(qtbot, viewer_and_panel, tiny_checkpoint):
    viewer, panel = viewer_and_panel
    (image,) = viewer.open_sample(*fx.SAMPLE_KEY)
    slow = SlowPredictor(tiny_checkpoint, device="cpu", batch_size=1)
    slow.batches_done = 0
    panel.set_predictor(slow)
    panel.select_image(image)
    with qtbot.waitSignal(panel.prediction_finished, timeout=60_000) as blocker:
        job = panel.presegment()
        qtbot.waitUntil(lambda: slow.batches_done >= 2, timeout=30_000)
        # Progress reaches napari's activity dock through a napari progress bar, one step per slice.
        qtbot.waitUntil(lambda: job.progress_bar.n >= 2, timeout=10_000)
        assert job.progress_bar.total == image.data.shape[0]
        assert panel.cancel_button.isEnabled()
        panel.cancel()
    fx.wait_until_finished(panel)
    assert blocker.args == [None]  # the Cancelled path: no result
    assert job.finished and slow.batches_done < image.data.shape[0]
    assert labels_layer_name(image) not in viewer.layers  # nothing written
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert "Cancelled" in panel.status_label.text()


def test_closing_the_panel_unbinds_its_keys(viewer_and_panel):
    from napari.utils.key_bindings import coerce_keybinding

    from napari_cgs.panel.review_queue import KEY_NEXT

    viewer, panel = viewer_and_panel
    bound = lambda: str(coerce_keybinding(KEY_NEXT)) in {str(key) for key in viewer.keymap}  # noqa: E731
    assert bound()
    panel.close()
    assert not bound()
    assert not panel.autosave.timer.isActive()


def test_one_images_maps_never_overwrite_anothers_after_their_names_were_swapped(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path
):
    """Map layers were refreshed by name: with two scans' names swapped, the second scan's
    pre-segmentation wrote its maps into the first scan's map layers."""
    import shutil

    from napari_cgs.panel.prediction_layers import disagreement_layer_name

    viewer, panel = viewer_and_panel
    first = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, first)
    first_heat = viewer.layers[disagreement_layer_name(first)]
    before = np.array(first_heat.data)
    other_path = tmp_path / "other.nii.gz"
    shutil.copy(sample_slab_path, other_path)
    second = fx.open_image(viewer, other_path)
    second.data = np.ascontiguousarray(np.asarray(second.data)[:, ::-1])  # another scan, same grid
    first_name, second_name = first.name, second.name
    first.name, second.name = "swap", first_name
    first.name = second_name
    fx.presegment(qtbot, panel, second)
    assert first_heat in viewer.layers
    np.testing.assert_array_equal(first_heat.data, before)


def test_a_renamed_image_takes_the_layers_made_for_it_along(qtbot, viewer_and_panel, sample_slab_path):
    """Under the old name they stayed beside those a re-run made: 24 layers instead of 13, and two
    magenta review outlines on screen."""
    from napari_cgs.panel.prediction_layers import focus_layer_name

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    panel.review.show_current()
    before = [layer.name for layer in viewer.layers]
    old = image.name
    image.name = "patient 7 CT"
    after = [layer.name for layer in viewer.layers]
    assert len(after) == len(before)
    new = "patient 7 CT"
    assert after == [new + name[len(old) :] if name.startswith(old) else name for name in before]
    assert focus_layer_name(image) in viewer.layers and labels_layer_name(image) in viewer.layers

    fx.presegment(qtbot, panel, image)
    assert len(viewer.layers) == len(before)
    assert not [layer.name for layer in viewer.layers if layer.name.startswith(old)]


def test_a_backup_copy_of_the_labels_is_never_taken_for_them(qtbot, viewer_and_panel, sample_slab_path):
    """napari's Duplicate Layer copies the metadata, the image's layer id included: a copy kept as a
    backup below the original was taken by Add as corrected and by a re-run in its place."""
    from napari_cgs.panel.prediction_layers import find_labels_layer

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    backup = viewer.add_labels(np.array(labels.data), name="backup", metadata=dict(labels.metadata))
    viewer.layers.move(viewer.layers.index(backup), viewer.layers.index(labels))  # dragged below it
    assert viewer.layers.index(backup) < viewer.layers.index(labels)
    assert same_layer(find_labels_layer(viewer, image), labels)
    labels.brush_size = 1
    labels.paint((5, 40, 60), 6)
    fx.presegment(qtbot, panel, image)  # a re-run goes on in the labels being edited
    assert same_layer(panel.labels_layer, labels) and labels.data[5, 40, 60] == 6
    assert panel.review_mask()[5, 40, 60] == EDITED


def test_a_rerun_with_a_model_that_numbers_organs_otherwise_keeps_your_organs(
    qtbot, viewer_and_panel, sample_slab_path, tiny_checkpoint, tmp_path
):
    """Kept by their ids, strokes drawn as Mandible (7) became the other model's class 7 (Brainstem)
    in the panel, the session and the exported class table."""
    from cgs_engine.checkpoint import load_checkpoint, save_checkpoint

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    mandible = panel.class_names.index("Mandible")
    labels.brush_size = 1
    labels.paint((5, 40, 60), mandible)
    other = load_checkpoint(tiny_checkpoint)
    names = other.class_names
    other.class_names = [names[0], *names[1:][::-1]]  # the same organs, numbered the other way round
    other.class_colors = [other.class_colors[0], *other.class_colors[1:][::-1]] if other.class_colors else []
    other.class_table = []
    panel.load_checkpoint(save_checkpoint(other, tmp_path / "reversed.pt"))
    fx.presegment(qtbot, panel, image)
    assert panel.class_names[labels.data[5, 40, 60]] == "Mandible"
    assert labels.data[5, 40, 60] == panel.class_names.index("Mandible") != mandible
    assert "renumbered to its organs" in panel.status_label.text()
    assert panel.review_mask()[5, 40, 60] == EDITED
    # no undo back past it: the old ids would show under the new model's names
    renumbered = np.array(labels.data)
    labels.undo()
    np.testing.assert_array_equal(np.asarray(labels.data), renumbered)
    assert "cannot go back past this run" in panel.status_label.text()


def test_a_rerun_that_lands_during_a_stroke_waits_for_its_end(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    """napari reports a stroke only when the mouse is released: a result written meanwhile took the
    stroke's first voxels back, with no protection from 'fill only voxels I have not touched'."""
    from napari_cgs.panel import workers

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    labels.brush_size = 3
    run_goes_on = fx.held(monkeypatch, workers, "run_prediction")
    target = getattr(labels, "__wrapped__", labels)
    assert panel.presegment() is not None
    target._begin_stroke()  # the mouse button goes down (napari's own stroke grouping)
    labels.paint((4, 30, 30), 6)
    painted = np.asarray(labels.data) == 6
    run_goes_on.set()
    qtbot.wait(1_500)  # the result arrives while the button is still held
    assert (np.asarray(labels.data)[painted] == 6).all() and panel.job is not None
    # it still counts as running: no second run, and no other image's session takes it meanwhile
    assert panel.running() and panel.presegment() is panel.job
    labels.paint((4, 30, 40), 6)
    with qtbot.waitSignal(panel.prediction_finished, timeout=10_000):
        target._commit_stroke()  # the button is released: one stroke, reported now; then it lands
    assert "your edits kept" in panel.status_label.text()
    stroke = np.asarray(labels.data) == 6
    assert stroke[painted].all() and (panel.review_mask()[stroke] == EDITED).all()


def test_cancel_while_a_result_waits_for_a_stroke_writes_nothing(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    from napari_cgs.panel import workers

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    run_goes_on = fx.held(monkeypatch, workers, "run_prediction")
    target = getattr(labels, "__wrapped__", labels)
    assert panel.presegment() is not None
    target._begin_stroke()
    labels.paint((4, 30, 30), 6)
    before = np.array(labels.data)
    run_goes_on.set()
    qtbot.waitUntil(lambda: panel.job.finished, timeout=60_000)
    panel.cancel()
    with qtbot.waitSignal(panel.prediction_finished, timeout=10_000):
        target._commit_stroke()
    assert "Cancelled" in panel.status_label.text() and not panel.running()
    np.testing.assert_array_equal(np.asarray(labels.data), before)


def test_an_image_closed_after_another_was_chosen_takes_its_saved_layers_along(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path
):
    """The panel had moved on to another scan; the first one, closed, left its labels editable:
    strokes there were saved nowhere, and opening it again restored into "… labels [1]"."""
    import shutil

    viewer, panel = viewer_and_panel
    painted = (5, 40, 60)
    image, _, labels, new_label = presegment_and_paint(qtbot, viewer, panel, sample_slab_path, painted)
    other = fx.open_image(viewer, shutil.copy(sample_slab_path, tmp_path / "other_scan.nii.gz"))
    panel.select_image(other)
    qtbot.waitUntil(lambda: same_layer(panel._followed, other))
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: labels not in viewer.layers)
    assert not any(layer.name.startswith(image.name) for layer in viewer.layers)
    assert "was closed: its review is saved" in plain(panel.status_label.text())
    panel.select_image(fx.open_image(viewer, sample_slab_path))
    back = panel.image_layer
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, back))
    restored = viewer.layers[labels_layer_name(back)]
    assert restored.editable and restored.data[painted] == new_label
    assert not any(layer.name.endswith(("[1]", "(closed)")) for layer in viewer.layers)


def test_an_image_never_saved_closed_after_another_was_chosen_leaves_its_labels_read_only(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path, monkeypatch
):
    import shutil

    viewer, panel = viewer_and_panel
    image, _, labels, _ = presegment_and_paint(qtbot, viewer, panel, sample_slab_path)
    panel.autosave.flush()
    panel.autosave.layer_of.clear()  # as if no save of it had ever reached the disk
    other = fx.open_image(viewer, shutil.copy(sample_slab_path, tmp_path / "other_scan.nii.gz"))
    monkeypatch.setattr(panel.autosave, "save_if_changed", lambda wait=False: None)
    panel.select_image(other)
    qtbot.waitUntil(lambda: same_layer(panel._followed, other))
    viewer.layers.remove(image)
    qtbot.wait(50)
    assert (
        labels in viewer.layers and not labels.editable and labels.name.endswith("(image closed, read-only)")
    )
    assert "its review was never saved" in plain(panel.status_label.text())
