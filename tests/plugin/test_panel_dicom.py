"""The panel's DICOM section: RTSTRUCT / SEG export for an image read from a DICOM series, and an
RTSTRUCT opened onto the series."""

from __future__ import annotations

import numpy as np
import panel_fixtures as fx
import pydicom
import pytest
import SimpleITK as sitk

import napari_cgs.panel.dialogs as dialogs
import napari_cgs.panel.dicom_section as _dicom_section
from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import export_rtstruct, read_series, write_ct_series
from cgs_engine.io import read_volume
from cgs_engine.volume import Geometry, Volume
from napari_cgs._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_cgs.panel.dicom_section import rtstruct_layer_name
from napari_cgs.panel.prediction_layers import labels_layer_name

home_sessions = fx.home_sessions
SLAB = slice(60, 80)  # parotids, mandible, spinal cord


def _slab(path, kind) -> Volume:
    """Slices SLAB of a bundled volume, with their own origin."""
    volume = read_volume(path, kind=kind)
    part = sitk.ReadImage(str(path))[:, :, SLAB]
    geometry = Geometry(part.GetSpacing(), part.GetOrigin(), part.GetDirection())
    return Volume(volume.array[SLAB], geometry, kind, str(path))


@pytest.fixture
def series_folder(tmp_path):
    folder = tmp_path / "CT_pt222"
    write_ct_series(_slab(SAMPLE_CT, "image"), folder)
    return folder


@pytest.fixture
def viewer_and_bundled_panel(make_napari_viewer, home_sessions):
    from napari_cgs.panel.dock import CGSPanel

    viewer = make_napari_viewer()
    panel = CGSPanel(viewer)  # the bundled model
    viewer.window.add_dock_widget(panel, name="CGS", area="right")
    yield viewer, panel
    panel.cancel()
    if panel.job is not None:
        fx.wait_until_finished(panel)
    panel.autosave.stop()


def _wait(qtbot, section):
    qtbot.waitUntil(lambda: section.worker is None, timeout=fx.WAIT_MS)


def test_export_rtstruct_and_seg_of_a_presegmented_dicom_series(
    qtbot, viewer_and_bundled_panel, series_folder
):
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    nifti = viewer.add_image(np.zeros((4, 16, 16)), name="not dicom")
    panel.select_image(nifti)
    assert not section.rtstruct_button.isEnabled()
    image = fx.open_image(viewer, series_folder)
    panel.select_image(image)
    assert section.open_button.isEnabled()
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    assert section.rtstruct_button.isEnabled() and section.seg_button.isEnabled()
    rs = series_folder.parent / "RS.dcm"
    with qtbot.waitSignal(section.exported, timeout=fx.WAIT_MS):
        section.export("RTSTRUCT", rs)
    _wait(qtbot, section)
    dataset = pydicom.dcmread(rs)
    assert dataset.Modality == "RTSTRUCT"
    series = read_series(series_folder)
    assert dataset.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == series.frame_of_reference_uid
    present = {int(v) for v in np.unique(labels.data)} - {0}
    table = derive_class_table(openkbp_class_names())
    assert {roi.ROIName for roi in dataset.StructureSetROISequence} == {
        table.by_id(i).structure_name for i in present
    }
    seg = series_folder.parent / "SEG.dcm"
    with qtbot.waitSignal(section.exported, timeout=fx.WAIT_MS):
        section.export("BINARY", seg)
    _wait(qtbot, section)
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert "Wrote SEG SEG.dcm" in section.status.text() and "in the viewer" not in section.status.text()
    # the labels dragged in the viewer: written on the series' grid, and said (it said nothing)
    labels.translate = np.add(labels.translate, (0.0, 9.0, 0.0))
    with qtbot.waitSignal(section.exported, timeout=fx.WAIT_MS):
        section.export("RTSTRUCT", series_folder.parent / "RS_moved.dcm")
    _wait(qtbot, section)
    assert "labels layer had been moved by 9.0 mm in the viewer: written on the series' own grid" in (
        section.status.text()
    )
    # another image chosen: the status no longer speaks of the last export (B looked exported)
    other = fx.open_image(viewer, series_folder)
    panel.select_image(other)
    assert section.status.text() == f"DICOM series: {series_folder.name}"


def test_existing_files_are_kept_unless_confirmed(
    qtbot, viewer_and_bundled_panel, series_folder, monkeypatch
):
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    image = fx.open_image(viewer, series_folder)
    fx.presegment(qtbot, panel, image)
    rs = series_folder.parent / "RS.dcm"
    rs.write_bytes(b"old plan")
    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: False)
    assert section.export("RTSTRUCT", rs) is None
    assert rs.read_bytes() == b"old plan" and "kept" in section.status.text()
    monkeypatch.setattr(dialogs, "confirm_replace", lambda parent, path: True)
    with qtbot.waitSignal(section.exported, timeout=fx.WAIT_MS):
        section.export("RTSTRUCT", rs)
    _wait(qtbot, section)
    assert pydicom.dcmread(rs).Modality == "RTSTRUCT"


def test_open_an_rtstruct_onto_the_series(
    qtbot, viewer_and_bundled_panel, series_folder, tmp_path, monkeypatch
):
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    series = read_series(series_folder)
    truth = _slab(SAMPLE_LABELS, "labels")
    rs = export_rtstruct(
        truth, series, derive_class_table(openkbp_class_names()), tmp_path / "RS_clinic.dcm"
    ).path
    image = fx.open_image(viewer, series_folder)
    panel.select_image(image)
    monkeypatch.setattr(_dicom_section, "choose_rtstruct_path", lambda parent, folder: str(rs))
    with qtbot.waitSignal(section.imported, timeout=fx.WAIT_MS) as blocker:
        section.open_button.click()
    _wait(qtbot, section)
    layer = blocker.args[0]
    assert layer.name == rtstruct_layer_name(image) and layer in viewer.layers
    np.testing.assert_array_equal(layer.data, truth.array)
    fx.assert_same_transforms(layer, image)
    organs = len(np.unique(truth.array)) - 1
    assert organs >= 4 and f"Opened {organs} ROIs" in section.status.text()
    # which organ each ROI became is said where the names differ (TG-263 names vs the model's)
    assert "Read as: " in section.status.text() and "Parotid_R → " in section.status.text()


def test_an_rtstruct_of_another_series_fails_with_one_line(
    qtbot, viewer_and_bundled_panel, series_folder, tmp_path
):
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    other_folder = tmp_path / "other"
    write_ct_series(_slab(SAMPLE_CT, "image"), other_folder)  # same pixels, its own frame of reference
    rs = export_rtstruct(
        _slab(SAMPLE_LABELS, "labels"),
        read_series(other_folder),
        derive_class_table(openkbp_class_names()),
        tmp_path / "RS_other.dcm",
    ).path
    image = fx.open_image(viewer, series_folder)
    panel.select_image(image)
    with qtbot.waitSignal(section.failed, timeout=fx.WAIT_MS) as blocker:
        section.open_rtstruct(rs)
    _wait(qtbot, section)
    assert "frame of reference" in blocker.args[0] and "\n" not in blocker.args[0]
    assert rtstruct_layer_name(image) not in viewer.layers
    assert section.status.text().startswith("Failed: ")


def test_labels_exported_from_a_dicom_series_record_it_and_no_other_series_takes_them(
    qtbot, viewer_and_bundled_panel, series_folder, capsys
):
    """*Export labels…* of an image read from a DICOM folder says which series (and patient) the
    labels belong to, so `cgs rtstruct export` refuses them for another patient's series of the
    same grid."""
    import json

    from cgs_engine.cli.main import main

    viewer, panel = viewer_and_bundled_panel
    image = fx.open_image(viewer, series_folder)
    fx.presegment(qtbot, panel, image)
    target = series_folder.parent / "pt222_labels.nii.gz"
    written = panel.export(target)
    made_on = json.loads(written[1].read_text())["made_on"]
    assert made_on == {
        "dicom_series": read_series(series_folder).series_instance_uid,
        "patient_id": "CGS-TEST",
    }

    other = series_folder.parent / "CT_other"
    write_ct_series(_slab(SAMPLE_CT, "image"), other, patient_id="SOMEONE-ELSE")
    capsys.readouterr()
    rs = series_folder.parent / "RS.dcm"
    assert main(["rtstruct", "export", str(target), "--dicom", str(other), "-o", str(rs)]) == 2
    assert "patient SOMEONE-ELSE" in capsys.readouterr().err and not rs.exists()
    assert main(["rtstruct", "export", str(target), "--dicom", str(series_folder), "-o", str(rs)]) == 0


def test_an_export_writes_the_labels_as_they_were_at_the_click(
    qtbot, viewer_and_bundled_panel, series_folder, monkeypatch
):
    """The worker read the labels layer's own array: strokes painted while it wrote went into the
    file half-way."""
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    image = fx.open_image(viewer, series_folder)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    at_click = np.array(labels.data, copy=True)
    real, seen = _dicom_section.export_job, []

    def look_then_export(args):
        seen.append(np.array(args[1].array, copy=True))
        return real(*args)

    release = fx.held(monkeypatch, _dicom_section, "export_job", look_then_export)
    assert section.export("RTSTRUCT", series_folder.parent / "RS.dcm") is not None
    labels.brush_size = 5
    labels.paint((3, 100, 100), 7)  # while it is written
    assert not np.array_equal(labels.data, at_click)
    with qtbot.waitSignal(section.exported, timeout=fx.WAIT_MS):
        release.set()
    _wait(qtbot, section)
    np.testing.assert_array_equal(seen[0], at_click)


def test_an_rtstruct_read_for_an_image_closed_meanwhile_is_not_shown(
    qtbot, viewer_and_bundled_panel, series_folder, tmp_path, monkeypatch
):
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    series = read_series(series_folder)
    rs = export_rtstruct(
        _slab(SAMPLE_LABELS, "labels"), series, derive_class_table(openkbp_class_names()), tmp_path / "RS.dcm"
    ).path
    image = fx.open_image(viewer, series_folder)
    panel.select_image(image)
    release = fx.held(monkeypatch, _dicom_section, "import_job")
    assert section.open_rtstruct(rs) is not None
    viewer.layers.remove(image)
    release.set()
    _wait(qtbot, section)
    assert len(viewer.layers) == 0  # no RTSTRUCT layer over nothing


def test_edits_of_an_opened_rtstruct_survive_opening_it_again_and_closing_the_image(
    qtbot, viewer_and_bundled_panel, series_folder, tmp_path, monkeypatch
):
    """Opening the RTSTRUCT again replaced the layer the user had corrected, and closing the CT
    removed it with the session's layers ("comes back when you open the file again": it did not)."""
    viewer, panel = viewer_and_bundled_panel
    section = panel.dicom_section
    series = read_series(series_folder)
    truth = _slab(SAMPLE_LABELS, "labels")
    table = derive_class_table(openkbp_class_names())
    rs = export_rtstruct(truth, series, table, tmp_path / "RS_clinic.dcm").path
    image = fx.open_image(viewer, series_folder)
    panel.select_image(image)
    monkeypatch.setattr(_dicom_section, "choose_rtstruct_path", lambda parent, folder: str(rs))

    def open_it():
        with qtbot.waitSignal(section.imported, timeout=fx.WAIT_MS) as blocker:
            section.open_button.click()
        _wait(qtbot, section)
        return blocker.args[0]

    first = open_it()
    again = open_it()  # unedited: read again in its place
    assert first not in viewer.layers and [layer.name for layer in viewer.layers].count(again.name) == 1
    again.paint((5, 10, 10), 3)  # the user corrects the clinical contours
    edited = np.array(again.data)
    newest = open_it()
    assert again in viewer.layers and again.name == f"{rtstruct_layer_name(image)} (edited)"
    np.testing.assert_array_equal(again.data, edited)
    assert "edits of the earlier one are kept" in section.status.text()
    # pre-segmented and saved, the CT closed: the session's layers go, the edited RTSTRUCT stays
    fx.presegment(qtbot, panel, image)
    panel.autosave.save_now(wait=True)
    viewer.layers.remove(image)
    qtbot.waitUntil(lambda: newest not in viewer.layers)  # unedited: the file still has it
    assert again in viewer.layers and not again.editable
    np.testing.assert_array_equal(again.data, edited)
    assert "is in no session: it stays" in panel.status_label.text().replace("\u200b", "")
