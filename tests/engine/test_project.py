"""Project folders: create/open, corrections (atomic), unlabeled scans, damaged files, and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from synthetic import CLASS_NAMES, synthetic_volume

from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint, save_checkpoint
from cgs_engine.cli.main import main
from cgs_engine.io import read_volume, write_volume
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.normalize import Normalization
from cgs_engine.project import Project, ProjectError
from cgs_engine.review.state import EDITED
from cgs_engine.volume import Geometry, Volume

IDENTITY = Normalization(mode="identity")
# Settings for tiny, fast retrains on 32x32 synthetic volumes. One thread: on a shared machine
# two threads on such small tensors wait on each other and run about 20 times slower.
TINY_SETTINGS = {
    "batch_labeled": 2,
    "batch_unlabeled": 2,
    "val_every": 2,
    "precision": "fp32",
    "seed": 1,
    "threads": 1,
}


def tiny_base_model(path: Path, seed: int = 0) -> Path:
    """An untrained CGS model with widths (4, 8, 16) at input size 32: enough to fine-tune from."""
    torch.manual_seed(seed)
    config = ModelConfig(num_classes=len(CLASS_NAMES), widths=(4, 8, 16), dropouts=(0.0, 0.1, 0.2))
    checkpoint = ModelCheckpoint(
        config, build_model(config).state_dict(), CLASS_NAMES, 32, IDENTITY.to_dict()
    )
    return save_checkpoint(checkpoint, path)


def partly_reviewed(depth: int) -> np.ndarray:
    """Review mask: the first two thirds of the slices drawn or corrected by the user (EDITED)."""
    review = np.zeros((depth, 32, 32), np.uint8)
    review[: 2 * depth // 3] = EDITED
    return review


def make_project(
    root: Path, corrections: int = 4, unlabeled: int = 2, base: bool = True, seed: int = 0
) -> Project:
    rng = np.random.default_rng(seed)
    base_model = tiny_base_model(root / "base.pt") if base else None
    project = Project.create(root / "project", CLASS_NAMES, IDENTITY, base_model=base_model)
    for index in range(corrections):
        image, label = synthetic_volume(rng)
        project.add_correction(f"case{index}", Volume(image), label, partly_reviewed(len(image)))
    scans = []
    for index in range(unlabeled):
        image, _ = synthetic_volume(rng)
        scans.append(write_volume(Volume(image), root / f"scan{index}.nii.gz"))
    project.add_unlabeled(scans)
    return project


def partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".partial")]


# ------------------------------------------------------------------------- create / open
def test_create_open_round_trip(tmp_path):
    base = tiny_base_model(tmp_path / "base.pt")
    created = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=base)
    project = Project.open(tmp_path / "p")
    assert project.class_names == CLASS_NAMES and project.normalization == IDENTITY
    assert project.class_colors == created.class_colors and len(project.class_colors) == len(CLASS_NAMES)
    assert project.settings["retrain_after_n"] is None and project.problems == []
    active = project.active_version()
    assert active.id == "v0001" and active.origin == "imported" and active.status == "imported"
    assert load_checkpoint(project.active_model_path()).class_names == CLASS_NAMES
    assert [v.id for v in project.versions()] == ["v0001"]
    assert not partial_files(tmp_path)

    project.update_settings(retrain_after_n=2, heldout_fraction=0.5)
    assert Project.open(tmp_path / "p").settings["retrain_after_n"] == 2
    with pytest.raises(ProjectError, match="unknown setting"):
        project.update_settings(colour="red")


def test_create_without_base_model_and_refusals(tmp_path):
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    assert project.active_version() is None and project.versions() == []
    with pytest.raises(ProjectError, match="not an empty folder"):
        Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    base = tiny_base_model(tmp_path / "base.pt")
    with pytest.raises(ProjectError, match="classes"):
        Project.create(tmp_path / "q", ["background", "liver"], IDENTITY, base_model=base)
    with pytest.raises(ProjectError, match="expects identity"):
        Project.create(tmp_path / "q", CLASS_NAMES, Normalization(mode="ct-window"), base_model=base)
    assert not (tmp_path / "q").exists() and not partial_files(tmp_path)


# ---------------------------------------------------------------------------- corrections
def test_corrections_round_trip_and_overwrite(tmp_path):
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    raw = np.arange(3 * 32 * 32, dtype=np.int16).reshape(3, 32, 32) - 1000
    geometry = Geometry(spacing=(0.8, 0.8, 2.5), origin=(1.0, 2.0, 3.0))
    labels = np.zeros(raw.shape, np.uint8)
    labels[1, 4:8, 4:8] = 3
    review = np.zeros(raw.shape, bool)
    review[1] = True
    first = project.add_correction(
        "patient 7", Volume(raw, geometry, source="/scans/p7.nii.gz"), labels, review
    )
    stored = project.read_correction("patient 7")
    assert stored.image.array.dtype == np.int16 and np.array_equal(stored.image.array, raw)
    assert stored.image.geometry.is_close(geometry) and stored.info.source == "/scans/p7.nii.gz"
    assert np.array_equal(stored.labels, labels) and np.array_equal(stored.review, review.astype(np.uint8))
    assert first.reviewed_voxels == 32 * 32 and first.shape == (3, 32, 32)

    # no mask: all the user's own; another source, so replacing it must be asked for
    second = project.add_correction("patient 7", Volume(raw), labels, replace="yes")
    assert second.revision != first.revision and second.reviewed_voxels == raw.size
    assert second.edited_voxels == raw.size and (project.read_correction("patient 7").review == 2).all()
    assert [c.name for c in project.corrections()] == ["patient 7"]
    project.remove_correction("patient 7")
    assert project.corrections() == []


@pytest.mark.parametrize(
    ("name", "labels", "review", "message"),
    [
        ("../evil", None, None, "correction name"),
        (".hidden", None, None, "correction name"),
        ("ok", np.zeros((3, 32, 31), np.uint8), None, "labels shape"),
        ("ok", np.full((3, 32, 32), 4, np.uint8), None, "label ids must lie in 0..3"),
        ("ok", np.full((3, 32, 32), 0.5, np.float32), None, "whole-number"),
        ("ok", None, np.full((3, 32, 32), 3, np.uint8), "review mask must hold only 0"),
        ("ok", None, np.ones((2, 32, 32), np.uint8), "review mask shape"),
    ],
)
def test_add_correction_validates(tmp_path, name, labels, review, message):
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    image = Volume(np.zeros((3, 32, 32), np.float32))
    labels = np.zeros((3, 32, 32), np.uint8) if labels is None else labels
    with pytest.raises(ProjectError, match=message):
        project.add_correction(name, image, labels, review)
    assert project.corrections() == []


def test_failed_correction_write_keeps_the_previous_one(tmp_path, monkeypatch):
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    image, labels = synthetic_volume(np.random.default_rng(0))
    before = project.add_correction("case", Volume(image), labels)
    real_create = h5py.Group.create_dataset

    def fail_on_review(self, name, *args, **kwargs):
        if name == "review":  # image and labels are already in the temp file
            raise OSError("disk full")
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fail_on_review)
    with pytest.raises(OSError, match="disk full"):
        project.add_correction("case", Volume(image + 1), np.zeros_like(labels), replace="yes")
    monkeypatch.undo()
    kept = project.read_correction("case")
    assert kept.info.revision == before.revision and np.array_equal(kept.labels, labels)
    assert not partial_files(tmp_path) and [p.name for p in project.corrections_dir.iterdir()] == ["case.h5"]


def test_damaged_correction_is_reported_not_fatal(tmp_path):
    project = make_project(tmp_path, corrections=2, unlabeled=0)
    (project.corrections_dir / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    reopened = Project.open(project.folder)
    assert [c.name for c in reopened.corrections()] == ["case0", "case1"]
    assert len(reopened.problems) == 1 and "broken.h5: damaged correction file" in reopened.problems[0]


# ------------------------------------------------------------------------------ unlabeled
def test_unlabeled_scans_are_referenced_and_checked(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=2)
    scans = project.unlabeled()
    assert [s.path.name for s in scans] == ["scan0.nii.gz", "scan1.nii.gz"]
    assert all(s.path.is_absolute() and s.problem() is None for s in scans)
    assert project.add_unlabeled([tmp_path / "scan0.nii.gz"]) == []  # already listed
    with pytest.raises(ProjectError, match="no such unlabeled scan"):
        project.add_unlabeled([tmp_path / "nope.nii.gz"])
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ProjectError, match="not a supported image"):
        project.add_unlabeled([tmp_path / "notes.txt"])
    (tmp_path / "scan1.nii.gz").unlink()
    reopened = Project.open(project.folder)
    assert reopened.unlabeled()[1].problem() == "missing"
    assert any("scan1.nii.gz: unlabeled scan is missing" in p for p in reopened.problems)
    assert project.remove_unlabeled([tmp_path / "scan1.nii.gz"]) == 1 and len(project.unlabeled()) == 1


def test_an_unlabeled_scan_changed_since_it_was_added_is_taken_again_when_added_again(tmp_path):
    """Each retrain left a changed scan out ("changed since it was added"), and adding it again
    said "added 0": there was no way to take it as it is now but to remove it first."""
    project = make_project(tmp_path, corrections=0, unlabeled=2)
    path = project.unlabeled()[0].path
    volume = read_volume(path)
    write_volume(Volume(volume.array + 1, volume.geometry), path, overwrite=True)
    assert project.unlabeled()[0].problem() == "changed since it was added"
    warnings: list[str] = []
    again = project.add_unlabeled([path], warn=warnings.append)
    assert [scan.path for scan in again] == [path] and "changed since it was added" in warnings[0]
    assert [scan.path.name for scan in project.unlabeled()] == ["scan0.nii.gz", "scan1.nii.gz"]
    assert all(scan.problem() is None for scan in project.unlabeled())
    assert project.add_unlabeled([path]) == []


def test_a_dicom_folder_replaced_by_another_series_of_the_same_file_sizes_has_changed(tmp_path):
    """Another patient's series copied over a listed DICOM folder (same file names, same sizes)
    kept its fingerprint (names and sizes): the worklist showed the old patient's score and the
    scan was not said to have changed. A folder recorded the old way is still compared so."""
    import hashlib

    from cgs_engine.project.unlabeled import UnlabeledScan, scan_fingerprint

    folder = tmp_path / "series"
    folder.mkdir()
    for index in range(3):
        (folder / f"IM{index}").write_bytes(b"PATIENT-A" + bytes([index]) * 200_000)
    listed = UnlabeledScan(folder, "2026-12-07T00:00:00", scan_fingerprint(folder))
    legacy_files = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
    legacy = {
        "kind": "folder",
        "files": 3,
        "sha256": hashlib.sha256(json.dumps(legacy_files).encode()).hexdigest(),
    }
    recorded_before = UnlabeledScan(folder, "2026-01-01T00:00:00", legacy)
    assert listed.problem() is None and recorded_before.problem() is None
    (folder / "IM1").write_bytes(b"PATIENT-B" + bytes([7]) * 200_000)
    assert listed.problem() == "changed since it was added"
    (folder / "IM1").write_bytes(b"PATIENT-A" + bytes([1]) * 199_000 + bytes([9]) * 1_000)
    assert listed.problem() == "changed since it was added"  # the pixels' end
    assert recorded_before.problem() is None  # compared as recorded: names and sizes


def test_a_dicom_folder_recorded_the_old_way_is_fingerprinted_anew_when_added_again(tmp_path):
    """A record without a version kept the weak fingerprint for good: adding the folder again
    said "added 0" and left it so."""
    import hashlib

    from dicom_series_cases import good_series

    project = make_project(tmp_path, corrections=0, unlabeled=0)
    folder = good_series(tmp_path / "series")
    project.add_unlabeled([folder])
    files = sorted((p.name, p.stat().st_size) for p in folder.iterdir() if p.is_file())
    legacy = {
        "kind": "folder",
        "files": len(files),
        "sha256": hashlib.sha256(json.dumps(files).encode()).hexdigest(),
    }
    data = json.loads(project.unlabeled_file.read_text())
    data["scans"][0]["fingerprint"] = legacy
    project.unlabeled_file.write_text(json.dumps(data))
    assert project.unlabeled()[0].problem() is None
    assert project.add_unlabeled([folder]) == []  # nothing new, nothing said
    (scan,) = project.unlabeled()
    assert scan.fingerprint.get("version") == 2 and scan.added == data["scans"][0]["added"]
    assert scan.problem() is None


def test_retrain_suggestion_is_opt_in(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    assert len(project.new_corrections_since_last_retrain()) == 3
    assert not project.should_retrain()  # never automatic unless asked for
    project.update_settings(retrain_after_n=3)
    assert project.should_retrain()
    project.update_settings(retrain_after_n=4)
    assert not project.should_retrain()


def test_a_correction_without_a_reviewed_voxel_is_no_new_correction(tmp_path):
    """Saved from the panel before anything was accepted or edited: a retrain ignores it, so it
    must not count towards retrain_after_n (nor "N corrected volumes since the last retrain")."""
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    project.update_settings(retrain_after_n=2)
    image, label = synthetic_volume(np.random.default_rng(5))
    project.add_correction("unreviewed", Volume(image), label, np.zeros(label.shape, np.uint8))
    assert [c.name for c in project.new_corrections_since_last_retrain()] == ["case0"]
    assert not project.should_retrain()
    project.add_correction("unreviewed", Volume(image), label, partly_reviewed(len(image)), replace="yes")
    assert [c.name for c in project.new_corrections_since_last_retrain()] == ["case0", "unreviewed"]
    assert project.should_retrain()


# ----------------------------------------------------------------------- damaged project files
def test_damaged_project_files_give_one_line_errors(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    folder = project.folder
    project_file = folder / "project.json"
    good = project_file.read_text()

    with pytest.raises(ProjectError, match="no such project folder"):
        Project.open(tmp_path / "missing")
    project_file.write_text("{ not json")
    with pytest.raises(ProjectError, match=r"project\.json: damaged project file"):
        Project.open(folder)
    project_file.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ProjectError, match="not a napari-cgs project file"):
        Project.open(folder)
    project_file.write_text(json.dumps({**json.loads(good), "class_names": ["only-background"]}))
    with pytest.raises(ProjectError, match="damaged project file"):
        Project.open(folder)
    project_file.unlink()
    with pytest.raises(ProjectError, match=r"project\.json: missing project file"):
        Project.open(folder)
    project_file.write_text(good)

    active = folder / "active.json"
    active.write_text("")
    with pytest.raises(ProjectError, match=r"active\.json: damaged active-version record"):
        Project.open(folder)
    # activating repairs it (every other command refuses the project until then): the damaged file
    # is kept beside the new record
    assert Project.open(folder, check_active=False).activate("v0001").id == "v0001"
    assert Project.open(folder).active_version().id == "v0001"
    kept = list(folder.glob("active.json.damaged-*"))
    assert len(kept) == 1 and kept[0].read_text() == ""
    active.write_text(json.dumps({"version": "v0009"}))
    with pytest.raises(ProjectError, match=r"active\.json: active version v0009 is unusable"):
        Project.open(folder)
    assert Project.open(folder, check_active=False).activate("v0001").id == "v0001"
    # a damaged unlabeled list is one of the project's problems, not a project that cannot be opened
    (folder / "unlabeled").mkdir(exist_ok=True)
    (folder / "unlabeled" / "scans.json").write_text("{ not json")
    assert any("scans.json" in problem for problem in Project.open(folder).problems)

    (folder / "models" / "v0001" / "version.json").write_text("[]")
    with pytest.raises(ProjectError, match=r"v0001/version\.json: damaged version record") as raised:
        Project.open(folder)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------------ CLI
def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_project_verbs(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base = tiny_base_model(tmp_path / "base.pt")
    image, labels = synthetic_volume(rng)
    write_volume(Volume(image), tmp_path / "img.nii.gz")
    write_volume(Volume(labels, kind="labels"), tmp_path / "lab.nii.gz")
    write_volume(Volume(np.ones_like(labels), kind="labels"), tmp_path / "rev.nii.gz")
    (tmp_path / "unlabeled").mkdir()
    write_volume(Volume(image), tmp_path / "unlabeled" / "u1.nii.gz")
    folder = tmp_path / "proj"

    code, out, _ = run_cli(capsys, "project", "create", folder, "--base-model", base)
    assert code == 0 and "active model: v0001" in out
    code, out, _ = run_cli(
        capsys, "project", "add-correction", folder, "--image", tmp_path / "img.nii.gz",
        "--labels", tmp_path / "lab.nii.gz", "--review", tmp_path / "rev.nii.gz",
    )  # fmt: skip
    assert code == 0 and "saved correction 'img'" in out and "100.0% of voxels reviewed" in out
    code, out, _ = run_cli(capsys, "project", "add-unlabeled", folder, tmp_path / "unlabeled")
    assert code == 0 and "added 1 unlabeled scan" in out
    code, out, _ = run_cli(capsys, "project", "versions", folder)
    assert code == 0 and "* v0001" in out and "imported" in out and "1 corrected volume(s)" in out
    code, out, _ = run_cli(capsys, "project", "activate", folder, "v0001")
    assert code == 0 and "active model: v0001" in out
    project = Project.open(folder)
    assert [c.name for c in project.corrections()] == ["img"] and len(project.unlabeled()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["project", "create", "{new}"], "give --classes"),
        (["project", "create", "{new}", "--classes", "a,b"], "give --normalization"),
        (["project", "create", "{new}", "--base-model", "{tmp}/nope.pt"], "no such checkpoint"),
        (["project", "versions", "{tmp}/nowhere"], "no such project folder"),
        (["project", "activate", "{proj}", "v0042"], "no version v0042"),
        (["project", "activate", "{proj}", "latest"], "not a version name"),
        (["project", "add-unlabeled", "{proj}", "{tmp}/nope.nii.gz"], "no such unlabeled scan"),
        (["project", "add-correction", "{proj}", "--image", "{tmp}/i.nii.gz", "--labels", "{tmp}/bad.nii.gz"],
         "geometry differs"),
        (["retrain", "{tmp}/nowhere"], "no such project folder"),
        (["retrain", "{proj}", "--resume"], "no interrupted retrain"),
        (["retrain", "{proj}", "--iterations", "1"], "no corrected volumes"),
    ],
)  # fmt: skip
def test_cli_bad_inputs_fail_in_one_line(tmp_path, capsys, argv, message):
    Project.create(tmp_path / "proj", CLASS_NAMES, IDENTITY, base_model=tiny_base_model(tmp_path / "base.pt"))
    write_volume(Volume(np.zeros((4, 32, 32), np.float32)), tmp_path / "i.nii.gz")
    write_volume(Volume(np.zeros((4, 32, 30), np.uint8), kind="labels"), tmp_path / "bad.nii.gz")
    names = {"new": tmp_path / "new", "tmp": tmp_path, "proj": tmp_path / "proj"}
    code, _, err = run_cli(capsys, *[a.format(**names) for a in argv])
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("cgs ")


def test_a_scan_saved_again_keeps_its_correction_name_and_another_scan_gets_its_own(tmp_path):
    """The panel names a correction after the layer; napari calls a second ``ct.nii.gz`` "ct [1]",
    and the same scan then went in twice, its older labels still training."""
    rng = np.random.default_rng(0)
    project = Project.create(tmp_path / "project", CLASS_NAMES, IDENTITY)
    image, labels = synthetic_volume(rng)
    mine = Volume(image, Geometry(), "image", str(tmp_path / "a" / "ct.nii.gz"))
    theirs = Volume(image + 1, Geometry(), "image", str(tmp_path / "b" / "ct.nii.gz"))

    assert project.correction_name_for(mine, "ct") == "ct"
    project.add_correction("ct", mine, labels)
    assert project.correction_name_for(mine, "ct _1_") == "ct"  # the same scan under another layer name
    assert project.correction_name_for(theirs, "ct") == "b_ct"  # another scan: its folder in front
    project.add_correction("b_ct", theirs, labels)
    assert project.correction_name_for(theirs, "ct") == "b_ct"
    stranger = Volume(image, Geometry(), "image", str(tmp_path / "b" / "x" / "ct.nii.gz"))
    (project.corrections_dir / "b_ct (2).h5").write_bytes(b"damaged")  # a damaged file holds its name
    assert project.correction_name_for(stranger, "b_ct") == "x_b_ct"
    assert project.correction_name_for(Volume(image), "ct") == "ct (2)"  # no source, name taken
    assert [info.name for info in project.corrections()] == ["b_ct", "ct"]


def test_a_scan_added_by_a_relative_path_is_the_same_scan_when_the_panel_saves_it(tmp_path, monkeypatch):
    """`cgs project add-correction --image images/ct.nii.gz` recorded the relative path; the panel's
    save of that scan (napari: the full path) did not find it, added the scan a second time, and
    the older labels went on training beside the corrected ones."""
    rng = np.random.default_rng(0)
    project = Project.create(tmp_path / "project", CLASS_NAMES, IDENTITY)
    image, labels = synthetic_volume(rng)
    (tmp_path / "images").mkdir()
    write_volume(Volume(image), tmp_path / "images" / "ct.nii.gz")
    monkeypatch.chdir(tmp_path)
    info = project.add_correction("ct", Volume(image, Geometry(), "image", "images/ct.nii.gz"), labels)
    assert info.source == str(tmp_path / "images" / "ct.nii.gz")
    monkeypatch.chdir(tmp_path / "images")  # the panel, started elsewhere
    panel_scan = Volume(image, Geometry(), "image", str(tmp_path / "images" / "ct.nii.gz"))
    name = project.correction_name_for(panel_scan, "ct [1]")
    assert name == "ct"
    project.add_correction(name, panel_scan, labels * 0, replace="same-source")
    assert [(c.name, c.reviewed_voxels > 0) for c in project.corrections()] == [("ct", True)]


def test_creating_a_project_removes_what_a_killed_creation_of_it_left(tmp_path):
    """A `cgs project create` killed while it copied the base model left a hidden folder of it in
    the parent, kept for good, even after the project was created."""
    dead = tmp_path / ".project.999999999-0badf00d.partial"  # no such process
    dead.mkdir()
    (dead / "base.pt").write_bytes(b"half a model")
    running = tmp_path / f".project.{os.getpid()}-0badf00d.partial"  # a writer still at work
    running.mkdir()
    users = [tmp_path / ".project.2024.tmp", tmp_path / ".project.12345-backup.partial"]  # not ours
    for folder in users:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    make_project(tmp_path, corrections=0, unlabeled=0)
    assert not dead.exists() and running.exists()
    assert all((folder / "notes.txt").is_file() for folder in users)
