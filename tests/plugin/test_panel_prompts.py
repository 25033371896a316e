"""Correct by pointing in the panel: click, box, their undo, and "Adapt to this scan"."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import panel_fixtures as fx
import pytest

from cgs_engine.edit.adapt import AdaptResult
from cgs_engine.review.state import EDITED
from napari_cgs.panel import prompt_tools
from napari_cgs.panel.prediction_layers import labels_layer_name, specialist_layer_name
from napari_cgs.panel.prompt_tools import BOX_LAYER_SUFFIX

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def presegmented(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    section = panel.correct_section
    organ = panel.class_names.index("Mandible")
    section.organ_choice.setCurrentIndex(section.organ_choice.findData(organ))
    return viewer, panel, image, viewer.layers[labels_layer_name(image)], organ


def wait_idle(qtbot, section) -> None:
    qtbot.waitUntil(lambda: section.worker is None, timeout=120_000)


def test_a_click_through_the_viewer_is_one_undoable_edit_marked_as_yours(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    before = np.array(labels.data, copy=True)
    head = viewer.layers[specialist_layer_name(image, "Mandible")]
    target = tuple(int(i) for i in np.argwhere(before == 0)[len(np.argwhere(before == 0)) // 2])
    box = tuple(slice(max(i - 3, 0), i + 4) for i in target)
    head.data[box] = np.maximum(head.data[box], 200)  # the head is sure around the click
    tools.click_button.setChecked(True)
    assert tools._on_mouse in viewer.mouse_drag_callbacks and labels.mode == "pan_zoom"
    event = SimpleNamespace(
        type="mouse_press", button=1, position=labels.data_to_world(target), modifiers=set()
    )
    gesture = tools._on_mouse(viewer, event)
    next(gesture)
    event.type = "mouse_release"
    with qtbot.waitSignal(panel.correct_section.edited, timeout=60_000), pytest.raises(StopIteration):
        next(gesture)
    after = np.array(labels.data)
    changed = after != before
    assert changed[target] and changed.sum() > 1
    assert (after[changed] == organ).all() and (before[changed] == 0).all()
    # yours on the slice you clicked on; on the slices around it, the model's until you look there
    on_slice = np.zeros_like(changed)
    on_slice[target[0]] = changed[target[0]]
    assert (changed & ~on_slice).any()
    np.testing.assert_array_equal(panel.review_mask() == EDITED, on_slice)
    labels.undo()
    np.testing.assert_array_equal(np.array(labels.data), before)
    assert not (panel.review_mask() == EDITED).any()
    tools.click_button.setChecked(False)
    assert tools._on_mouse not in viewer.mouse_drag_callbacks


def test_a_negative_click_removes_and_keeps_what_you_painted(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    labels.brush_size = 5
    labels.paint((6, 64, 64), organ)
    painted = panel.review_mask() == EDITED
    with qtbot.waitSignal(panel.correct_section.edited, timeout=60_000):
        tools.click_at((6, 64, 64), positive=False)
    after = np.array(labels.data)
    assert after[6, 64, 64] == 0  # the clicked voxel itself goes, even though you painted it
    assert (after[painted] == organ).sum() == painted.sum() - 1


def test_a_click_that_cannot_change_anything_says_why_and_runs_nothing(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    labels.brush_size = 5
    labels.paint((6, 64, 64), organ)
    inside = (6, 64, 64)
    assert tools.click_at(inside, positive=True) is None and panel.correct_section.worker is None
    assert "Nothing changed: the clicked voxel is Mandible already" in panel.correct_section.status.text()
    outside = tuple(int(i) for i in np.argwhere(np.asarray(labels.data) == 0)[0])
    assert tools.click_at(outside, positive=False) is None
    assert "is not Mandible: click inside it" in panel.correct_section.status.text()


def test_a_box_drawn_in_its_shapes_layer_resegments_the_organ_inside(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    tools.box_button.setChecked(True)
    layer = viewer.layers[f"{image.name}{BOX_LAYER_SUFFIX}"]
    assert layer.mode == "add_rectangle" and viewer.layers.selection.active is layer
    head = viewer.layers[specialist_layer_name(image, "Mandible")]
    head.data[4:8, 40:60, 50:70] = 230  # what the head is sure of inside the box
    before = np.array(labels.data, copy=True)
    tools.depth_mm.setValue(6.0)  # 2 slices of 3 mm either side of slice 6
    with qtbot.waitSignal(panel.correct_section.edited, timeout=60_000):
        layer.add_rectangles(np.array([[6, 38, 48], [6, 38, 72], [6, 62, 72], [6, 62, 48]]))
    after = np.array(labels.data)
    changed = after != before
    assert (after[4:8, 40:60, 50:70][before[4:8, 40:60, 50:70] == 0] == organ).all()
    assert set(np.unique(after[changed])) <= {0, organ} and set(np.unique(before[changed])) <= {0, organ}
    # a box through slices 4-8 drawn on slice 6: its changes on the other slices, never on screen,
    # are not taught as yours (they were marked drawn by you, and a retrain learnt them)
    np.testing.assert_array_equal(panel.review_mask()[6] == EDITED, changed[6])
    assert changed[[4, 5, 7, 8]].any() and not (panel.review_mask()[[4, 5, 7, 8]] == EDITED).any()
    assert "model's until you review" in panel.correct_section.status.text()
    labels.undo()
    np.testing.assert_array_equal(np.array(labels.data), before)


def test_adapting_keeps_your_voxels_is_one_undo_and_is_not_marked_as_yours(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    assert tools.adapt() is None and "Correct (or accept)" in panel.correct_section.status.text()
    labels.brush_size = 9
    for z in (2, 8):
        labels.paint((z, 70, 64), organ)
    reviewed = panel.review_mask() > 0
    before = np.array(labels.data, copy=True)
    tools.seconds.setValue(10)
    with qtbot.waitSignal(panel.correct_section.edited, timeout=120_000) as blocker:
        assert tools.adapt() is not None
        assert tools.cancel_button.isEnabled()
    wait_idle(qtbot, panel.correct_section)
    after = np.array(labels.data)
    changed = int((after != before).sum())
    np.testing.assert_array_equal(after[reviewed], before[reviewed])
    assert blocker.args == ["Adapted to this scan", changed]
    assert f"{changed:,} voxels re-predicted" in panel.correct_section.status.text()
    np.testing.assert_array_equal(panel.review_mask() > 0, reviewed)  # the model's output is not yours
    if changed:  # the tiny test model may well still answer background everywhere
        labels.undo()
        np.testing.assert_array_equal(np.array(labels.data), before)


def test_adapting_refuses_labels_numbered_otherwise_than_the_model(qtbot, presegmented):
    """Labels restored from a session of another model number the organs its way; adapting the
    panel's model on them taught each head another organ and wrote its ids under the layer's names."""
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    labels.brush_size = 9
    labels.paint((2, 70, 64), organ)
    before = np.array(labels.data, copy=True)
    model_names = list(panel.checkpoint.class_names)
    panel.class_names = [model_names[0], *reversed(model_names[1:])]
    with qtbot.waitSignal(panel.correct_section.failed, timeout=60_000) as blocker:
        assert tools.adapt() is not None
    wait_idle(qtbot, panel.correct_section)
    assert "number the organs otherwise than the model" in blocker.args[0]
    assert "Failed:" in panel.correct_section.status.text()
    np.testing.assert_array_equal(np.array(labels.data), before)


def test_cancel_stops_adapting_and_changes_nothing(qtbot, presegmented):
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    labels.brush_size = 9
    labels.paint((4, 70, 64), organ)
    before = np.array(labels.data, copy=True)
    tools.seconds.setValue(300)
    assert tools.adapt() is not None
    tools.cancel_button.click()
    wait_idle(qtbot, panel.correct_section)
    np.testing.assert_array_equal(np.array(labels.data), before)
    assert "cancelled" in panel.correct_section.status.text()


def background_click_target(viewer, image, labels):
    """A background voxel with the Mandible head made sure around it: a click there adds voxels."""
    before = np.asarray(labels.data)
    target = tuple(int(i) for i in np.argwhere(before == 0)[len(np.argwhere(before == 0)) // 2])
    head = viewer.layers[specialist_layer_name(image, "Mandible")]
    box = tuple(slice(max(i - 3, 0), i + 4) for i in target)
    head.data[box] = np.maximum(head.data[box], 200)
    return target


def test_what_you_paint_while_a_click_runs_stays_yours(qtbot, presegmented, monkeypatch):
    viewer, panel, image, labels, organ = presegmented
    target = background_click_target(viewer, image, labels)
    release = fx.held(monkeypatch, prompt_tools, "run_click")
    before = np.array(labels.data, copy=True)
    assert panel.correct_section.prompt_tools.click_at(target) is not None
    other_organ = panel.class_names.index("Brainstem")
    labels.brush_size = 1
    labels.paint(target, other_organ)  # the clicked voxel itself, painted while the click runs
    release.set()
    wait_idle(qtbot, panel.correct_section)
    after = np.asarray(labels.data)
    assert after[target] == other_organ
    added = (after != before) & (after == organ)
    assert added.sum() > 0  # the click's other voxels were written


def hold_adapt_answering_everywhere(monkeypatch, labels, organ):
    """Paint a reviewed blob, and hold Adapt: its answer, once released, changes every voxel it may
    change to ``organ`` (the tiny test model may well re-predict nothing)."""
    labels.brush_size = 9
    labels.paint((4, 70, 64), organ)

    def everywhere(args):
        labels_in, keep = args[2], args[4]
        return AdaptResult(
            labels=np.where(keep, labels_in, organ).astype(labels_in.dtype), changed=~keep, steps=1
        )

    return fx.held(monkeypatch, prompt_tools, "run_adapt", everywhere)


def test_adapting_that_changes_nothing_does_not_offer_ctrl_z(qtbot, presegmented, monkeypatch):
    """It said "Ctrl+Z undoes it" with 0 voxels re-predicted: no undo step was made, so Ctrl+Z
    took back the user's last stroke instead."""
    viewer, panel, image, labels, organ = presegmented
    labels.brush_size = 9
    labels.paint((4, 70, 64), organ)

    def nothing(args):
        labels_in = args[2]
        return AdaptResult(labels=labels_in.copy(), changed=np.zeros(labels_in.shape, bool), steps=1)

    release = fx.held(monkeypatch, prompt_tools, "run_adapt", nothing)
    painted = np.array(labels.data, copy=True)
    assert panel.correct_section.prompt_tools.adapt() is not None
    release.set()
    wait_idle(qtbot, panel.correct_section)
    status = panel.correct_section.status.text()
    assert "0 voxels re-predicted" in status and "Ctrl+Z undoes it" not in status
    assert "nothing to undo" in status
    np.testing.assert_array_equal(np.asarray(labels.data), painted)


def test_the_adapted_labels_are_saved_in_the_session(qtbot, presegmented, sample_slab_path, monkeypatch):
    """Written untracked (the model's voxels), the adaptation never made the session dirty: it was
    never autosaved, and closing the image restored the labels from before it without a word."""
    from cgs_engine.review import load_session, session_path_for

    viewer, panel, image, labels, organ = presegmented
    release = hold_adapt_answering_everywhere(monkeypatch, labels, organ)
    panel.autosave.save_now(wait=True)  # the stroke is saved: nothing else is pending
    panel.autosave.timer.stop()
    panel.stroke_timer.stop()
    assert panel.correct_section.prompt_tools.adapt() is not None
    release.set()
    wait_idle(qtbot, panel.correct_section)
    adapted = np.array(labels.data, copy=True)
    panel.autosave.flush()
    assert not panel.autosave.dirty
    saved = load_session(session_path_for(sample_slab_path))
    np.testing.assert_array_equal(saved.labels, adapted)
    reviewed = panel.review_mask()
    np.testing.assert_array_equal(saved.review_state.review_mask, reviewed)  # still not marked as yours
    assert (reviewed[adapted == organ] < 2).any()


@pytest.mark.parametrize("prompt", ["click", "adapt"])
def test_a_prompt_answered_after_switching_images_is_not_written_into_the_other(
    qtbot, presegmented, sample_slab_path, monkeypatch, prompt
):
    """The result was written into whichever labels the panel followed when it arrived."""
    viewer, panel, image, labels, organ = presegmented
    tools = panel.correct_section.prompt_tools
    if prompt == "click":
        target = background_click_target(viewer, image, labels)
        release = fx.held(monkeypatch, prompt_tools, "run_click")
        assert tools.click_at(target) is not None
    else:
        release = hold_adapt_answering_everywhere(monkeypatch, labels, organ)
        assert tools.adapt() is not None
    first = np.array(labels.data, copy=True)
    other_labels = fx.open_and_presegment_another(qtbot, viewer, panel, sample_slab_path)
    other = np.array(other_labels.data, copy=True)
    release.set()
    wait_idle(qtbot, panel.correct_section)
    np.testing.assert_array_equal(np.asarray(other_labels.data), other)
    np.testing.assert_array_equal(np.asarray(labels.data), first)
    assert "not written" in panel.correct_section.status.text()


def test_a_click_answered_after_its_labels_layer_was_closed_is_not_written(qtbot, presegmented, monkeypatch):
    """Written into the closed layer the panel keeps for its work: 11 voxels the user never saw went
    into the session, and the status offered Ctrl+Z on no layer."""
    viewer, panel, image, labels, organ = presegmented
    target = background_click_target(viewer, image, labels)
    release = fx.held(monkeypatch, prompt_tools, "run_click")
    before = np.array(labels.data, copy=True)
    assert panel.correct_section.prompt_tools.click_at(target) is not None
    viewer.layers.remove(labels)
    release.set()
    wait_idle(qtbot, panel.correct_section)
    np.testing.assert_array_equal(np.asarray(labels.data), before)
    assert "was closed meanwhile" in panel.correct_section.status.text()


def test_what_you_paint_while_adapting_stays_yours(qtbot, presegmented, monkeypatch):
    viewer, panel, image, labels, organ = presegmented
    release = hold_adapt_answering_everywhere(monkeypatch, labels, organ)
    assert panel.correct_section.prompt_tools.adapt() is not None
    other_organ = panel.class_names.index("Brainstem")
    labels.brush_size = 3
    labels.paint((8, 20, 20), other_organ)  # while it trains
    painted = np.asarray(labels.data) == other_organ
    release.set()
    wait_idle(qtbot, panel.correct_section)
    after = np.asarray(labels.data)
    assert (after[painted] == other_organ).all()
    assert (after[~painted] == organ).mean() > 0.5  # the re-prediction was written elsewhere


def test_a_region_accepted_while_adapting_is_not_re_predicted(qtbot, presegmented, monkeypatch):
    """Accept changes no voxel, so the voxels accepted while Adapt trained were overwritten by its
    re-prediction and still said "accepted": labels the user never saw, trained on as theirs."""
    viewer, panel, image, labels, organ = presegmented
    release = hold_adapt_answering_everywhere(monkeypatch, labels, organ)
    assert panel.correct_section.prompt_tools.adapt() is not None
    region = panel.review.state.current()
    assert region is not None
    panel.review.accept()  # while it trains
    accepted = panel.review_mask() == 1
    assert accepted.any()
    shown = np.array(labels.data, copy=True)
    release.set()
    wait_idle(qtbot, panel.correct_section)
    after = np.asarray(labels.data)
    np.testing.assert_array_equal(after[accepted], shown[accepted])
    assert (after[panel.review_mask() == 0] == organ).mean() > 0.5  # written elsewhere
