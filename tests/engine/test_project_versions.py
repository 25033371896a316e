"""Model versions: activate and roll back, crash leftovers, and the held-out / activation rules."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_project import make_project, partial_files

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.errors import CGSError
from cgs_engine.project import Project, ProjectError
from cgs_engine.project.versions import next_version_id, read_active
from cgs_engine.retrain.heldout import choose_heldout_volumes, heldout_slices
from cgs_engine.retrain.scoring import HeldoutScore, decide_activation


def retrained_record(status: str, reason: str) -> dict:
    return {"origin": "retrained", "status": status, "reason": reason, "parent": "v0001", "metrics": {}}


def test_activate_and_roll_back(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    base = project.version("v0001").model_path
    second = project.add_version(base, retrained_record("rejected", "not activated: held-out Dice 1 < 2"))
    assert second.id == "v0002" and project.active_version().id == "v0001"

    project.activate("v0002")  # a rejected version may still be chosen by hand
    assert Project.open(project.folder).active_version().id == "v0002"
    project.activate("v0001", why="roll back")
    reopened = Project.open(project.folder)
    assert reopened.active_version().id == "v0001"
    history = read_active(reopened.active_file).history
    assert [h["version"] for h in history] == ["v0001", "v0002", "v0001"] and history[-1][
        "why"
    ] == "roll back"
    assert [v.id for v in reopened.versions()] == ["v0001", "v0002"]
    assert reopened.version("v0002").reason.startswith("not activated")

    with pytest.raises(ProjectError, match="no version v0007"):
        project.activate("v0007")
    with pytest.raises(ProjectError, match="not a version name"):
        project.activate("../v0001")
    second.model_path.write_bytes(b"garbage")
    with pytest.raises(CGSError, match="not a readable checkpoint"):
        project.activate("v0002")
    assert Project.open(project.folder).active_version().id == "v0001"


def test_crash_leftovers_do_not_break_open_or_load(tmp_path):
    """A kill during any atomic write leaves a hidden .partial file or folder: it is ignored."""
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    models = project.models_dir
    (models / ".v0002.1a2b3c4d.partial").mkdir()
    (models / ".v0002.1a2b3c4d.partial" / "model.pt").write_bytes(b"half a model")
    (models / "v0001" / ".model.pt.5e6f7a8b.partial").write_bytes(b"half a model")
    (project.folder / ".active.json.99aa88bb.partial").write_text('{"version": "v00')
    (project.folder / ".project.json.12345678.partial").write_text("{")
    (project.corrections_dir / ".case0.h5.abcdef01.partial").write_bytes(b"\x89HDF half")
    (tmp_path / ".project.0badf00d.partial").mkdir()  # a half-created project beside it

    reopened = Project.open(project.folder)
    assert reopened.problems == []
    assert [v.id for v in reopened.versions()] == ["v0001"]
    assert [c.name for c in reopened.corrections()] == ["case0"]
    assert load_checkpoint(reopened.active_model_path()).class_names == reopened.class_names
    assert next_version_id(models) == "v0002"
    assert (
        reopened.add_version(reopened.active_model_path(), retrained_record("accepted", "ok")).id == "v0002"
    )


def test_failed_version_write_leaves_nothing(tmp_path, monkeypatch):
    project = make_project(tmp_path, corrections=0, unlabeled=0)

    def full_disk(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="no space"):
        project.add_version(project.active_model_path(), retrained_record("accepted", "ok"))
    assert [p.name for p in project.models_dir.iterdir()] == ["v0001"] and not partial_files(tmp_path)


def test_damaged_inactive_version_is_only_a_problem(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    extra = project.add_version(project.active_model_path(), retrained_record("accepted", "ok"))
    (extra.folder / "version.json").write_text(json.dumps({"id": "v0002"}))
    reopened = Project.open(project.folder)
    assert [v.id for v in reopened.versions()] == ["v0001"]
    assert (
        len(reopened.problems) == 1 and "v0002/version.json: damaged version record" in reopened.problems[0]
    )


# ------------------------------------------------------------------------------ the rules
def test_heldout_volumes_one_in_four_stable_and_never_all():
    assert choose_heldout_volumes(["a", "b"], 0.25) == []  # too few: slices are held out instead
    three = choose_heldout_volumes(["a", "b", "c"], 0.25)
    assert len(three) == 1
    names = [f"case{i}" for i in range(8)]
    chosen = choose_heldout_volumes(names, 0.25)
    assert len(chosen) == 2 and chosen == choose_heldout_volumes(list(reversed(names)), 0.25)
    assert len(choose_heldout_volumes(names[:3], 0.5)) == 1
    grown = choose_heldout_volumes([*names, "case8", "case9", "case10", "case11"], 0.25)
    assert len(set(chosen) & set(grown)) >= 1  # adding corrections mostly keeps the held-out set


def test_one_scan_saved_under_two_names_is_held_out_or_trained_on_whole():
    """`pt_222 (2)`, the same image as `pt_222`, was trained on while `pt_222` was held out: the
    gate judged the model on an image it had learnt and could activate a worse one."""
    names = [f"case{i}" for i in range(8)]
    alone = choose_heldout_volumes(names, 0.25)
    for held in alone:
        twin = f"{held} (2)"
        scans = [f"scan-{name}" for name in names] + [f"scan-{held}"]
        chosen = choose_heldout_volumes([*names, twin], 0.25, scans)
        assert held in chosen and twin in chosen
    kept = next(name for name in names if name not in alone)
    scans = [f"scan-{name}" for name in names] + [f"scan-{kept}"]
    chosen = choose_heldout_volumes([*names, f"{kept} (2)"], 0.25, scans)
    assert kept not in chosen and f"{kept} (2)" not in chosen
    assert choose_heldout_volumes(["a", "b", "c"], 0.5, ["same", "same", "same"]) == []  # one scan
    assert choose_heldout_volumes(["a", "b", "c"], 0.25, ["", "", ""]) == alone_of(["a", "b", "c"])


def alone_of(names: list[str]) -> list[str]:
    return choose_heldout_volumes(names, 0.25)


def test_heldout_slices_take_the_top_reviewed_block():
    assert heldout_slices(np.arange(12), 0.25).tolist() == [9, 10, 11]
    assert heldout_slices(np.array([3, 4]), 0.25).tolist() == [4]
    assert heldout_slices(np.array([3]), 0.25).tolist() == []


def score(mean):
    return HeldoutScore(mean, {"big": mean}, 1)


@pytest.mark.parametrize(
    ("new", "old", "active_id", "tolerance", "expected"),
    [
        (score(0.75), score(0.70), "v0001", 0.0,
         ("accepted", True, "activated: held-out Dice 75.0 >= active 70.0")),
        (score(0.70), score(0.70), "v0001", 0.0,
         ("accepted", True, "activated: held-out Dice 70.0 >= active 70.0")),
        (score(0.712), score(0.735), "v0001", 0.0,
         ("rejected", False, "not activated: held-out Dice 71.2 < active 73.5")),
        (score(0.72), score(0.735), "v0001", 0.02,
         ("accepted", True, "activated: held-out Dice 72.0 >= active 73.5 - tolerance 2.0")),
        (None, None, "v0001", 0.0, ("unverified", False, "not activated: no held-out corrected data")),
        (score(0.0), score(0.0), "v0001", 0.0, ("unverified", False, "not activated: held-out Dice 0.0")),
        (score(0.0), score(0.3), "v0001", 0.5, ("unverified", False, "not activated: held-out Dice 0.0")),
        (None, None, None, 0.0, ("unverified", True, "activated: first model of the project")),
        (score(0.1), None, None, 0.0, ("accepted", True, "activated: first model of the project")),
    ],
)  # fmt: skip
def test_activation_rule(new, old, active_id, tolerance, expected):
    status, activate, reason = decide_activation(new, old, active_id, tolerance)
    assert (status, activate) == expected[:2] and reason.startswith(expected[2])
