"""Another image chosen while a pre-segmentation runs: the panel keeps the running image's labels
until the run ends, so nothing may read one image and write the other's labels or session."""

from __future__ import annotations

import threading

import numpy as np
import panel_fixtures as fx
import pytest
import SimpleITK as sitk

from napari_cgs._layers import same_layer
from napari_cgs.panel.fit import plain
from napari_cgs.panel.prediction_layers import labels_layer_name, layers_made_for
from napari_cgs.panel.session import find_session

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def two_scans(qtbot, viewer_and_panel, sample_slab_path, tmp_path):
    """Scans A and B (other voxels, so each has its own session), both pre-segmented and saved;
    the panel back on A."""
    viewer, panel = viewer_and_panel
    image = sitk.ReadImage(str(sample_slab_path))
    other = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[::-1].copy())
    other.CopyInformation(image)
    other_path = tmp_path / "other_scan.nii.gz"
    sitk.WriteImage(other, str(other_path))
    scan_b = fx.open_image(viewer, other_path)
    fx.presegment(qtbot, panel, scan_b)
    panel.autosave.flush()
    scan_a = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, scan_a)
    panel.autosave.flush()
    assert find_session(scan_b) is not None and find_session(scan_a) is not None
    return viewer, panel, scan_a, scan_b


def test_restoring_a_session_while_a_run_goes_on_is_refused_and_loses_nothing(qtbot, two_scans):
    """It loaded B's session into a panel still following A: A's run then wrote A's labels, with
    A's fingerprint, into B's session file, and B's review could never be restored again."""
    viewer, panel, scan_a, scan_b = two_scans
    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS):
        assert panel.presegment() is not None  # a re-run on A
        panel.select_image(scan_b)
        assert panel.restore_session() is None
        assert "Wait for the pre-segmentation" in plain(panel.status_label.text())
    fx.wait_until_finished(panel)
    # A's result lands on A and is saved there; then B, chosen during the run, is taken up
    qtbot.waitUntil(lambda: same_layer(panel._followed, scan_b))
    panel.autosave.flush()
    assert find_session(scan_b) is not None and find_session(scan_a) is not None
    assert "chosen during the run" in plain(panel.status_label.text())
    assert same_layer(panel.labels_layer, viewer.layers[labels_layer_name(scan_b)])


def test_no_correction_starts_while_the_box_shows_another_image_and_cancel_follows_it(qtbot, two_scans):
    """The tools read the chosen image (B) and wrote into the labels the panel still held (A)."""
    viewer, panel, scan_a, scan_b = two_scans
    labels_a = viewer.layers[labels_layer_name(scan_a)]
    section = panel.correct_section
    labels_a.brush_size = 9
    labels_a.paint((4, 70, 64), 7)  # something to adapt from
    before = np.array(labels_a.data, copy=True)
    assert panel.presegment() is not None
    panel.select_image(scan_b)
    assert not section.tool_buttons["grow"].isEnabled()
    assert section.apply_tool("grow") is None and "still holds" in plain(section.status.text())
    assert section.prompt_tools.adapt() is None
    assert section.prompt_tools.click_at((4, 60, 60)) is None
    panel.cancel()
    fx.wait_until_finished(panel)
    qtbot.waitUntil(lambda: panel.out_of_step() == "")  # B followed once the run ended
    assert not same_layer(panel.labels_layer, labels_a)
    np.testing.assert_array_equal(labels_a.data, before)


def test_a_correction_that_ends_after_the_panel_was_closed_answers_nothing(qapp, qtbot, monkeypatch):
    """Its result and its end were handed to deleted widgets ("wrapped C/C++ object of type
    QLabel has been deleted")."""
    from qtpy.QtCore import QEvent
    from qtpy.QtWidgets import QApplication, QLabel, QVBoxLayout

    from napari_cgs.panel.section import WorkerSection

    answers = []

    class Section(WorkerSection):
        def __init__(self) -> None:
            super().__init__("a section")
            self.setLayout(QVBoxLayout())
            self.status = QLabel()
            self.layout().addWidget(self.status)

        def refresh(self) -> None:
            self.status.setText("idle")

    section = Section()
    release = threading.Event()
    worker = section._start(lambda: release.wait(60), (), "working…", answers.append)
    done = []
    worker.finished.connect(lambda: done.append(True))
    section.deleteLater()
    QApplication.sendPostedEvents(section, QEvent.Type.DeferredDelete.value)  # napari closed it
    release.set()
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    QApplication.processEvents()
    assert answers == []


def test_a_prediction_takes_the_colours_of_the_model_that_made_it():
    """Another model chosen during a run gave its colours to the run's organs (and the session
    saved them)."""
    from types import SimpleNamespace

    from napari_cgs.panel.dock import CGSPanel

    ran = SimpleNamespace(
        class_names=["background", "RV", "Myo", "LV"], class_colors=[[0, 0, 0], [1, 1, 1]] * 2
    )
    chosen_since = SimpleNamespace(class_names=["background", "Liver"], class_colors=[[0, 0, 0], [9, 9, 9]])
    names = ["background", "RV", "Myo", "LV"]
    assert CGSPanel._model_colours(names, ran, chosen_since) == ran.class_colors
    assert CGSPanel._model_colours(names, None, chosen_since) == []  # the default palette, not the Liver's
    assert CGSPanel._model_colours(["background", "Liver"], ran, chosen_since) == chosen_since.class_colors


def test_restoring_a_session_while_a_correction_runs_waits_for_it(qtbot, two_scans, monkeypatch):
    from napari_cgs.panel import prompt_tools

    viewer, panel, scan_a, scan_b = two_scans
    release = fx.held(monkeypatch, prompt_tools, "run_click")
    assert panel.correct_section.prompt_tools.click_at((4, 60, 60)) is not None
    assert panel.restore_session() is None
    assert "Wait for the correction" in plain(panel.status_label.text())
    release.set()
    qtbot.waitUntil(lambda: panel.correct_section.worker is None, timeout=60_000)


def test_a_cancelled_run_whose_image_was_closed_lets_go_of_it(qtbot, viewer_and_panel, sample_slab_path):
    """With no other image open the panel kept following the closed one: its labels stayed in the
    viewer, editable and tracked, and were never set aside or saved away."""
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    panel.autosave.flush()
    assert panel.presegment() is not None  # a re-run
    viewer.layers.remove(image)
    panel.cancel()
    fx.wait_until_finished(panel)
    qtbot.waitUntil(lambda: panel.labels_layer is None and panel.review.state is None)
    qtbot.waitUntil(lambda: not any(same_layer(labels, layer) for layer in viewer.layers))


def test_a_tool_answered_while_another_image_is_chosen_is_not_offered_on_it(qtbot, two_scans, monkeypatch):
    """Its removal preview was offered on the chosen image, dropped at once, and the status still
    said 'waiting for Apply or Discard'."""
    from napari_cgs.panel import correct_section as module

    viewer, panel, scan_a, scan_b = two_scans
    labels_a = viewer.layers[labels_layer_name(scan_a)]
    section = panel.correct_section
    organ = panel.class_names.index("Larynx")
    section.organ_choice.setCurrentIndex(section.organ_choice.findData(organ))
    labels_a.brush_size = 9
    labels_a.paint((6, 40, 40), organ)
    labels_a.brush_size = 3
    labels_a.paint((6, 90, 90), organ)  # a second piece: Keep largest would remove it
    before = np.array(labels_a.data, copy=True)
    from napari_cgs.panel import workers

    release = fx.held(monkeypatch, module, "run_and_summarise")
    section.tool_buttons["keep-largest"].click()
    run_goes_on = fx.held(monkeypatch, workers, "run_prediction")
    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS):
        assert panel.presegment() is not None  # a re-run of A, held until the tool has answered
        panel.select_image(scan_b)
        release.set()
        qtbot.waitUntil(lambda: section.worker is None, timeout=60_000)
        assert not section.preview.pending
        assert "not written" in plain(section.status.text())
        run_goes_on.set()
    fx.wait_until_finished(panel)
    np.testing.assert_array_equal(labels_a.data[6, 90, 90], before[6, 90, 90])


def test_opening_another_scan_while_a_correction_runs_still_restores_its_session(
    qtbot, two_scans, tmp_path, monkeypatch
):
    """Only a restore into labels on screen waits for a running correction; another scan's session,
    restored into a new layer, does not (the correction's result is then dropped, not written)."""
    from napari_cgs.panel import prompt_tools

    viewer, panel, scan_a, scan_b = two_scans
    labels_a = viewer.layers[labels_layer_name(scan_a)]
    for layer in [*layers_made_for(viewer, scan_b), scan_b]:  # B closed with all its layers
        viewer.layers.remove(layer)
    assert same_layer(panel.labels_layer, labels_a)
    before = np.array(labels_a.data, copy=True)
    release = fx.held(monkeypatch, prompt_tools, "run_click")
    assert panel.correct_section.prompt_tools.click_at((4, 60, 60)) is not None
    back = fx.open_image(viewer, tmp_path / "other_scan.nii.gz")
    panel.select_image(back)
    qtbot.waitUntil(lambda: panel.review.state is not None and same_layer(panel.review.image_layer, back))
    release.set()
    qtbot.waitUntil(lambda: panel.correct_section.worker is None, timeout=60_000)
    np.testing.assert_array_equal(labels_a.data, before)
