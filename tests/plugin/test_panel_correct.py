"""The correction section: organ picker, tools, the specialists' version, views and windows."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest

from cgs_engine.review.state import EDITED
from napari_cgs.panel.correct_section import WINDOW_PRESETS, alternative_layer_name
from napari_cgs.panel.prediction_layers import labels_layer_name, specialist_layer_name

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def presegmented(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    return viewer, panel, image, viewer.layers[labels_layer_name(image)], result


def test_the_organ_picker_names_every_organ_and_sets_the_brush(presegmented):
    viewer, panel, image, labels, _ = presegmented
    section = panel.correct_section
    names = [section.organ_choice.itemText(i) for i in range(section.organ_choice.count())]
    assert names == panel.class_names[1:]
    assert all(not section.organ_choice.itemIcon(i).isNull() for i in range(len(names)))
    section.organ_choice.setCurrentIndex(names.index("Mandible"))
    assert labels.selected_label == panel.class_names.index("Mandible")
    assert "Mandible" in section.legend.text()


def test_views_show_superior_up_and_windows_follow_the_presets(presegmented):
    viewer, panel, image, _, _ = presegmented
    section = panel.correct_section
    section.view_buttons["Sagittal"].click()
    assert tuple(viewer.dims.displayed) == (0, 1)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    assert camera.orientation2d[0] == "up"
    section.view_buttons["Coronal"].click()
    assert tuple(viewer.dims.displayed) == (0, 2) and camera.orientation2d[0] == "up"
    section.view_buttons["Axial"].click()
    assert tuple(viewer.dims.displayed) == (1, 2) and camera.orientation2d[0] == "down"
    name = next(iter(WINDOW_PRESETS))
    section.window_choice.setCurrentText("Bone (W 1800, L 400)")
    assert tuple(image.contrast_limits) == WINDOW_PRESETS["Bone (W 1800, L 400)"]
    assert name in [section.window_choice.itemText(i) for i in range(section.window_choice.count())]


def test_taking_the_specialists_version_is_one_undoable_edit_of_the_region(presegmented):
    viewer, panel, image, labels, result = presegmented
    section = panel.correct_section
    region = panel.review.state.current()
    assert region is not None and alternative_layer_name(image) in viewer.layers
    outline = viewer.layers[alternative_layer_name(image)]
    assert outline.contour > 0 and not outline.editable
    before = np.array(labels.data, copy=True)
    inside = np.zeros(before.shape, bool)
    inside[tuple(region.bbox)] = panel.review.component_map[tuple(region.bbox)] == region.id
    # the tiny test model is unsure everywhere (no head above 0.26): make the Larynx head sure
    # in the whole box, so its version differs from the labels there
    larynx = panel.class_names.index("Larynx")
    head = viewer.layers[specialist_layer_name(image, "Larynx")]
    head.data[tuple(region.bbox)] = 255
    section.show_alternative()
    assert (np.asarray(outline.data)[inside] == larynx).all()
    panel.review.next()  # the outline follows the queue: the previous box is cleared
    moved = panel.review.state.current()
    elsewhere = np.ones(before.shape, bool)
    elsewhere[tuple(moved.bbox)] = False
    assert not np.asarray(outline.data)[elsewhere].any()
    panel.review.previous()
    section.show_alternative()
    section.take_specialists()
    changed = np.array(labels.data) != before
    assert changed.any() and (np.array(labels.data)[inside] == larynx).all()
    assert not (changed & ~inside).any()
    np.testing.assert_array_equal(panel.review_mask() == EDITED, changed)
    np.testing.assert_array_equal(np.array(labels.data)[inside], np.array(outline.data)[inside])
    section.back_to_prediction()
    np.testing.assert_array_equal(np.array(labels.data)[inside], result.prediction.labels.array[inside])
    labels.undo()
    labels.undo()
    np.testing.assert_array_equal(np.array(labels.data), before)
    assert not (panel.review_mask() == EDITED).any()


def test_a_tool_changes_only_its_organ_and_marks_only_its_voxels(qtbot, presegmented):
    viewer, panel, image, labels, _ = presegmented
    section = panel.correct_section
    organ = panel.class_names.index("Larynx")
    section.organ_choice.setCurrentIndex(section.organ_choice.findData(organ))
    labels.brush_size = 5
    labels.paint((6, 64, 64), organ)  # the tiny test model draws nearly nothing: the user's blob
    painted = panel.review_mask() == EDITED
    before = np.array(labels.data, copy=True)
    section.margin_mm.setValue(3.0)
    with qtbot.waitSignal(section.edited, timeout=60_000):
        section.tool_buttons["grow"].click()
    after = np.array(labels.data)
    changed = after != before
    assert changed.any() and (after[changed] == organ).all() and (before[changed] == 0).all()
    np.testing.assert_array_equal(panel.review_mask() == EDITED, painted | changed)
    labels.undo()
    np.testing.assert_array_equal(np.array(labels.data), before)
    np.testing.assert_array_equal(panel.review_mask() == EDITED, painted)


def test_tools_in_a_review_region_stay_in_its_box(qtbot, presegmented):
    viewer, panel, image, labels, _ = presegmented
    section = panel.correct_section
    section.region_button.setChecked(True)
    region = panel.review.state.current()
    organ = panel.class_names.index("Larynx")
    section.organ_choice.setCurrentIndex(section.organ_choice.findData(organ))
    labels.brush_size = 15  # a blob larger than the region's box around its centre
    labels.paint(tuple(int(round(c)) for c in region.centroid), organ)
    before = np.array(labels.data, copy=True)
    section.margin_mm.setValue(4.0)
    with qtbot.waitSignal(section.edited, timeout=60_000):
        section.tool_buttons["grow"].click()
    changed = np.array(labels.data) != before
    outside = np.ones(before.shape, bool)
    outside[tuple(region.bbox)] = False
    assert changed.any() and not (changed & outside).any()


def test_without_a_prediction_the_section_says_what_to_do(viewer_and_panel):
    _, panel = viewer_and_panel
    section = panel.correct_section
    assert section.apply_tool("grow") is None and "Pre-segment" in section.status.text()
    section.take_specialists()
    assert "No review region" in section.status.text()


def test_a_scan_far_from_the_models_training_data_is_flagged(qtbot, make_napari_viewer, shared_data):
    mr = shared_data / "totalsegmentator_example" / "example_mr_sm.nii.gz"
    if not mr.exists():
        pytest.skip(f"real data not available: {mr}")
    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)  # the bundled head-and-neck CT model
    image = fx.open_image(viewer, mr)
    fx.presegment(qtbot, panel, image)
    assert panel.scope_label.isVisibleTo(panel) and "MR" in panel.scope_label.text()
    sample = viewer.open_sample(*fx.SAMPLE_KEY)[0]
    panel.select_image(sample)
    assert not panel.scope_label.isVisibleTo(panel)
    fx.presegment(qtbot, panel, sample)
    assert not panel.scope_label.isVisibleTo(panel)  # the model's own kind of scan: no warning
