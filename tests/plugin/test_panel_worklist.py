"""Section 8 (which scan next) and the per-organ "likely wrong" line, through the Plugins-menu dock."""

from __future__ import annotations

import shutil

import numpy as np
import panel_fixtures as fx
import pytest
import SimpleITK as sitk

from napari_cgs._sample_data import BUNDLED_MODEL
from napari_cgs.panel.worklist_section import scan_text

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


@pytest.fixture
def scan_folder(tmp_path, sample_slab_path):
    """Three slabs of the bundled CT, two of them with part of the neck blanked out, plus a broken file."""
    folder = tmp_path / "scans"
    folder.mkdir()
    image = sitk.ReadImage(str(sample_slab_path))
    array = sitk.GetArrayFromImage(image)
    for index in range(3):
        changed = array.copy()
        changed[:, :, : 20 * index] = -1000
        out = sitk.GetImageFromArray(changed)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(folder / f"slab{index}.nii.gz"))
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    return folder


def score(qtbot, section, start):
    with qtbot.waitSignal(section.finished, timeout=fx.WAIT_MS) as blocker:
        assert start() is not None
    return blocker.args[0]


def test_a_folder_is_ranked_in_the_background_and_the_worst_scan_opens(qtbot, viewer_and_panel, scan_folder):
    viewer, panel = viewer_and_panel
    section = panel.worklist_section
    assert section.title().startswith("8 ") and not section.open_button.isEnabled()
    scores = score(qtbot, section, lambda: section.score_folder(scan_folder))
    assert [s.name for s in scores][-1] == "broken.nii.gz" and scores[-1].problem
    ranked = [s.score for s in scores[:3] if not s.found_no_organ]  # the tiny model may find none
    assert ranked == sorted(ranked, reverse=True)
    assert section.list.count() == 4
    assert section.list.item(0).text() == scan_text(1, scores[0], opened=False)
    assert "Ranked 4 scan(s)" in section.status.text() and "not Dice estimates" in section.status.text()
    assert section.open_button.isEnabled()
    layer = section.open_next()
    assert layer is not None and layer in viewer.layers and panel.image_layer is layer
    assert layer.name.startswith(scores[0].name.split(".")[0])
    assert "opened" in section.list.item(0).text()
    second = section.open_next()
    assert second is not None and second.name.startswith(scores[1].name.split(".")[0])
    section.open_next()
    assert section.open_next() is None and "Every ranked scan" in section.status.text()
    assert not section.open_button.isEnabled()


def test_open_next_passes_a_scan_deleted_or_replaced_after_it_was_ranked(
    qtbot, viewer_and_panel, scan_folder
):
    """A ranked scan deleted meanwhile: *Open next* chose it again and again, failing each time, and
    never reached the next one. One replaced by another file was opened under the old one's rank."""
    viewer, panel = viewer_and_panel
    section = panel.worklist_section
    scores = score(qtbot, section, lambda: section.score_folder(scan_folder))
    first, second, third = (scan_folder / s.name for s in scores[:3])
    first.unlink()
    shutil.copyfile(scan_folder / "broken.nii.gz", third)  # replaced: the bytes differ
    second.touch()  # only touched: the same scan
    assert section.open_next() is None and "Cannot open" in section.status.text()
    layer = section.open_next()
    assert layer is not None and layer.name.startswith(second.name.split(".")[0])
    assert section.open_next() is None and "Every ranked scan" in section.status.text()
    problems = {s.name: s.problem for s in section.scores}
    assert (
        problems[first.name].startswith("cannot open")
        and "changed since it was ranked" in problems[third.name]
    )
    assert not section.open_button.isEnabled()


def test_ranked_scans_are_fingerprinted_in_the_worker_not_the_gui_thread(
    qtbot, viewer_and_panel, scan_folder, monkeypatch
):
    """A DICOM folder's fingerprint is hundreds of file reads: taken on the GUI thread as each score
    arrived, it froze the viewer while a folder of series was ranked."""
    import threading

    from napari_cgs.panel import worklist_section

    threads = []
    real = worklist_section.scan_fingerprint

    def recording(path):
        threads.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(worklist_section, "scan_fingerprint", recording)
    viewer, panel = viewer_and_panel
    section = panel.worklist_section
    scores = score(qtbot, section, lambda: section.score_folder(scan_folder))
    assert len(threads) == len(scores) == 4
    assert threading.main_thread() not in threads
    assert set(section._fingerprints) == {s.path for s in scores}
    first = scores[0].path
    assert section._fingerprints[first] == real(worklist_section.Path(first))


def test_scoring_can_be_cancelled_and_the_viewer_stays_usable(qtbot, viewer_and_panel, scan_folder):
    viewer, panel = viewer_and_panel
    section = panel.worklist_section
    with qtbot.waitSignal(section.finished, timeout=fx.WAIT_MS) as blocker:
        section.score_folder(scan_folder)
        assert section.cancel_button.isEnabled() and not section.folder_button.isEnabled()
        viewer.dims.set_point(0, 1.0)  # the GUI thread is free while the worker scores
        section.cancel()
    assert len(blocker.args[0]) < 4 and section.status.text().startswith("Cancelled")
    assert section.folder_button.isEnabled() and not section.cancel_button.isEnabled()


def test_the_project_scans_are_ranked_with_its_active_model(qtbot, viewer_and_panel, scan_folder, tmp_path):
    viewer, panel = viewer_and_panel
    section = panel.worklist_section
    assert not section.project_button.isEnabled()
    project = panel.retrain_section.create_project(tmp_path / "proj")
    assert project is not None
    project.add_unlabeled(sorted(scan_folder.glob("slab*.nii.gz")))
    section.refresh()
    assert section.project_button.isEnabled()
    scores = score(qtbot, section, section.score_project)
    assert len(scores) == 3 and all(s.problem is None for s in scores)
    assert (project.folder / "worklist.json").is_file()


def test_a_calibrated_model_shows_likely_wrong_per_organ(qtbot, viewer_and_panel, sample_slab_path, tmp_path):
    from cgs_engine.infer import Predictor
    from cgs_engine.io import read_volume
    from cgs_engine.review.error_features import ZONES, collect_evidence
    from cgs_engine.review.error_model import fit_error_model, save_error_model, sidecar_path
    from cgs_engine.review.prediction import network_maps

    # The bundled model, not the tiny one: the tiny model may find no organ in the slab, and an
    # error model needs organ borders to fit on. Copied, so that its shipped calibration is not used.
    model = tmp_path / "calibrated.pt"
    shutil.copy(BUNDLED_MODEL, model)
    predictor = Predictor(model, device="cpu")
    volume = read_volume(sample_slab_path)
    prediction = predictor.predict(volume, maps=True)
    normalize = predictor.normalization.slab_normalizer(volume.array)
    evidence = collect_evidence(network_maps(prediction, volume.array, normalize), (1.0, 1.0, 1.0))
    assert evidence.count > 0, "the bundled model found no organ in the slab"
    wrong = evidence.zone == ZONES.index("edge_out")  # a test calibration, not a real one
    names = predictor.class_names
    save_error_model(fit_error_model([evidence], [wrong], names, {1: 20.0}), sidecar_path(model))

    viewer, panel = viewer_and_panel
    panel.load_checkpoint(model)
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    assert result.prediction.errors.calibrated
    assert panel.likely_wrong.isVisibleTo(panel) and "likely wrong" in panel.likely_wrong.text()
    assert all(region.source == "likely-wrong" for region in result.regions)
    if result.regions:
        assert "likely wrong" in panel.queue.list.item(0).text()
    expected = sum(o.likely_wrong_ml for o in result.prediction.errors.organs.values())
    assert np.isclose(expected, result.prediction.errors.likely_wrong_ml())


def test_opening_another_project_drops_the_old_projects_ranking(
    qtbot, viewer_and_panel, scan_folder, tmp_path, monkeypatch
):
    from napari_cgs.panel import worklist_section

    viewer, panel = viewer_and_panel
    section, retrain = panel.worklist_section, panel.retrain_section
    first = retrain.create_project(tmp_path / "first")
    first.add_unlabeled(sorted(scan_folder.glob("slab*.nii.gz")))
    assert len(score(qtbot, section, section.score_project)) == 3 and section.list.count() == 3
    second = retrain.create_project(tmp_path / "second")
    assert second is not None and retrain.project is second
    assert "first's scans was cleared" in section.status.text()
    assert section.list.count() == 0 and not section.open_button.isEnabled()

    # Scoring still running when a third project opens: its scores stay out of the list (the
    # engine saves them in the project they belong to) and its end does not overwrite the reason.
    second.add_unlabeled(sorted(scan_folder.glob("slab*.nii.gz"))[:2])
    release = fx.held(monkeypatch, worklist_section, "iterate_project_worklist")
    with qtbot.waitSignal(section.finished, timeout=fx.WAIT_MS) as blocker:
        section.score_project()
        assert section.score_project() is None and "Busy" in section.status.text()
        retrain.create_project(tmp_path / "third")
        assert "second's scans was stopped and cleared" in section.status.text()
        release.set()
    assert blocker.args[0] == [] and section.list.count() == 0
    assert "stopped and cleared" in section.status.text() and section.project_button.isEnabled()
    # Reopening the project the list ranks keeps its ranking.
    assert len(score(qtbot, section, section.score_project)) == 0
    retrain.open_project(tmp_path / "third")
    assert "cleared" not in section.status.text()
