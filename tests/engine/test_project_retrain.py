"""Retraining a tiny synthetic project: versions with metrics, the activation rule, cancel, the CLI."""

from __future__ import annotations

import importlib
import json

import h5py
import numpy as np
import pytest
import torch
from synthetic import CLASS_NAMES, synthetic_volume
from test_project import IDENTITY, TINY_SETTINGS, make_project, partly_reviewed, run_cli

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.errors import CGSError
from cgs_engine.infer import Predictor
from cgs_engine.project import Project, ProjectError
from cgs_engine.retrain import HeldoutScore, retrain
from cgs_engine.review.state import EDITED
from cgs_engine.store import SliceStore
from cgs_engine.volume import Volume

# where the retrain looks up evaluate_heldout (patched to rig the comparison)
retrain_module = importlib.import_module("cgs_engine.retrain.keep")


def finished(result) -> dict:
    return json.loads((result.run_dir / "finished.json").read_text())


def test_retrain_writes_a_version_with_metrics(tmp_path):
    project = make_project(tmp_path, corrections=4, unlabeled=2)
    events = []
    result = retrain(project, iterations=3, settings=TINY_SETTINGS, on_event=events.append)

    assert result.version == "v0002" and result.steps_done == 3 and not result.cancelled
    assert len(result.heldout) == 1 and result.compared_with == "v0001"
    version = project.version("v0002")
    metrics = version.metrics
    assert metrics["heldout_mode"] == "volumes" and metrics["heldout"] == result.heldout
    assert set(metrics["new"]["dice_per_class"]) == set(CLASS_NAMES[1:])
    assert metrics["new"]["dice_mean"] == pytest.approx(result.new_score.dice_mean)
    assert metrics["active"]["dice_mean"] == pytest.approx(result.active_score.dice_mean)
    assert version.parent == "v0001" and version.run == result.run_dir.name
    assert sorted(version.record["corrections_used"]) == ["case0", "case1", "case2", "case3"]
    assert sum(path.endswith(".nii.gz") for path in version.record["unlabeled_used"]) == 2
    config = version.record["train_config"]
    assert (
        config["optimizer"] == "adamw" and config["lr"] == pytest.approx(1e-3) and config["method"] == "cgs"
    )
    assert config["warmup_fraction"] == 0.1 and not config["ema_warmup"] and config["freeze_batchnorm"]
    assert config["ema_decay"] == 0.99 and config["dice_absent"] == "skip"
    assert config["pseudo_labeler"] == "initial" and config["max_iterations"] == 600
    assert config["input_size"] == 32 and config["widths"] == [4, 8, 16]
    assert config["init_checkpoint"].endswith("models/v0001/model.pt")

    # the rule decides activation, and the reason says why
    new, active = result.new_score.dice_mean, result.active_score.dice_mean
    improved = new > 0 and new >= active  # a version finding nothing held out is never activated
    assert result.activated == improved and (project.active_version().id == "v0002") == improved
    assert version.reason == result.reason and result.reason.startswith("activated" if improved else "not")
    assert load_checkpoint(version.model_path).class_names == CLASS_NAMES

    # held-out volumes are validation only: never labeled, never unlabeled
    with SliceStore.open(result.run_dir / "store.h5") as store:
        assert store.volume_names("val") == result.heldout
        trained = store.volume_names("labeled") + store.volume_names("unlabeled")
        assert not any(name.startswith(result.heldout[0]) for name in trained)
        assert store.volume_info(store.volume_names("labeled")[0]).shape[0] == 4  # reviewed slices only

    kinds = [e["kind"] for e in events]
    assert kinds[0] == "stage" and "start" in kinds and "val" in kinds
    assert kinds[-2:] == ["version", "finished"] and events[-1]["version"] == "v0002"
    assert finished(result)["outcome"] == "finished"
    assert project.new_corrections_since_last_retrain() == []
    image, label = synthetic_volume(np.random.default_rng(9))
    project.add_correction("case1", Volume(image), label, replace="yes")
    assert [c.name for c in project.new_corrections_since_last_retrain()] == ["case1"]


def test_regressing_version_is_not_activated(tmp_path, monkeypatch):
    project = make_project(tmp_path, corrections=3, unlabeled=1)

    def rigged(model_path, store_path, class_names, runtime):
        new = "runs" in str(model_path)  # the candidate lives in the run folder, versions in models/
        mean = 0.712 if new else 0.735
        return HeldoutScore(mean, dict.fromkeys(class_names[1:], mean), 1)

    monkeypatch.setattr(retrain_module, "evaluate_heldout", rigged)
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert not result.activated and result.version == "v0002"
    assert result.reason == "not activated: held-out Dice 71.2 < active 73.5"
    reopened = Project.open(project.folder)
    assert reopened.active_version().id == "v0001"
    assert reopened.version("v0002").status == "rejected"
    assert reopened.version("v0002").reason == result.reason
    assert finished(result)["activated"] is False


def test_few_volumes_hold_out_slices_and_missing_scans_are_reported(tmp_path):
    project = make_project(tmp_path, corrections=2, unlabeled=1)
    (tmp_path / "scan0.nii.gz").unlink()
    events = []
    result = retrain(project, iterations=2, settings=TINY_SETTINGS, on_event=events.append)
    assert result.heldout == ["case0~heldout", "case1~heldout"]
    assert any("scan0.nii.gz: unlabeled scan missing; skipped" in w for w in result.warnings)
    assert any(e["kind"] == "warning" and "scan0.nii.gz" in e["message"] for e in events)
    with SliceStore.open(result.run_dir / "store.h5") as store:
        # 4 reviewed slices per volume: 1 held out, 2 trained on (not the held-out one's neighbour)
        assert [store.volume_info(n).shape[0] for n in store.volume_names("val")] == [1, 1]
        assert [store.volume_info(n).shape[0] for n in store.volume_names("labeled")] == [2, 2]
    assert project.version(result.version).metrics["heldout_mode"] == "slices"


def test_cancel_keeps_the_model_so_far(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    calls = {"n": 0}

    def stop_soon() -> bool:
        calls["n"] += 1
        return calls["n"] > 8

    events = []
    result = retrain(
        project, iterations=200, settings=TINY_SETTINGS, should_stop=stop_soon, on_event=events.append
    )
    assert result.cancelled and 0 < result.steps_done < result.total_steps == 200
    version = project.version(result.version)
    assert version.record["cancelled"] is True and version.status in ("accepted", "rejected", "unverified")
    assert load_checkpoint(version.model_path).metrics["best"]["step"] <= result.steps_done
    assert finished(result)["outcome"] == "cancelled" and events[-1]["kind"] == "cancelled"
    assert project.interrupted_run() is None  # a cancelled run is finished, not resumable

    before = [v.id for v in project.versions()]
    nothing = retrain(project, iterations=5, settings=TINY_SETTINGS, should_stop=lambda: True)
    assert nothing.cancelled and nothing.version is None and nothing.steps_done == 0
    assert [v.id for v in project.versions()] == before and finished(nothing)["outcome"] == "cancelled"


def _weights(path) -> dict:
    return load_checkpoint(path).state_dict


def _same_weights(a, b) -> bool:
    first, second = _weights(a), _weights(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("keep", ["final", "best"])
def test_the_kept_model_is_the_final_teacher_unless_best_is_asked(tmp_path, keep):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    project.update_settings(retrain_keep=keep)
    result = retrain(project, iterations=6, settings={**TINY_SETTINGS, "val_every": 2})
    kept = project.version(result.version).model_path
    train_dir = result.run_dir / "train"
    assert _same_weights(kept, train_dir / f"{keep}.pt")
    other = "best" if keep == "final" else "final"
    assert not _same_weights(kept, train_dir / f"{other}.pt") or _best_is_last(kept)


def _best_is_last(path) -> bool:
    return load_checkpoint(path).metrics["best"]["step"] == 6


def test_retrain_keep_setting_is_checked(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    with pytest.raises(ValueError, match="retrain_keep must be one of final, best"):
        project.update_settings(retrain_keep="last")


@pytest.mark.parametrize("share", [1.0, 1.5, -1, "abc", True])
def test_correction_share_is_checked_when_set(tmp_path, share):
    """Never checked: 1.0 divided by zero in the retrain, "abc" failed there with a traceback, 1.5
    and -1 were kept and ignored."""
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    with pytest.raises(ValueError, match=r"correction_share must be a number in \[0, 1\)"):
        project.update_settings(correction_share=share)
    project.update_settings(correction_share=0)  # the corrections' natural share
    assert project.settings["correction_share"] == 0


def test_wall_time_budget(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    events = []
    result = retrain(project, minutes=0.03, settings=TINY_SETTINGS, on_event=events.append)
    start = next(e for e in events if e["kind"] == "start")
    assert start["total"] is None and start["minutes"] == pytest.approx(0.03)
    assert result.steps_done > 0 and result.total_steps == result.steps_done and not result.cancelled
    assert project.version(result.version).record["steps"] == result.steps_done


def test_first_retrain_of_a_project_without_model_activates(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0, base=False)
    settings = {**TINY_SETTINGS, "input_size": 32, "widths": (4, 8, 16), "dropouts": (0.0, 0.1, 0.2)}
    result = retrain(project, iterations=2, settings=settings)
    assert result.version == "v0001" and result.activated and result.compared_with is None
    assert result.reason == "activated: first model of the project"
    assert project.active_version().id == "v0001" and project.active_version().origin == "retrained"


def test_retrain_refusals(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    with pytest.raises(ProjectError, match="not both"):
        retrain(project, minutes=1, iterations=1)
    with pytest.raises(ProjectError, match="no interrupted retrain"):
        retrain(project, resume=True)
    with project.retrain_lock(), pytest.raises(ProjectError, match="already running"):
        retrain(project, iterations=1, settings=TINY_SETTINGS)
    assert project.is_retraining() is False
    empty = Project.create(tmp_path / "empty", CLASS_NAMES, IDENTITY)
    with pytest.raises(ProjectError, match="no corrected volumes"):
        retrain(empty, iterations=1)


def test_cli_retrain(tmp_path, capsys):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    project.update_settings(train=TINY_SETTINGS)  # the CLI takes training settings from the project
    code, out, err = run_cli(capsys, "retrain", project.folder, "--iterations", "2")
    assert code == 0 and "done: 2/2 iterations -> version v0002" in out
    assert "held-out Dice on 1 held-out part(s): new" in out and "active v0001" in out
    assert "activated" in out.splitlines()[-1] and "training 2 iterations from v0001" in err
    code, out, _ = run_cli(capsys, "project", "versions", project.folder)
    assert code == 0 and "v0002" in out and "0 corrected volume(s) since the last retrain" in out


def test_thorough_retrain_trains_as_long_as_the_first_training(tmp_path, capsys):
    from dataclasses import replace

    from cgs_engine.checkpoint import save_checkpoint
    from cgs_engine.retrain.recipe import THOROUGH_STEPS_WITHOUT_RECORD, trained_steps

    project = make_project(tmp_path, corrections=3, unlabeled=1)
    untrained = load_checkpoint(project.active_version().model_path)
    assert trained_steps(untrained) is None and THOROUGH_STEPS_WITHOUT_RECORD >= 1000
    # a base model whose first training ran 5 steps (best at 4, as `cgs train` records it)
    recorded = replace(untrained, metrics={"best": {"step": 4}, "history": [{"kind": "val", "step": 5}]})
    assert trained_steps(recorded) == 5
    project = type(project).create(
        tmp_path / "recorded",
        project.class_names,
        project.normalization,
        base_model=save_checkpoint(recorded, tmp_path / "recorded.pt"),
        prior_data=None,
    )
    for correction in make_project(tmp_path / "source", corrections=3, unlabeled=0).corrections():
        source = Project.open(tmp_path / "source" / "project")
        stored = source.read_correction(correction.name)
        project.add_correction(correction.name, stored.image, stored.labels, stored.review)
    project.update_settings(train=TINY_SETTINGS)
    result = retrain(project, minutes=5, thorough=True)
    config = project.version(result.version).record["train_config"]
    assert config["max_iterations"] == 5 and result.steps_done == 5
    assert config["pseudo_labeler"] == "ema"  # CGS's own teacher makes the pseudo-labels
    assert not config["freeze_batchnorm"]  # statistics follow the new data over a long run
    quick_version = retrain(project, iterations=2).version
    quick = project.version(quick_version).record["train_config"]
    assert quick["pseudo_labeler"] == "initial" and quick["max_iterations"] == 600
    assert quick["freeze_batchnorm"]
    project.activate(quick_version, why="test: the active model is a retrained one")
    with pytest.raises(ProjectError, match="resume continues"):
        retrain(project, resume=True, thorough=True)
    # the length of the FIRST training, not of the quick retrain that made the active version
    assert project.active_version().origin == "retrained"
    code, _, err = run_cli(capsys, "retrain", project.folder, "--thorough", "--minutes", "5")
    assert code == 0 and "or 5 iterations, whichever comes first" in err


def _rigged_better(model_path, store_path, class_names, runtime):
    mean = 0.8 if "runs" in str(model_path) else 0.7  # the candidate lives in the run folder
    return HeldoutScore(mean, dict.fromkeys(class_names[1:], mean), 1)


def test_an_activated_version_gets_its_own_error_model(tmp_path, monkeypatch):
    from cgs_engine.review.error_model import load_error_model, sidecar_path

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    rng = np.random.default_rng(3)
    for index in range(4):  # fully reviewed corrections: references to calibrate on
        image, label = synthetic_volume(rng)
        project.add_correction(f"full{index}", Volume(image), label)
    monkeypatch.setattr(retrain_module, "evaluate_heldout", _rigged_better)
    events = []
    first = retrain(project, iterations=3, settings=TINY_SETTINGS, on_event=events.append)
    assert first.activated
    assert {"kind": "stage", "stage": "calibrating the likely-wrong map"} in [
        {k: e.get(k) for k in ("kind", "stage")} for e in events
    ]
    version = project.version(first.version)
    fitted = load_error_model(sidecar_path(version.model_path))
    with SliceStore.open(first.run_dir / "store.h5") as store:
        calibrated_on = store.volume_names("labeled") + store.volume_names("val")
    assert fitted.fitted_on["cases"] == calibrated_on  # the run's own labeled and held-out volumes
    assert version.record["error_model"] == f"fitted on {len(calibrated_on)} volumes of the run"

    # the next version reuses the L2 penalty its parent's fit chose instead of choosing again
    again = retrain(project, iterations=2, settings=TINY_SETTINGS)
    refitted = load_error_model(sidecar_path(project.version(again.version).model_path))
    assert (
        refitted.fitted_on["l2"] == fitted.fitted_on["l2"] and "l2_leave_one_out_ap" not in refitted.fitted_on
    )
    assert "l2_leave_one_out_ap" in fitted.fitted_on  # the first had no parent calibration: chosen
    version = project.version(again.version)

    # a fit that fails keeps the version and gives it its parent's calibration, saying why
    def failing(*args, **kwargs):
        raise CGSError("no labeled case to calibrate on")

    monkeypatch.setattr(retrain_module, "write_error_model", failing)
    second = retrain(project, iterations=2, settings=TINY_SETTINGS)
    record = project.version(second.version).record
    assert second.activated and record["error_model"] == f"inherited from {again.version}"
    assert "no labeled case" in record["error_model_not_fitted"]
    # the parent's fit, handed down to the new weights on purpose: predictions with the version
    # accept it (one fitted on other weights and merely copied would be refused as stale)
    handed_down = load_error_model(sidecar_path(project.version(second.version).model_path))
    parent_model = load_error_model(sidecar_path(version.model_path))
    assert handed_down.weights == parent_model.weights and handed_down.bias == parent_model.bias
    assert handed_down.fitted_on["weights_sha256"] == parent_model.fitted_on["weights_sha256"]
    assert handed_down.fitted_on["assigned_because"] == f"inherited from {again.version}"
    assert Predictor(project.version(second.version).model_path).error_model.calibrated

    # "inherit": no fitting at all
    project.update_settings(retrain_error_model="inherit")
    third = retrain(project, iterations=2, settings=TINY_SETTINGS)
    record = project.version(third.version).record
    assert (
        record["error_model"] == f"inherited from {second.version}" and "error_model_not_fitted" not in record
    )
    assert Predictor(project.version(third.version).model_path).error_model.calibrated
    with pytest.raises(ValueError, match="retrain_error_model must be one of refit, inherit"):
        project.update_settings(retrain_error_model="always")


def test_a_correction_stored_mirrored_trains_in_the_canonical_orientation(tmp_path):
    """The same patient saved from a NIfTI with x to the right must teach the same anatomy: the
    run's store holds its slices in the canonical layout (cgs_engine.orientation)."""
    from cgs_engine.retrain.training_store import build_store
    from cgs_engine.volume import Geometry

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    mirrored = Geometry(spacing=(1.0, 1.0, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    labels = {}
    for seed, name in enumerate(("a", "b", "c")):  # three scans, so whole volumes are held out
        image, labels[name] = synthetic_volume(np.random.default_rng(5 + seed))
        project.add_correction(name, Volume(image, mirrored), labels[name])
    plan = build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    with SliceStore.open(tmp_path / "store.h5") as store:
        trained = [n for n in ("a", "b", "c") if n in store.volume_names("labeled")]
        stored = store.read_volume(trained[0])
        np.testing.assert_array_equal(stored.label, labels[trained[0]][:, ::-1, ::-1])
        assert np.allclose(store.volume_info(trained[0]).geometry.direction_matrix, np.eye(3))
    assert plan["heldout_mode"] == "volumes"


def test_a_killed_retrain_worker_says_the_model_is_unchanged_and_how_to_resume(tmp_path):
    import os
    import signal
    import time

    from cgs_engine.retrain.worker import start_retrain_process
    from cgs_engine.train.events import RetrainFailed

    project = make_project(tmp_path, corrections=3, unlabeled=1)
    process = start_retrain_process(project.folder, iterations=500)
    os.kill(process.pid, signal.SIGKILL)
    deadline, messages = time.monotonic() + 60, []
    while not any(isinstance(m, RetrainFailed) for m in messages) and time.monotonic() < deadline:
        messages += process.poll_messages()
        time.sleep(0.05)
    (failed,) = [m for m in messages if isinstance(m, RetrainFailed)]
    assert "killed (signal 9)" in failed.error and "active model is unchanged" in failed.error
    assert "--resume" in failed.error and "\n" not in failed.error
    assert Project.open(project.folder).active_version().id == "v0001"


def test_a_correction_saved_again_while_the_store_is_built_records_the_revision_that_trains(
    tmp_path, monkeypatch
):
    """The panel can re-save a scan in the second between the retrain listing the corrections and
    reading them: its new labels trained, the version recorded the old revision, and the
    correction then counted as new again (an extra automatic retrain)."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=3, unlabeled=1)
    real_read = Project.read_correction
    resaved = {}

    def read_after_a_resave(self, name):
        if not resaved:
            old = real_read(self, name)
            resaved[name] = self.add_correction(name, old.image, old.labels, old.review).revision
        return real_read(self, name)

    monkeypatch.setattr(Project, "read_correction", read_after_a_resave)
    record = build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    ((name, revision),) = resaved.items()
    assert record["corrections_used"][name] == revision


def test_a_failed_retrain_says_its_own_failure_even_when_it_cannot_be_recorded(tmp_path, monkeypatch):
    """On a full disk (or in a project moved meanwhile) recording the failure in finished.json fails
    too, and that second error, naming finished.json, replaced the one that said what went wrong."""
    import cgs_engine.retrain.run as run_module
    from cgs_engine.durable import WriteError

    project = make_project(tmp_path, corrections=2, unlabeled=0)

    def failing_training(*args, **kwargs):
        raise OSError(28, "No space left on device: best.pt")

    real_write = run_module.write_json_atomically

    def unwritable(path, data):
        if path.name != "finished.json":
            return real_write(path, data)
        raise WriteError(str(path), "could not be written (no space left on device)")

    monkeypatch.setattr(run_module, "train", failing_training)
    monkeypatch.setattr(run_module, "write_json_atomically", unwritable)
    with pytest.raises(OSError, match="best.pt"):
        retrain(project, iterations=2, settings=TINY_SETTINGS)


def test_a_project_held_open_retrains_with_the_settings_on_disk(tmp_path):
    """The Project object keeps the settings it read: another process's new learning rate was ignored."""
    project = make_project(tmp_path, corrections=2, unlabeled=0)
    held = Project.open(project.folder)
    Project.open(project.folder).update_settings(train={**TINY_SETTINGS, "lr": 3e-4})
    result = retrain(held, iterations=2)
    recorded = json.loads((result.run_dir / "train" / "config.json").read_text())["config"]
    assert recorded["lr"] == pytest.approx(3e-4)


def _slices_of(array: np.ndarray) -> set[bytes]:
    return {plane.tobytes() for plane in array}


@pytest.mark.parametrize("recorded", [True, False])
def test_copies_of_one_scan_hold_out_the_same_slices(tmp_path, recorded):
    """One scan saved as "pt" and "pt (2)": with too few scans for whole volumes, each copy held out
    its own block and trained on the slices the other held out (also for corrections saved before
    image fingerprints were recorded)."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    image, label = synthetic_volume(np.random.default_rng(8))
    first, second = np.zeros(label.shape, np.uint8), np.zeros(label.shape, np.uint8)
    first[: len(label) // 2] = 2  # different slices reviewed, so different blocks of their own
    second[len(label) // 2 :] = 2
    project.add_correction("pt", Volume(image), label, first)
    project.add_correction("pt (2)", Volume(image), label, second)
    if not recorded:  # saved before the fingerprint was recorded
        for info in project.corrections():
            with h5py.File(info.path, "r+") as file:
                del file.attrs["image_fingerprint"]
        assert all(not info.image_fingerprint for info in project.corrections())
    plan = build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    assert plan["heldout_mode"] == "slices"
    with SliceStore.open(tmp_path / "store.h5") as store:
        held = set().union(*(_slices_of(store.read_volume(name).image) for name in store.volume_names("val")))
        trained = set().union(
            *(_slices_of(store.read_volume(name).image) for name in store.volume_names("labeled"))
        )
        unreviewed = [name for name in store.volume_names("unlabeled") if "~unreviewed" in name]
        unlabeled = set().union(*(_slices_of(store.read_volume(name).image) for name in unreviewed))
    assert held and trained and not held & trained
    assert not held & unlabeled  # nor as another copy's unreviewed slices


def test_copies_reviewed_far_apart_keep_their_unreviewed_slices_between_the_blocks(tmp_path):
    """The copies' blocks, far apart, were kept out of the unlabeled pool as one span: every
    unreviewed slice between them was dropped (16 of 16 here)."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    image, label = synthetic_volume(np.random.default_rng(8), depth=20)
    first, second = np.zeros(label.shape, np.uint8), np.zeros(label.shape, np.uint8)
    first[:4], second[-4:] = 2, 2
    project.add_correction("pt", Volume(image), label, first)
    project.add_correction("pt (2)", Volume(image), label, second)
    build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    with SliceStore.open(tmp_path / "store.h5") as store:
        held = set().union(*(_slices_of(store.read_volume(name).image) for name in store.volume_names("val")))
        for name in ("pt~unreviewed", "pt (2)~unreviewed"):
            kept = _slices_of(store.read_volume(name).image)
            assert len(kept) >= 10 and not kept & held


def test_no_slice_next_to_the_held_out_block_trains(tmp_path):
    """A fully corrected scan, held out by slices: the reviewed slices just above and below the
    held-out block trained, and on thin CT slices the gate judged on near copies of them. Two
    reviewed slices side by side still teach (the one not held out trains)."""
    from cgs_engine.retrain.training_store import build_store

    for depth, reviewed_slices in ((20, slice(None)), (20, slice(5, 7))):
        root = tmp_path / f"r{reviewed_slices.start}"
        root.mkdir()
        project = make_project(root, corrections=0, unlabeled=1)
        image, label = synthetic_volume(np.random.default_rng(3), depth=depth)
        review = np.zeros(label.shape, np.uint8)
        review[reviewed_slices] = EDITED
        project.add_correction("pt", Volume(image), label, review)
        build_store(project, root / "store.h5", lambda: False, lambda message: None)
        index = {plane.tobytes(): z for z, plane in enumerate(image)}
        with SliceStore.open(root / "store.h5") as store:
            held = {index[plane.tobytes()] for plane in store.read_volume("pt~heldout").image}
            trained = {index[plane.tobytes()] for plane in store.read_volume("pt").image}
        assert held and trained and not held & trained
        if reviewed_slices.start is None:  # a whole scan: the block's neighbours left out
            beside = {z + step for z in held for step in (-1, 1)} - held
            assert trained == set(range(depth)) - held - beside, (held, trained)
        else:
            assert held | trained == {5, 6}


def test_a_corrected_scan_still_in_the_unlabeled_list_is_not_trained_on_again(tmp_path):
    """A scan from the worklist, corrected, stays in the project's unlabeled list. Added again as an
    unlabeled volume, its held-out slices were trained on, and the gate judged on images it had
    seen. Held out by slices (few scans) or as a whole volume, it goes in once."""
    from cgs_engine.io import read_volume
    from cgs_engine.retrain.training_store import build_store

    for corrections in (1, 3):
        root = tmp_path / f"c{corrections}"
        root.mkdir()
        project = make_project(root, corrections=0, unlabeled=2, seed=corrections)
        scan = read_volume(root / "scan0.nii.gz")  # corrected from the worklist, as a user does
        _, labels = synthetic_volume(np.random.default_rng(9))
        project.add_correction("worked", scan, labels, partly_reviewed(len(labels)))
        for index in range(1, corrections):
            image, more = synthetic_volume(np.random.default_rng(20 + index))
            project.add_correction(f"other{index}", Volume(image), more)
        warnings = []
        plan = build_store(project, root / "store.h5", lambda: False, warnings.append)
        assert str(root / "scan0.nii.gz") not in plan["unlabeled_used"]
        assert str(root / "scan1.nii.gz") in plan["unlabeled_used"]
        assert any("scan0.nii.gz: the scan of correction 'worked'" in w for w in warnings), warnings
        with SliceStore.open(root / "store.h5") as store:
            scan_rows = {store.read_volume(n).image.tobytes() for n in store.volume_names("unlabeled")}
            heldout = store.volume_names("val")
            assert heldout
            for name in heldout:
                assert not any(row.tobytes() in b"".join(scan_rows) for row in store.read_volume(name).image)
