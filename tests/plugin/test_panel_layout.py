"""The panel fits its dock: at 1280 x 800, docked from the Plugins menu, nothing is cut off at the right.

The window is shown (a hidden one is never laid out). ``layout_problems`` lists every control
outside the scroll area's visible width and every text cut off; the same check runs in
``scripts/panel_screens.py`` on the pictures of README's gallery.
"""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pytest
from qtpy.QtWidgets import QApplication, QScrollArea

from cgs_engine.retrain.recipe import RETRAIN_DEFAULTS
from napari_cgs.panel.fit import ZERO_WIDTH_SPACE, breakable, layout_problems, plain

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
home_sessions = fx.home_sessions
sample_slab_path = fx.sample_slab_path

WINDOW = (1280, 800)


def shown_panel(make_napari_viewer, size=WINDOW):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*size)
    panel = fx.dock_panel(viewer)
    settle()
    return viewer, panel


def settle() -> None:
    for _ in range(5):
        QApplication.processEvents()


def test_breakable_text_reads_the_same_and_wraps_anywhere():
    name = "3f" * 32 + ".cgs-session.h5"
    text = f"Restored the session ({name})."
    wrapped = breakable(text)
    assert plain(wrapped) == text
    assert all(len(word) <= 16 for word in wrapped.replace(" ", ZERO_WIDTH_SPACE).split(ZERO_WIDTH_SPACE))
    assert breakable("short words stay as they are") == "short words stay as they are"


def test_fresh_panel_fits_the_dock_at_1280_by_800(make_napari_viewer, home_sessions):
    viewer, panel = shown_panel(make_napari_viewer)
    assert layout_problems(panel) == []
    dock = panel.parentWidget()
    window = viewer.window._qt_window
    assert dock.mapTo(window, dock.rect().topRight()).x() < window.width()  # the dock itself is on screen
    panel.autosave.stop()


def test_a_restored_session_with_a_long_file_name_keeps_the_panel_in_its_dock(
    qtbot, make_napari_viewer, tiny_checkpoint, home_sessions, sample_slab_path
):
    """Bug: the session line (a 64-hex file name) forced the content to 591 px; Next, Skip and the
    retrain Cancel went off-screen and the panel slid sideways when the focus moved."""
    import SimpleITK as sitk

    viewer, panel = shown_panel(make_napari_viewer)
    panel.load_checkpoint(tiny_checkpoint)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_slab_path)))
    image = viewer.add_image(array, name="unsaved scan")  # no source file: the session goes home
    fx.presegment(qtbot, panel, image)
    panel.autosave.flush()
    settle()  # the "autosaved" notice of that save, before the session is restored
    assert len(next(home_sessions.iterdir()).name.split(".")[0]) == 64
    viewer.layers.clear()
    viewer.add_image(np.array(array), name="unsaved scan")  # the same voxels: restored by itself
    settle()
    assert "Restored" in plain(panel.session_label.text())
    assert layout_problems(panel) == []
    scroll = panel.findChild(QScrollArea)
    panel.queue.skip_button.setFocus()  # focus on a control at the right edge: nothing slides
    settle()
    assert scroll.horizontalScrollBar().value() == 0
    panel.autosave.stop()


class RecordedRetrain:
    """Stands in for the worker process: hands the section the messages a real retrain sends."""

    def __init__(self, folder, messages):
        self.log_path = folder / "worker.log"
        self.pid = 0
        self._messages = list(messages)

    def poll_messages(self):
        messages, self._messages = self._messages[:1], self._messages[1:]
        return messages

    def cancel(self):
        pass


RUNNING = [
    {"kind": "stage", "stage": "preparing data"},
    {"kind": "start", "total": None, "minutes": 10.0, "max_iterations": 300, "heldout": ["ct_slab~heldout"]},
    {"kind": "step", "step": 48, "progress": 0.16, "loss_total": 0.5123},
    {"kind": "val", "step": 48, "dice_mean": 0.6123},
]
ENDED = {
    "kind": "cancelled",
    "version": "v0002",
    "activated": False,
    "reason": "held-out Dice 61.2 is below the active model's 63.0 (tolerance 0.0): kept as rejected",
    "steps": 48,
}


def test_every_state_fits_at_1280_by_800(
    qtbot, make_napari_viewer, tiny_checkpoint, home_sessions, sample_slab_path, tmp_path, monkeypatch
):
    """Pre-segmented, reviewing (outlines, a region decided), retraining and its outcome."""
    import cgs_engine.retrain.worker as project_module

    viewer, panel = shown_panel(make_napari_viewer)
    panel.load_checkpoint(tiny_checkpoint)
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    settle()
    assert layout_problems(panel) == []
    panel.review.accept()
    panel.display.labels_style.setCurrentText("Outlines")
    settle()
    assert layout_problems(panel) == []

    section = panel.retrain_section
    assert section.create_project(tmp_path / "a project with a rather long folder name") is not None
    assert section.add_correction()
    qtbot.waitUntil(lambda: not section._busy, timeout=60_000)
    recorded = RecordedRetrain(tmp_path, RUNNING)
    monkeypatch.setattr(project_module, "start_retrain_process", lambda *args, **kwargs: recorded)
    section.timer.setInterval(10)
    seen, ended = [], []
    section.retrain_message.connect(seen.append)
    section.retrain_ended.connect(ended.append)
    assert section.start_retrain() is recorded
    qtbot.waitUntil(lambda: len(seen) == len(RUNNING), timeout=10_000)
    settle()
    assert "ends at 10 min or 300 iterations" in plain(section.progress_label.text())
    cap = RETRAIN_DEFAULTS["max_iterations"]
    assert f"after {cap} iterations" in plain(section.cap_label.text())
    assert layout_problems(panel) == []
    recorded._messages.append(ENDED)  # the user pressed Cancel; the worker kept a version
    qtbot.waitUntil(lambda: bool(ended), timeout=10_000)
    settle()
    assert plain(section.status_label.text()).startswith(
        "Retrain cancelled after 48 iterations: v0002 kept inactive"
    )
    assert layout_problems(panel) == []
    panel.autosave.stop()
