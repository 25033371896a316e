"""The panel's retrain section: project, corrections, retraining in a worker process, versions.

The base model is an untrained CGS network at 32 px (created in a blink) rather than the
trained ``tiny_checkpoint``: these tests exercise the plumbing, and every retrain runs in a
real worker process, so the fewer seconds per step the better.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import panel_fixtures as fx
import pytest
import torch
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox

import napari_cgs.panel.retrain_section as _retrain
from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint, save_checkpoint
from cgs_engine.infer.predictor import Predictor
from cgs_engine.io import read_volume, write_volume
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.normalize import Normalization
from cgs_engine.project import Project, ProjectError
from cgs_engine.retrain import retrain
from cgs_engine.review.state import ACCEPTED, EDITED
from cgs_engine.volume import Volume
from napari_cgs._sample_data import SAMPLE_CLASS_NAMES, SAMPLE_CT, SAMPLE_LABELS
from napari_cgs.panel.fit import plain
from napari_cgs.panel.prediction_layers import SEPARATOR, labels_layer_name

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

home_sessions = fx.home_sessions
sample_slab_path = fx.sample_slab_path

# Small, fast retrains: one thread (on tiny tensors two threads mostly wait on each other).
TINY_TRAIN = {"batch_labeled": 2, "batch_unlabeled": 2, "val_every": 5, "precision": "fp32", "seed": 1}
RETRAIN_WAIT_MS = 180_000
REVIEWED_SLICES = 8


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """An untrained CGS model for the OpenKBP classes and the CT window: enough to retrain."""
    torch.manual_seed(0)
    names = list(SAMPLE_CLASS_NAMES)
    config = ModelConfig(num_classes=len(names), widths=(4, 8, 16), dropouts=(0.0, 0.1, 0.2))
    checkpoint = ModelCheckpoint(
        config, build_model(config).state_dict(), names, 32, Normalization().to_dict()
    )
    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("base") / "base.pt")


def slab_correction(project: Project, name: str = "slab") -> None:
    """The bundled CT's 12-slice slab with its clinical contours, the first 8 slices reviewed."""
    image, labels = read_volume(SAMPLE_CT), read_volume(SAMPLE_LABELS, kind="labels")
    review = np.zeros(image.array[fx.SLAB].shape, np.uint8)
    review[:REVIEWED_SLICES] = 1
    slab = Volume(image.array[fx.SLAB], image.geometry)  # the geometry's origin matters little here
    project.add_correction(name, slab, labels.array[fx.SLAB], review)


@pytest.fixture(scope="module")
def retrained_template(tmp_path_factory, base_model) -> Path:
    """A project with one correction and a second version, retrained in this process (v0002)."""
    project = Project.create(
        tmp_path_factory.mktemp("template") / "project",
        SAMPLE_CLASS_NAMES,
        Normalization(),
        base_model=base_model,
    )
    project.update_settings(train=TINY_TRAIN)
    slab_correction(project)
    result = retrain(project, iterations=10, settings={"threads": 1, "lr": 0.05})
    assert result.version == "v0002"
    return project.folder


@pytest.fixture
def retrained_project(retrained_template, tmp_path) -> Project:
    shutil.copytree(retrained_template, tmp_path / "retrained")
    project = Project.open(tmp_path / "retrained")
    project.activate("v0001", why="test starts from the base model")
    return project


@pytest.fixture
def project_with_correction(tmp_path, base_model) -> Project:
    project = Project.create(tmp_path / "project", SAMPLE_CLASS_NAMES, Normalization(), base_model=base_model)
    project.update_settings(train=TINY_TRAIN)
    slab_correction(project)
    return project


@pytest.fixture
def viewer_and_panel(make_napari_viewer, base_model, home_sessions):
    viewer = make_napari_viewer()
    panel = fx.dock_panel(viewer)
    panel.load_checkpoint(base_model)
    yield viewer, panel
    process = panel.retrain_section.process
    if process is not None:  # a test that failed half-way: never leave a worker behind
        process.cancel()
        process.wait(timeout=60)
    panel.retrain_section.shutdown()
    panel.cancel()
    if panel.job is not None:
        fx.wait_until_finished(panel)
    panel.autosave.stop()


def presegment_and_review(qtbot, viewer, panel, path: Path):
    image = fx.open_image(viewer, path)
    assert fx.presegment(qtbot, panel, image) is not None
    reviewed = (slice(0, REVIEWED_SLICES), slice(None), slice(None))
    panel.review.mark_edited([(reviewed, None)])  # as if the user had checked these slices
    return image


def add_correction(qtbot, section) -> object:
    with qtbot.waitSignal(section.correction_added, timeout=60_000) as blocker:
        assert section.add_correction()
    return blocker.args[0]


def wait_for_end(qtbot, section) -> dict:
    with qtbot.waitSignal(section.retrain_ended, timeout=RETRAIN_WAIT_MS) as blocker:
        pass
    return blocker.args[0]


def test_add_as_corrected_and_unlabeled_folder(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path, monkeypatch
):
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    controls = section.findChildren(QAbstractButton) + section.findChildren(QAbstractSpinBox)
    assert len(controls) >= 9 and all(control.toolTip() for control in controls)
    assert not section.add_button.isEnabled() and not section.retrain_button.isEnabled()

    monkeypatch.setattr(_retrain, "choose_new_project_folder", lambda parent: str(tmp_path / "new"))
    section.new_button.click()
    project = section.project
    assert project is not None and project.active_version().id == "v0001"
    assert "0 corrected volume(s)" in section.counts_label.text() and section.versions.count() == 1

    image = presegment_and_review(qtbot, viewer, panel, sample_slab_path)
    labels = viewer.layers[labels_layer_name(image)]
    info = add_correction(qtbot, section)
    assert [c.name for c in project.corrections()] == [info.name] == ["ct_slab"]
    stored = project.read_correction(info.name)
    np.testing.assert_array_equal(stored.labels, labels.data)
    np.testing.assert_array_equal(stored.review, panel.review_mask())
    assert info.reviewed_voxels == REVIEWED_SLICES * 128 * 128
    assert stored.image.geometry.is_close(read_volume(sample_slab_path).geometry)
    assert "Saved “ct_slab” as a corrected volume" in section.status_label.text()
    assert "1 corrected volume(s), 1 new" in section.counts_label.text()

    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_slab_path, scans / "a.nii.gz")
    segmentation = np.zeros((4, 16, 16), np.uint8)
    segmentation[:, 4:8, 4:8] = 3  # a reference segmentation kept beside the scans
    write_volume(Volume(segmentation, kind="labels"), scans / "a_seg.nii.gz")
    monkeypatch.setattr(_retrain, "choose_unlabeled_folder", lambda parent: str(scans))
    with qtbot.waitSignal(section.unlabeled_added, timeout=60_000) as blocker:
        section.unlabeled_button.click()
    assert blocker.args == [1] and [s.path.name for s in project.unlabeled()] == ["a.nii.gz"]
    assert "1 unlabeled scan(s)" in section.counts_label.text()
    assert "Left out 1 label map(s)" in plain(section.status_label.text())
    assert "a_seg.nii.gz: looks like a label map" in section.status_label.toolTip()


def test_retrain_from_the_panel_lists_the_new_version(qtbot, viewer_and_panel, project_with_correction):
    _, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(project_with_correction.folder)
    messages = []
    section.retrain_message.connect(messages.append)
    process = section.start_retrain(iterations=3)
    assert process is not None and section.retraining and not section.retrain_button.isEnabled()
    assert process.running or process.returncode == 0

    ended = wait_for_end(qtbot, section)
    assert ended["kind"] == "finished" and ended["version"] == "v0002", ended
    assert process.wait(timeout=30) == 0
    assert [m["kind"] for m in messages][-2:] == ["version", "finished"]
    assert section.progress_label.text().startswith("Iteration 3/3 · loss ")
    assert section.versions.count() == 2
    verdict = "activated" if ended["activated"] else "kept inactive"
    assert f"v0002 {verdict} ({ended['reason']})" in section.status_label.text()
    if ended["activated"]:  # the panel follows the project's active model
        assert panel.model_choice.value == str(project_with_correction.version("v0002").model_path)
    assert section.retrain_button.isEnabled() and not section.cancel_button.isEnabled()


def test_cancel_stops_the_worker(qtbot, viewer_and_panel, project_with_correction):
    _, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(project_with_correction.folder)
    with qtbot.waitSignal(
        section.retrain_message, timeout=RETRAIN_WAIT_MS, check_params_cb=lambda m: m["kind"] == "step"
    ):
        process = section.start_retrain(iterations=100_000)
    section.cancel_button.click()
    assert "Cancelling" in section.status_label.text()
    ended = wait_for_end(qtbot, section)
    assert ended["kind"] == "cancelled" and 0 < ended["steps"] < 100_000
    assert process.wait(timeout=30) == 0 and not process.running
    assert not section.retraining and section.retrain_button.isEnabled()
    assert section.status_label.text().startswith("Retrain cancelled after")
    assert section.versions.count() == (2 if ended["version"] else 1)


def test_activate_swaps_the_model_into_the_predictor(viewer_and_panel, retrained_project):
    _, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(retrained_project.folder)
    old, new = (retrained_project.version(v).model_path for v in ("v0001", "v0002"))
    assert panel.model_choice.value == str(old)
    panel.set_predictor(Predictor(old, device="cpu"))
    predictor = panel.predictor

    section.select_version("v0002")
    section.activate_button.click()
    assert Project.open(retrained_project.folder).active_version().id == "v0002"
    assert panel.predictor is predictor and panel.model_choice.value == str(new)
    swapped = predictor.checkpoint.state_dict
    expected, before = load_checkpoint(new).state_dict, load_checkpoint(old).state_dict
    assert all(torch.equal(swapped[key], expected[key]) for key in expected)
    assert any(not torch.equal(swapped[key], before[key]) for key in before)
    assert section.versions.currentItem().text().startswith("● v0002")

    section.activate("v0001")  # roll back
    assert Project.open(retrained_project.folder).active_version().id == "v0001"
    assert all(torch.equal(predictor.checkpoint.state_dict[k], before[k]) for k in before)


def test_repredict_reports_changes_on_untouched_voxels(
    qtbot, viewer_and_panel, retrained_project, sample_slab_path
):
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(retrained_project.folder)
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]
    labels.selected_label, labels.brush_size = 7, 9
    labels.paint((3, 60, 60), 7)  # the user's brush
    touched = panel.review_mask().astype(bool)
    assert touched.any() and (labels.data[touched] == 7).all()

    section.activate("v0002")
    with qtbot.waitSignal(section.changes_shown, timeout=fx.WAIT_MS) as blocker:
        assert section.repredict() is not None
        labels.selected_label, labels.brush_size = 6, 5
        labels.paint((8, 30, 30), 6)  # a stroke while it runs: the user's, not the model's change
    fx.wait_until_finished(panel)
    changes = blocker.args[0]
    assert (labels.data[touched] == 7).all()  # the user's voxels were not re-predicted
    touched = panel.review_mask().astype(bool)
    assert labels.data[8, 30, 30] == 6 and touched[8, 30, 30]

    layer = viewer.layers[f"{image.name}{SEPARATOR}changes"]
    assert not layer.visible and layer.data.shape == image.data.shape
    fx.assert_same_transforms(layer, image)
    assert np.count_nonzero(layer.data) == changes.changed and not layer.data[touched].any()
    assert changes.changed > 0, "the retrained model should differ somewhere from the base model"
    assert section.status_label.text().startswith(f"Re-predicted {image.name} with retrained · v0002: ")
    assert f"{changes.changed:,} voxels changed" in section.status_label.text()


def test_a_few_strokes_and_accepted_regions_end_in_a_judged_version(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path, monkeypatch
):
    """Issue 21: a few brush strokes plus accepted regions must be judged on data both models could
    get right. Judged on the stroked voxels alone, the active model scored 0.0 by construction and
    every version was rejected ("held-out Dice 0.0 < active 2.6" or the reverse)."""
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    monkeypatch.setattr(_retrain, "choose_new_project_folder", lambda parent: str(tmp_path / "few"))
    project = section.create_project()
    project.update_settings(train=TINY_TRAIN)
    image = fx.open_image(viewer, sample_slab_path)
    fx.presegment(qtbot, panel, image)
    labels = viewer.layers[labels_layer_name(image)]

    for _ in range(5):  # accept the queue's first regions as the model drew them
        panel.review.accept()
    accepted = (panel.review_mask() == ACCEPTED) & (labels.data > 0)
    assert accepted.any(), "the accepted regions should hold some organ voxels"
    stroke_slices = np.flatnonzero(accepted.any(axis=(1, 2)))[:6]
    labels.brush_size = 3
    for z in stroke_slices:  # a small stroke of an organ the model did not draw there
        y, x = (int(v) for v in np.argwhere(accepted[z])[0])
        label = 1 + int(labels.data[z, y, x]) % (len(SAMPLE_CLASS_NAMES) - 1)
        labels.selected_label = label
        labels.paint((int(z), y, x), label)
    edited = panel.review_mask() == EDITED
    assert 0 < np.count_nonzero(edited) < 200  # a few strokes, not a painted organ

    add_correction(qtbot, section)
    section.start_retrain(iterations=3)
    ended = wait_for_end(qtbot, section)
    assert ended["kind"] == "finished" and ended["version"] == "v0002", ended
    judged = re.search(r"held-out Dice (\d+\.\d) (>=|<) active (\d+\.\d)", ended["reason"])
    assert judged is not None, ended["reason"]
    assert float(judged.group(3)) > 0, f"the active model judged only where it was wrong: {ended['reason']}"
    assert ended["reason"] in section.status_label.text()


def test_automatic_retrain_after_n_new_corrections(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path, monkeypatch
):
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    monkeypatch.setattr(_retrain, "choose_new_project_folder", lambda parent: str(tmp_path / "auto"))
    project = section.create_project()
    section.auto_box.setValue(2)
    project.update_settings(train=TINY_TRAIN)
    assert Project.open(project.folder).settings["retrain_after_n"] == 2
    assert "automatic retrain at 2" in section.counts_label.text()

    presegment_and_review(qtbot, viewer, panel, sample_slab_path)
    add_correction(qtbot, section)
    add_correction(qtbot, section)  # the same volume saved again: still one new volume
    assert not section.retraining and len(project.new_corrections_since_last_retrain()) == 1

    second = tmp_path / "second_slab.nii.gz"
    shutil.copy(sample_slab_path, second)
    presegment_and_review(qtbot, viewer, panel, second)
    add_correction(qtbot, section)
    assert section.retraining, section.status_label.text()
    assert section.status_label.text().startswith("Automatic retrain started")
    section.cancel_retrain()
    assert wait_for_end(qtbot, section)["kind"] == "cancelled"


def test_bad_project_folder_gives_a_one_line_error(viewer_and_panel, tmp_path, monkeypatch):
    _, panel = viewer_and_panel
    section = panel.retrain_section
    errors = []
    section.failed.connect(errors.append)
    section.add_correction()
    assert section.status_label.text() == "No project: create or open a retraining project first"

    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("not a project")
    monkeypatch.setattr(_retrain, "choose_project_folder", lambda parent: str(plain))
    section.open_button.click()
    text = section.status_label.text()
    assert text.startswith("Cannot open the project: ") and "not a napari-cgs project" in text
    assert "\n" not in text and section.project is None
    assert section.open_project(tmp_path / "missing") is None
    assert "no such project folder" in section.status_label.text()
    assert section.create_project(plain) is None
    assert "already exists and is not an empty folder" in section.status_label.text()
    assert len(errors) == 4 and all("\n" not in error for error in errors)


def test_the_same_scan_saved_again_replaces_its_correction_and_a_refusal_is_one_line(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path, monkeypatch
):
    """napari names a second ``ct_slab`` "ct_slab [1]": the same scan saved under it went in twice
    (its older labels kept training). And a refused save (the project folder gone) raised a
    traceback through superqt, which aborts Python where napari's hooks are not installed."""
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    project = section.create_project(tmp_path / "project")
    other = tmp_path / "b" / sample_slab_path.name
    other.parent.mkdir()
    shutil.copy(sample_slab_path, other)
    fx.open_image(viewer, other)  # opened first: the next one is called "ct_slab [1]"
    image = presegment_and_review(qtbot, viewer, panel, sample_slab_path)
    assert image.name.endswith("[1]")
    first = add_correction(qtbot, section)
    assert first.name == "ct_slab _1_"
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)
    image = presegment_and_review(qtbot, viewer, panel, sample_slab_path)  # alone now: "ct_slab"
    again = add_correction(qtbot, section)
    assert again.name == first.name and again.revision != first.revision
    assert [c.name for c in project.corrections()] == [first.name]

    raised = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: raised.append(exc))
    shutil.rmtree(project.folder)
    errors = []
    section.failed.connect(errors.append)
    assert section.add_correction()
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    qtbot.wait(200)
    assert raised == [] and "\n" not in errors[0] and "no longer there" in errors[0]
    section.minutes_box.setValue(section.minutes_box.value() + 1)  # its lock file made the folder again
    assert section.start_retrain() is None
    assert "no longer there" in section.status_label.text().replace("\u200b", "")
    assert not project.folder.exists()


def test_a_version_activated_outside_the_panel_is_the_one_it_predicts_with(
    viewer_and_panel, retrained_project
):
    """`cgs project activate` beside an open panel: the list showed the new active version while
    the panel went on pre-segmenting with the one it had loaded."""
    from cgs_engine.cli.main import main

    _, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(retrained_project.folder)
    old, new = (retrained_project.version(v).model_path for v in ("v0001", "v0002"))
    assert panel.model_choice.value == str(old)
    assert main(["project", "activate", str(retrained_project.folder), "v0002"]) == 0
    section.refresh()
    assert panel.model_choice.value == str(new)
    assert "v0002 was activated outside this panel" in section.status_label.text()
    section.refresh()  # said once
    panel.load_checkpoint(old)  # the user's own choice of model afterwards is left alone
    section.refresh()
    assert panel.model_choice.value == str(old)


def test_opening_a_project_with_an_interrupted_retrain_says_how_to_resume(
    viewer_and_panel, project_with_correction
):
    _, panel = viewer_and_panel
    run = project_with_correction.runs_dir / "20261206-101500-killed" / "train"
    run.mkdir(parents=True)
    (run / "state.pt").write_bytes(b"a saved training state")  # no finished.json: killed
    section = panel.retrain_section
    section.open_project(project_with_correction.folder)
    text = section.status_label.text().replace("\u200b", "")
    assert "20261206-101500-killed" in text and "Resume continues it" in text and "starts afresh" in text
    assert section.resume_button.isEnabled()


def test_resume_continues_the_interrupted_run_with_its_own_settings(
    viewer_and_panel, project_with_correction, monkeypatch
):
    """Resume was only in the CLI: from the panel a killed overnight retrain could only start afresh."""
    _, panel = viewer_and_panel
    section = panel.retrain_section
    section.open_project(project_with_correction.folder)
    assert not section.resume_button.isEnabled()  # nothing to resume
    assert section.resume_retrain() is None and "no interrupted retrain" in plain(section.status_label.text())

    run = project_with_correction.runs_dir / "20261206-101500-killed" / "train"
    run.mkdir(parents=True)
    (run / "state.pt").write_bytes(b"a saved training state")
    section.refresh()
    assert section.resume_button.isEnabled()
    started = []

    def start(folder, **kwargs):
        started.append(kwargs)
        raise ProjectError("stopped here by the test")

    monkeypatch.setattr(_retrain.retrain_worker, "start_retrain_process", start)
    section.minutes_box.setValue(3.0)
    assert section.resume_retrain() is None
    assert started == [{"minutes": None, "iterations": None, "resume": True}]  # its recorded budget
    assert "Cannot resume: stopped here by the test" in plain(section.status_label.text())


def test_labels_are_stored_under_the_projects_ids_by_organ_name(
    qtbot, viewer_and_panel, sample_slab_path, tmp_path
):
    """A project whose classes are numbered otherwise than the panel's model (created from another
    model) stores each organ under its own id; a project without one of the organs refuses, in one
    line, and stores nothing: before, the ids went in as they were, each organ under another's name."""
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    names = list(panel.checkpoint.class_names)
    reordered = [names[0], *reversed(names[1:])]
    project = Project.create(tmp_path / "reordered", reordered, Normalization())
    assert section.open_project(project.folder) is project or section.project is not None
    image = presegment_and_review(qtbot, viewer, panel, sample_slab_path)
    labels = np.array(viewer.layers[labels_layer_name(image)].data)
    present = [int(v) for v in np.unique(labels) if v > 0]
    assert present, "the model predicted no organ in the slab"
    info = add_correction(qtbot, section)
    stored = section.project.read_correction(info.name).labels
    for value in present:
        np.testing.assert_array_equal(stored == reordered.index(names[value]), labels == value)
    assert "Its ids renumbered by organ: " in section.status_label.text()

    lacking = Project.create(tmp_path / "lacking", [names[0], "Heart"], Normalization())
    section.open_project(lacking.folder)
    errors = []
    section.failed.connect(errors.append)
    assert section.add_correction()
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert "\n" not in errors[0] and "a class project lacking does not have (Heart)" in errors[0]
    assert Project.open(lacking.folder).corrections() == []


def test_a_repredict_whose_labels_were_closed_is_not_called_cancelled(
    viewer_and_panel, sample_slab_path, monkeypatch
):
    viewer, panel = viewer_and_panel
    section = panel.retrain_section
    image = fx.open_image(viewer, sample_slab_path)
    section._repredict = (image, np.zeros(image.data.shape, np.uint8), "retrained · v0002")
    monkeypatch.setattr(section.link, "labels_layer", lambda: None)  # closed while it ran
    section._on_prediction_finished(object())
    text = section.status_label.text().replace("\u200b", "")
    assert "cancelled" not in text and "its labels layer was closed meanwhile" in text
