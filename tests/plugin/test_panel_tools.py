"""Correction tools a clinician can trust: no-ops say so, defaults are at least a voxel, deleting whole
pieces is previewed, Alt+T keeps the user's own voxels, and Fill between slices runs ITK off the GUI."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest

from cgs_engine.edit import fill_between_slices, keep_largest_island
from cgs_engine.edit.interpolate_process import shared_interpolation
from cgs_engine.review.state import EDITED
from napari_cgs.panel.fit import plain
from napari_cgs.panel.prediction_layers import labels_layer_name, specialist_layer_name
from napari_cgs.panel.tool_preview import preview_layer_name

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def presegmented(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)  # 4.7 x 4.7 mm in-plane, 3 mm between slices
    fx.presegment(qtbot, panel, image)
    section = panel.correct_section
    organ = panel.class_names.index("Larynx")
    section.organ_choice.setCurrentIndex(section.organ_choice.findData(organ))
    return viewer, panel, image, viewer.layers[labels_layer_name(image)], organ


def test_a_tool_that_changes_nothing_is_no_undo_step_and_says_so(qtbot, presegmented):
    """Bug: Grow 2 mm on 4.7 mm voxels said "0 voxels changed (Ctrl+Z undoes it)"; Ctrl+Z then took
    back the brush stroke before it."""
    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 5
    labels.paint((6, 64, 64), organ)  # the user's stroke
    history = len(labels._undo_history)
    before = np.array(labels.data, copy=True)
    section.margin_mm.setValue(2.0)
    with qtbot.waitSignal(section.edited, timeout=60_000) as blocker:
        section.tool_buttons["grow"].click()
    assert blocker.args[1] == 0
    np.testing.assert_array_equal(labels.data, before)
    assert len(labels._undo_history) == history  # no undo step for nothing
    text = plain(section.status.text())
    assert "changed nothing" in text and "less than one voxel" in text and "4.7 mm" in text
    assert "Ctrl+Z undoes it" not in text


def test_tool_defaults_are_at_least_one_voxel_and_say_so(presegmented):
    _, panel, _, _, _ = presegmented
    section = panel.correct_section
    assert section.margin_mm.value() == pytest.approx(4.7) and section.smooth_mm.value() == pytest.approx(4.7)
    note = plain(section.voxel_note.text())
    assert "4.7 × 4.7 × 3.0 mm" in note and "start at one voxel" in note


def test_keep_largest_island_is_shown_first_and_written_only_on_apply(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 9
    labels.paint((6, 40, 40), organ)
    labels.brush_size = 3
    labels.paint((6, 90, 90), organ)  # a second, smaller piece
    before = np.array(labels.data, copy=True)
    expected = keep_largest_island(before, organ)
    assert expected.changed.any()

    section.tool_buttons["keep-largest"].click()
    qtbot.waitUntil(lambda: section.preview.pending and section.worker is None, timeout=60_000)
    np.testing.assert_array_equal(labels.data, before)  # nothing written yet
    preview = viewer.layers[preview_layer_name(image)]
    np.testing.assert_array_equal(preview.data > 0, expected.changed & (before == organ))
    assert "would remove" in plain(section.preview.text.text()) and "% of Larynx" in plain(
        section.preview.text.text()
    )
    assert not section.tool_buttons["grow"].isEnabled()  # one decision at a time
    assert viewer.layers.selection.active.name == labels.name
    section.preview.discard_button.click()
    np.testing.assert_array_equal(labels.data, before)
    assert preview_layer_name(image) not in viewer.layers and section.tool_buttons["grow"].isEnabled()

    section.tool_buttons["keep-largest"].click()
    qtbot.waitUntil(lambda: section.preview.pending and section.worker is None, timeout=60_000)
    section.preview.apply_button.click()
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert preview_layer_name(image) not in viewer.layers
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_taking_the_specialists_version_keeps_the_voxels_the_user_edited(presegmented):
    """Bug: Alt+T silently overwrote the 78 voxels the user had just grown."""
    viewer, panel, image, labels, organ = presegmented
    region = panel.review.state.current()
    box = tuple(region.bbox)
    inside = np.zeros(labels.data.shape, bool)
    inside[box] = panel.review.component_map[box] == region.id
    head = viewer.layers[specialist_layer_name(image, "Larynx")]
    head.data[box] = 255  # the Larynx head claims the whole region
    mandible = panel.class_names.index("Mandible")
    voxel = tuple(int(v) for v in np.argwhere(inside)[0])
    labels.selected_label = mandible
    labels.brush_size = 1
    labels.paint(voxel, mandible)  # the user's own voxel, inside the region
    assert panel.review_mask()[voxel] == EDITED
    panel.correct_section.take_specialists()
    assert labels.data[voxel] == mandible
    others = inside.copy()
    others[voxel] = False
    assert (np.asarray(labels.data)[others] == organ).all()
    assert "Kept 1 voxels you edited" in plain(panel.correct_section.status.text())


def test_fill_between_slices_runs_itk_in_its_helper_process(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 7
    for z in (2, 8):
        labels.paint((z, 60, 60), organ)
    before = np.array(labels.data, copy=True)
    expected = fill_between_slices(before, organ)  # ITK in this process, for comparison
    with qtbot.waitSignal(section.edited, timeout=300_000):
        section.tool_buttons["fill-between-slices"].click()
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert shared_interpolation().ready  # loaded in the helper, not on the GUI's threads


def test_a_tool_answered_after_switching_images_is_not_written_into_the_other(
    qtbot, presegmented, sample_slab_path, monkeypatch
):
    """The result went into whichever labels the panel followed when it arrived: another frame of
    the same patient has the same shape, so Grow on one frame wrote into the other."""
    from napari_cgs.panel import correct_section as module

    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 9
    labels.paint((6, 64, 64), organ)
    first = np.array(labels.data, copy=True)
    release = fx.held(monkeypatch, module, "run_and_summarise")
    section.margin_mm.setValue(5.0)
    section.tool_buttons["grow"].click()
    other_labels = fx.open_and_presegment_another(qtbot, viewer, panel, sample_slab_path)
    other = np.array(other_labels.data, copy=True)
    release.set()
    qtbot.waitUntil(lambda: section.worker is None, timeout=60_000)
    np.testing.assert_array_equal(other_labels.data, other)
    np.testing.assert_array_equal(labels.data, first)
    assert "not written" in plain(section.status.text()) and labels.name in plain(section.status.text())


def test_a_preview_is_dropped_when_its_image_is_no_longer_corrected(qtbot, presegmented, sample_slab_path):
    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 9
    labels.paint((6, 40, 40), organ)
    labels.brush_size = 3
    labels.paint((6, 90, 90), organ)  # a second piece, for Keep largest island to remove
    section.tool_buttons["keep-largest"].click()
    qtbot.waitUntil(lambda: section.preview.pending and section.worker is None, timeout=60_000)
    first = np.array(labels.data, copy=True)
    other_labels = fx.open_and_presegment_another(qtbot, viewer, panel, sample_slab_path)
    other = np.array(other_labels.data, copy=True)
    assert not section.preview.pending and preview_layer_name(image) not in viewer.layers
    section.preview.apply_button.click()  # (hidden by then) nothing to apply
    np.testing.assert_array_equal(other_labels.data, other)
    np.testing.assert_array_equal(labels.data, first)


def test_a_preview_of_a_renamed_image_still_applies_and_goes_away(qtbot, presegmented):
    """The preview was followed by name: once its image (and so its layer) was renamed, the next
    refresh dropped it and left the white layer behind."""
    viewer, panel, image, labels, organ = presegmented
    section = panel.correct_section
    labels.brush_size = 9
    labels.paint((6, 40, 40), organ)
    labels.brush_size = 3
    labels.paint((6, 90, 90), organ)
    expected = keep_largest_island(np.array(labels.data, copy=True), organ)
    section.tool_buttons["keep-largest"].click()
    qtbot.waitUntil(lambda: section.preview.pending and section.worker is None, timeout=60_000)
    image.name = "renamed CT"
    qtbot.wait(50)
    section.refresh()
    assert section.preview.pending and preview_layer_name(image) in viewer.layers
    section.preview.apply_button.click()
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert not any(layer.name.endswith("preview") for layer in viewer.layers)
