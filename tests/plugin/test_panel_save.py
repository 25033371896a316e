"""Exporting from the Save section: its messages appear there, and the dialog proposes a writable folder."""

from __future__ import annotations

import panel_fixtures as fx
import pytest

import napari_cgs.panel.dock as _panel
from napari_cgs.panel.fit import plain

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def test_export_messages_appear_in_the_save_section(qtbot, viewer_and_panel, sample_slab_path, monkeypatch):
    viewer, panel = viewer_and_panel
    panel.export_button.click()  # nothing to export yet
    assert "Nothing to export yet" in plain(panel.export_status.text())
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    before = panel.status_label.text()
    target = sample_slab_path.parent / "out" / "slab_labels.nii.gz"
    target.parent.mkdir()
    monkeypatch.setattr(_panel, "choose_export_path", lambda parent, suggestion: str(target))
    panel.export_button.click()
    assert target.exists()
    text = plain(panel.export_status.text())
    assert text.startswith("Exported slab_labels.nii.gz and its class table slab_labels_classes.json")
    assert panel.export_status.isVisibleTo(panel)
    assert panel.status_label.text() == before  # section 2 keeps its own line

    # the next export proposes the folder of the last one when the image's folder is not writable
    monkeypatch.setattr(_panel, "writable_folder", lambda folder: folder != sample_slab_path.parent)
    assert panel._export_suggestion().parent == target.parent


def test_an_unwritable_image_folder_is_never_proposed(qtbot, viewer_and_panel, sample_slab_path, monkeypatch):
    from pathlib import Path

    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    assert panel._export_suggestion().parent == sample_slab_path.parent
    monkeypatch.setattr(_panel, "writable_folder", lambda folder: folder != sample_slab_path.parent)
    assert panel._export_suggestion().parent == Path.home()
