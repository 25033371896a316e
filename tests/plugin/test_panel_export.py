"""Export with the source geometry (also oblique), overwrite confirmation, session autosave and restore."""

from __future__ import annotations

import json

import numpy as np
import panel_fixtures as fx
import pytest
import SimpleITK as sitk

import napari_cgs.panel.dialogs as dialogs
import napari_cgs.panel.session as _session
from cgs_engine.io import read_volume
from cgs_engine.review import load_session, session_path_for
from napari_cgs.panel.prediction_layers import labels_layer_name

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def assert_exported(path, labels_layer, source_path, synth, class_names):
    written, source = sitk.ReadImage(str(path)), sitk.ReadImage(str(source_path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels_layer.data)
    synth.assert_same_geometry(written, source)
    table = json.loads((path.parent / path.name.replace(".nii.gz", "_classes.json")).read_text())["classes"]
    assert [row["id"] for row in table] == list(range(len(class_names)))
    assert [row["name"] for row in table] == class_names
    assert all(len(row["color"]) == 3 for row in table)


def test_export_round_trip_keeps_layer_data_and_source_geometry(
    qtbot, viewer_and_panel, sample_slab_path, synth
):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    labels.paint((3, 30, 30), 5)  # an edit must be exported too
    target = sample_slab_path.parent / "export" / "slab_labels.nii.gz"
    target.parent.mkdir()
    with qtbot.waitSignal(panel.exported):
        written = panel.export(target)
    assert written == [target, target.parent / "slab_labels_classes.json"]
    assert_exported(target, labels, sample_slab_path, synth, result.prediction.class_names)


def test_export_of_an_oblique_image_keeps_its_direction(qtbot, viewer_and_panel, tmp_path, synth):
    viewer, panel = viewer_and_panel
    array = synth.ct_like_array(seed=3, shape=(6, 40, 48))
    source = tmp_path / "oblique.nii.gz"
    sitk.WriteImage(synth.sitk_image(array, "oblique"), str(source))
    image = fx.open_image(viewer, source)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    fx.assert_same_transforms(labels, image)
    target = tmp_path / "oblique_labels.nii.gz"
    panel.export(target)
    assert_exported(target, labels, source, synth, panel.class_names)


def test_export_never_overwrites_without_confirmation(qtbot, viewer_and_panel, sample_slab_path, monkeypatch):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    target = sample_slab_path.parent / "labels.nii.gz"
    target.write_bytes(b"precious")
    asked = []
    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: asked.append(path) or False)
    assert panel.export(target) == []
    assert asked == [target] and target.read_bytes() == b"precious"
    assert not (sample_slab_path.parent / "labels_classes.json").exists()

    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: True)
    assert panel.export(target)[0] == target
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(target))).shape == image.data.shape


def test_session_is_autosaved_beside_the_image_and_restored_when_it_is_opened_again(
    qtbot, viewer_and_panel, sample_slab_path
):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    session_file = session_path_for(sample_slab_path)
    panel.queue.accept_button.click()  # accept autosaves at once (written off the GUI thread)
    panel.autosave.flush()
    saved = load_session(session_file)
    assert saved.review_state.status[result.regions[0].id] == "accepted"
    assert saved.review_state.position == panel.review.state.position

    # Edits are saved by the timer, and only when something changed.
    labels = viewer.layers[labels_layer_name(image)]
    labels.paint((2, 20, 20), 6)
    assert panel.autosave.dirty
    panel.autosave.timer.setInterval(20)
    qtbot.waitUntil(lambda: not panel.autosave.dirty, timeout=5_000)
    panel.autosave.flush()
    assert panel.autosave.save_if_changed() is None
    expected_labels = np.array(labels.data)
    expected_mask = panel.review_mask().copy()
    expected_position = panel.review.state.position

    viewer.layers.clear()
    assert panel.review.state is None
    reopened = fx.open_image(viewer, sample_slab_path)
    assert panel.image_layer is reopened
    restored = viewer.layers[labels_layer_name(reopened)]
    np.testing.assert_array_equal(restored.data, expected_labels)
    np.testing.assert_array_equal(panel.review_mask(), expected_mask)
    assert panel.review.state.position == expected_position
    assert panel.review.state.status[result.regions[0].id] == "accepted"
    assert panel.queue.list.count() == len(result.regions)
    assert "Restored" in panel.session_label.text()


def test_a_session_saved_by_another_window_meanwhile_is_kept_and_this_one_goes_beside_it(
    qtbot, viewer_and_panel, sample_slab_path
):
    """The same image open in two napari windows: each autosave replaced the other's strokes, the
    last one winning, and neither window said so."""
    from cgs_engine.review import save_session

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    session_file = session_path_for(sample_slab_path)
    assert panel.autosave.save_now(wait=True) == session_file
    theirs = load_session(session_file)
    theirs.labels[:] = 0
    theirs.labels[0, :4, :4] = 1  # the other window's work
    save_session(
        session_file,
        theirs.labels,
        theirs.review_state,
        theirs.fingerprint,
        theirs.geometry,
        theirs.class_names,
    )
    labels = viewer.layers[labels_layer_name(image)]
    labels.paint((2, 20, 20), 6)
    written = panel.autosave.save_now(wait=True)
    assert written != session_file and ".conflict-" in written.name and written.parent == session_file.parent
    np.testing.assert_array_equal(load_session(session_file).labels, theirs.labels)  # theirs kept
    np.testing.assert_array_equal(load_session(written).labels, np.asarray(labels.data))  # ours too
    qtbot.waitUntil(lambda: written.name in panel.session_label.text().replace("\u200b", ""), timeout=5_000)
    assert "not overwritten" in panel.session_label.text().replace("\u200b", "")
    # later saves go on into the conflict file, and this panel's own writes never conflict
    labels.paint((3, 20, 20), 6)
    assert panel.autosave.save_now(wait=True) == written
    np.testing.assert_array_equal(load_session(written).labels, np.asarray(labels.data))


def test_images_without_a_writable_source_keep_their_session_in_the_home_folder(
    viewer_and_panel, home_sessions
):
    viewer, panel = viewer_and_panel
    (image,) = viewer.open_sample(*fx.SAMPLE_KEY)
    path = _session.session_file_for(image, _session.fingerprint_of(image))
    assert path.parent == home_sessions and path.name.endswith(".cgs-session.h5")


def test_sessions_are_written_off_the_gui_thread_and_flushed_on_close(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    import threading

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    panel.autosave.flush()
    writers = []
    real_save = _session.save_session

    def recording_save(path, **contents):
        writers.append(threading.current_thread().name)
        return real_save(path, **contents)

    monkeypatch.setattr(_session, "save_session", recording_save)
    labels = viewer.layers[labels_layer_name(image)]
    labels.paint((4, 40, 40), 3)
    assert panel.autosave.save_if_changed(wait=True) == session_path_for(sample_slab_path)
    assert writers and all(name.startswith("cgs-session-save") for name in writers)
    assert load_session(session_path_for(sample_slab_path)).labels[4, 40, 40] == 3


def test_export_never_replaces_the_file_an_open_layer_was_read_from(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    """Even after "Replace?" was answered yes: the CT became a uint8 label map before."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    original = sample_slab_path.read_bytes()
    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: True)
    assert panel.export(sample_slab_path) == []
    assert sample_slab_path.read_bytes() == original
    said = panel.export_status.text().replace("\u200b", "")
    assert f"{sample_slab_path.name} is the file layer “{image.name}” was read from" in said, said
    assert not sample_slab_path.with_name(sample_slab_path.name.replace(".nii.gz", "_classes.json")).exists()


def test_labels_are_written_onto_a_layer_sliced_at_an_angle(make_napari_viewer, tmp_path):
    """napari 0.9 raises IndexError after writing when the layer is oblique: the pre-segmentation
    of an oblique CT stopped half-way (no review, no autosave)."""
    from napari_cgs._layers import labels_kwargs_like
    from napari_cgs.panel.prediction_layers import write_labels_undoable

    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    tilt = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    ct = sitk.GetImageFromArray(np.zeros((6, 40, 48), np.int16))
    ct.SetSpacing((0.7, 0.7, 5.0)), ct.SetOrigin((-17.25, 33.5, 102.0)), ct.SetDirection(tuple(tilt.ravel()))
    sitk.WriteImage(ct, str(tmp_path / "oblique.nii.gz"))
    viewer = make_napari_viewer()
    image = fx.open_image(viewer, tmp_path / "oblique.nii.gz")
    layer = viewer.add_labels(np.zeros((6, 40, 48), np.uint8), **labels_kwargs_like(image))
    target = np.zeros((6, 40, 48), np.uint8)
    target[:, 10:20, 12:24] = 3
    assert write_labels_undoable(layer, target) == 6 * 10 * 12
    np.testing.assert_array_equal(layer.data, target)
    layer.undo()  # still one undo step
    assert not np.asarray(layer.data).any()


@pytest.mark.parametrize(
    "typed, chosen_filter, expected",
    [
        ("/d/pt1_labels", "NIfTI (*.nii.gz *.nii)", "/d/pt1_labels.nii.gz"),
        ("/d/pt1_labels", "NRRD (*.nrrd *.nhdr)", "/d/pt1_labels.nrrd"),
        ("/d/pt1.labels", "MetaImage (*.mha *.mhd)", "/d/pt1.labels.mha"),
        ("/d/pt1_labels.nrrd", "NIfTI (*.nii.gz *.nii)", "/d/pt1_labels.nrrd"),
        ("/d/PT1.NII.GZ", "NIfTI (*.nii.gz *.nii)", "/d/PT1.NII.GZ"),  # refused later, by name
        ("/d/pt1_labels", "", "/d/pt1_labels.nii.gz"),
    ],
)
def test_a_name_typed_without_extension_gets_the_chosen_formats(typed, chosen_filter, expected):
    from napari_cgs.panel.dock import with_format_extension

    assert with_format_extension(typed, chosen_filter) == expected


@pytest.mark.parametrize("name", ["pt1_labels", "PT1_LABELS.NII.GZ"])
def test_an_unwritable_export_name_is_refused_before_any_replace_question(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch, name
):
    """It asked to replace the class table beside the name, then failed on the name itself."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    target = sample_slab_path.parent / name
    sidecar = sample_slab_path.parent / f"{name.split('.')[0]}_classes.json"
    sidecar.write_text("kept")
    asked = []
    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: asked.append(path) or True)
    assert panel.export(target) == []
    assert asked == [] and sidecar.read_text() == "kept" and not target.exists()
    said = panel.export_status.text().replace("\u200b", "")
    assert said.startswith(f"Not exported: {name}:") and "\n" not in said, said


def test_the_export_dialog_completes_a_name_typed_without_extension(
    qtbot, viewer_and_panel, sample_slab_path, monkeypatch
):
    import napari_cgs.panel.dock as dock

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    typed = sample_slab_path.parent / "pt1_labels"
    monkeypatch.setattr(
        dock.QFileDialog, "getSaveFileName", lambda *a, **k: (str(typed), "NIfTI (*.nii.gz *.nii)")
    )
    written = panel.export()
    assert written[0] == typed.with_name("pt1_labels.nii.gz") and written[0].is_file()


def test_labels_moved_in_the_viewer_are_exported_on_their_images_grid(
    qtbot, viewer_and_panel, sample_slab_path, synth
):
    """napari's transform mode moves a layer by a drag; the export then wrote the labels off the
    CT's grid (refused by the DICOM exports, misread by tools that pair files voxel by voxel)."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    labels.translate = np.asarray(labels.translate) + np.array([0.0, 12.0, 0.0])
    target = sample_slab_path.parent / "moved_labels.nii.gz"
    written = panel.export(target)
    assert written[0] == target
    synth.assert_same_geometry(sitk.ReadImage(str(target)), sitk.ReadImage(str(sample_slab_path)))
    said = panel.export_status.text().replace("\u200b", "")
    assert "moved by 12.0 mm" in said and f"written on {image.name}'s grid" in said, said

    assert said.startswith("Exported") and "The labels layer had been moved" in said, said

    labels.translate = np.asarray(labels.translate) - np.array([0.0, 12.0, 0.0])  # back where it was
    panel.export(target.with_name("back_labels.nii.gz"))
    assert "had been" not in panel.export_status.text()

    # the IMAGE dragged instead: its file did not move, and the labels go on the file's grid
    image.translate = np.asarray(image.translate) + np.array([0.0, 5.0, -7.0])
    dragged = target.with_name("image_dragged_labels.nii.gz")
    panel.export(dragged)
    synth.assert_same_geometry(sitk.ReadImage(str(dragged)), sitk.ReadImage(str(sample_slab_path)))
    said = panel.export_status.text().replace("\u200b", "")
    assert "The image layer had been moved by 8.6 mm" in said and "labels layer" not in said, said
    panel.autosave.save_now(wait=True)  # the session stays on the file's grid (and findable) too
    saved = load_session(session_path_for(sample_slab_path))
    assert saved.geometry.is_close(read_volume(sample_slab_path).geometry)


def test_a_session_file_deleted_by_the_user_is_written_again_not_taken_for_another_windows(
    qtbot, viewer_and_panel, sample_slab_path
):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    session_file = session_path_for(sample_slab_path)
    assert panel.autosave.save_now(wait=True) == session_file
    session_file.unlink()
    viewer.layers[labels_layer_name(image)].paint((2, 20, 20), 6)
    assert panel.autosave.save_now(wait=True) == session_file
    assert not list(session_file.parent.glob("*.conflict-*"))
