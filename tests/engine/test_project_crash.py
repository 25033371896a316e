"""The retrain worker process: message stream, cancel, failure, and kill -9 followed by resume."""

from __future__ import annotations

import importlib
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from test_project import TINY_SETTINGS, make_project

from cgs_engine.checkpoint import load_checkpoint, load_payload
from cgs_engine.project import Project, ProjectError
from cgs_engine.retrain import HeldoutScore, retrain
from cgs_engine.retrain.worker import start_retrain_process

retrain_module = importlib.import_module("cgs_engine.retrain.keep")
run_module = importlib.import_module("cgs_engine.retrain.run")

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses POSIX signals")
LONG_RUN = 5000  # iterations: far more than a test waits for, so the worker is surely mid-run
PATIENCE_S = 180  # generous: the worker imports torch on a shared, busy machine


def collect_until(process, kinds: set[str], timeout: float = PATIENCE_S) -> list[dict]:
    messages: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages += process.poll_messages()
        if any(m["kind"] in kinds for m in messages):
            return messages
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no {kinds} message within {timeout}s; got {[m['kind'] for m in messages]}")


@pytest.mark.parametrize("how", ["cancel-file", "sigterm"])
def test_worker_streams_messages_and_cancels_gracefully(tmp_path, how):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    process = start_retrain_process(project.folder, iterations=LONG_RUN, settings=TINY_SETTINGS)
    messages = collect_until(process, {"step", "failed"})
    assert not any(m["kind"] == "failed" for m in messages), messages[-1]
    if how == "cancel-file":
        process.cancel()
    else:
        os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=PATIENCE_S) == 0
    messages += process.poll_messages()
    kinds = [m["kind"] for m in messages]
    assert kinds[0] == "stage" and "start" in kinds and kinds[-2:] == ["version", "cancelled"]
    start = next(m for m in messages if m["kind"] == "start")
    assert start["total"] == LONG_RUN and start["resumed"] is False and start["parent"] == "v0001"
    end = messages[-1]
    assert end["version"] == "v0002" and 0 < end["steps"] < LONG_RUN
    assert Project.open(project.folder).version("v0002").record["cancelled"] is True
    assert not process.cancel_file.exists() and process.log_path.is_file()
    assert process.poll_messages() == []  # nothing more, and no made-up failure after a clean end


def test_worker_failure_is_one_message(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    process = start_retrain_process(project.folder, iterations=1)
    assert process.wait(timeout=PATIENCE_S) == 1
    messages = process.poll_messages()
    assert [m["kind"] for m in messages] == ["failed"]
    assert "no corrected volumes with reviewed voxels" in messages[0]["error"]


def test_kill_9_mid_run_then_resume_continues(tmp_path):
    """Resumed in a moved project folder: the run recorded the model it fine-tunes from by its old
    absolute path, and --resume failed there every time (the hours trained were lost)."""
    project = make_project(tmp_path / "before", corrections=3, unlabeled=1)
    corrections_before = {c.name: c.revision for c in project.corrections()}
    process = start_retrain_process(project.folder, iterations=LONG_RUN, settings=TINY_SETTINGS)
    messages = collect_until(process, {"step", "failed"})
    assert not any(m["kind"] == "failed" for m in messages), messages[-1]
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    after = process.poll_messages()
    assert after[-1]["kind"] == "failed" and after[-1]["exit_code"] == -signal.SIGKILL
    assert "killed (signal 9)" in after[-1]["error"]

    # the project survives, also moved elsewhere: it opens, the active model loads, every correction is intact
    moved = tmp_path / "restored elsewhere" / project.folder.name
    moved.parent.mkdir()
    os.rename(project.folder, moved)
    reopened = Project.open(moved)
    assert reopened.problems == [] and reopened.active_version().id == "v0001"
    assert load_checkpoint(reopened.active_model_path()).class_names == reopened.class_names
    assert {c.name: c.revision for c in reopened.corrections()} == corrections_before
    assert all(np.any(reopened.read_correction(name).review) for name in corrections_before)
    assert not reopened.is_retraining()  # the dead worker's lock went with it

    run = reopened.interrupted_run()
    started = next(m["run"] for m in messages if m["kind"] == "start")
    assert run is not None and run == moved / Path(started).relative_to(project.folder)
    saved_step = load_payload(run / "train" / "state.pt")["step"]
    assert saved_step > 0
    # a kill during a checkpoint write leaves only a hidden temp file beside the intact one
    (run / "train" / ".state.pt.0badf00d.partial").write_bytes(b"half a checkpoint")
    (run / "train" / ".best.pt.0badf00d.partial").write_bytes(b"")

    calls = {"n": 0}

    def a_few_more_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > 6

    events: list[dict] = []
    result = retrain(reopened, resume=True, should_stop=a_few_more_steps, on_event=events.append)
    start = next(e for e in events if e["kind"] == "start")
    assert start["resumed"] is True and start["total"] == LONG_RUN and start["run"] == str(run)
    assert result.resumed and result.run_dir == run and saved_step < result.steps_done < LONG_RUN
    assert result.version == "v0002" and reopened.version("v0002").run == run.name
    assert reopened.interrupted_run() is None


class SimulatedKill(BaseException):
    """Like a kill: not an Exception, so the run is not marked failed and stays resumable."""


@pytest.mark.parametrize("then", ["resume", "a new retrain"])
def test_kill_between_version_and_activation_is_completed_on_resume(tmp_path, monkeypatch, then):
    """A new retrain instead of --resume (as the panel's Retrain now) marked the run abandoned and
    left its version inactive, its record saying 'activated' for good."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    better = HeldoutScore(0.5, {}, 1)
    monkeypatch.setattr(retrain_module, "evaluate_heldout", lambda *args: better)

    monkeypatch.setattr(Project, "activate", _raise_kill)
    with pytest.raises(SimulatedKill):
        retrain(project, iterations=2, settings=TINY_SETTINGS)
    monkeypatch.undo()
    assert project.version("v0002").status == "accepted" and project.active_version().id == "v0001"
    run = project.interrupted_run()
    assert run is not None and not (run / "finished.json").exists()

    if then == "resume":
        result = retrain(project, resume=True)
        assert result.version == "v0002" and result.activated and project.active_version().id == "v0002"
        assert [v.id for v in project.versions()] == ["v0001", "v0002"]  # no duplicate version
    else:
        result = retrain(project, iterations=2, settings=TINY_SETTINGS)
        assert project.version("v0003").parent == "v0002"  # trained from the version the rule activated
        assert json.loads((run / "finished.json").read_text())["activated"] is True
    assert project.interrupted_run() is None


def _killed_before_judging(project, monkeypatch) -> Path:
    """A retrain killed after training, before its version was judged: resumable."""
    monkeypatch.setattr(run_module, "keep_version", _raise_kill)
    with pytest.raises(SimulatedKill):
        retrain(project, iterations=2, settings=TINY_SETTINGS)
    monkeypatch.undo()
    run = project.interrupted_run()
    assert run is not None
    return run


@pytest.mark.parametrize("change", ["removed", "saved again, changed"])
def test_resume_is_refused_when_a_correction_changed_since_the_run_started(tmp_path, monkeypatch, change):
    """A resumed run reused the data it built at its start: a correction the user removed went on
    being trained on and held out, and the version was judged on it, without a word."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    run = _killed_before_judging(project, monkeypatch)
    name = project.corrections()[0].name
    if change == "removed":
        project.remove_correction(name)
    else:
        kept = project.read_correction(name)
        labels = kept.labels.copy()
        labels[labels == 1] = 0
        project.add_correction(name, kept.image, labels, kept.review, replace="yes")
    with pytest.raises(ProjectError, match=f"cannot resume.*{name!r} was {change}"):
        retrain(project, resume=True)
    assert [v.id for v in project.versions()] == ["v0001"] and project.interrupted_run() is None
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)  # a new retrain, as the error says
    assert result.version == "v0002" and project.version("v0002").run != run.name


def test_a_correction_saved_again_unchanged_does_not_stop_a_resume(tmp_path, monkeypatch):
    """Add as corrected pressed again on the same labels gives a new revision, not new content."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    run = _killed_before_judging(project, monkeypatch)
    name = project.corrections()[0].name
    kept = project.read_correction(name)
    project.add_correction(name, kept.image, kept.labels, kept.review, replace="yes")
    result = retrain(project, resume=True)
    assert result.resumed and result.run_dir == run and result.version == "v0002"


def test_a_run_resumed_after_a_rollback_is_kept_inactive(tmp_path, monkeypatch):
    """A retrain from v0002, killed; the user rolled back to v0001; the resumed run's version (a
    child of v0002) was compared with v0001 and activated, quietly undoing the rollback."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    better = HeldoutScore(0.5, {}, 1)
    monkeypatch.setattr(retrain_module, "evaluate_heldout", lambda *args: better)
    first = retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert first.activated and project.active_version().id == "v0002"
    with monkeypatch.context() as inner:
        inner.setattr(run_module, "keep_version", _raise_kill)
        with pytest.raises(SimulatedKill):
            retrain(project, iterations=2, settings=TINY_SETTINGS)
    project.activate("v0001")
    result = retrain(project, resume=True)
    assert result.version == "v0003" and not result.activated
    assert "trained from v0002, but v0001 was activated" in result.reason
    assert project.active_version().id == "v0001" and project.version("v0003").status == "rejected"
    assert (
        project.version("v0003").record["error_model"] == "inherited from v0002"
    )  # its parent's, not v0001's
    retrain(project, iterations=2, settings=TINY_SETTINGS)  # a later retrain does not activate it
    assert project.active_version().id in ("v0001", "v0004")


def _raise_kill(*args, **kwargs):
    raise SimulatedKill


def test_a_version_trained_with_a_correction_removed_meanwhile_is_kept_inactive(tmp_path, monkeypatch):
    """The user removed a correction while the retrain ran (the only held-out one here): the
    version, judged only on it, went live ("activated: held-out Dice 93.9 >= active 0.0"). Also
    when the run was killed between its version and the activation and then resumed."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    better = HeldoutScore(0.5, {}, 1)
    monkeypatch.setattr(retrain_module, "evaluate_heldout", lambda *args: better)
    real_keep = run_module.keep_version
    removed = project.corrections()[0].name

    def removed_while_judging(project_, *args, **kwargs):
        project_.remove_correction(removed)
        return real_keep(project_, *args, **kwargs)

    with monkeypatch.context() as inner:
        inner.setattr(run_module, "keep_version", removed_while_judging)
        result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert not result.activated and project.active_version().id == "v0001"
    assert f"correction {removed!r} was removed" in result.reason

    with monkeypatch.context() as inner:  # killed before the activation, then a removal, then resume
        inner.setattr(Project, "activate", _raise_kill)
        with pytest.raises(SimulatedKill):
            retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert project.active_version().id == "v0001"
    second = project.corrections()[0].name
    project.remove_correction(second)
    resumed = retrain(project, resume=True)
    assert not resumed.activated and project.active_version().id == "v0001"
    assert f"correction {second!r} was removed" in resumed.reason


@pytest.mark.parametrize("changed", [True, False])
def test_a_version_trained_with_a_correction_saved_again_meanwhile(tmp_path, monkeypatch, changed):
    """The user corrected a correction again while the retrain ran: the version trained on, and
    was judged with, the labels the user has since taken back, and went live. Saved again with
    the same content (a new revision only), it still holds and the version goes live."""
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    monkeypatch.setattr(retrain_module, "evaluate_heldout", lambda *args: HeldoutScore(0.5, {}, 1))
    real_keep = run_module.keep_version
    name = project.corrections()[0].name

    def saved_again_while_judging(project_, *args, **kwargs):
        correction = project_.read_correction(name)
        labels = correction.labels.copy()
        if changed:
            labels[labels == 1] = 0  # the user took an organ back
        project_.add_correction(name, correction.image, labels, correction.review, replace="yes")
        return real_keep(project_, *args, **kwargs)

    monkeypatch.setattr(run_module, "keep_version", saved_again_while_judging)
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    if changed:
        assert not result.activated and project.active_version().id == "v0001"
        assert f"correction {name!r} was saved again, changed" in result.reason
    else:
        assert result.activated and project.active_version().id == result.version


def test_a_resumed_run_in_a_moved_project_fine_tunes_from_its_own_model(tmp_path):
    """Moved, and another project made at the old place: the run's recorded model path existed
    again, so the resumed run took the other project's model (as its frozen pseudo-labeler)."""
    from cgs_engine.train.run_dir import moved_with_its_folder

    old, new = tmp_path / "old" / "project", tmp_path / "new place" / "project"
    for root in (old, new):
        (root / "models" / "v0001").mkdir(parents=True)
        (root / "models" / "v0001" / "model.pt").write_bytes(root.parent.name.encode())
    recorded = {"init_checkpoint": str(old / "models" / "v0001" / "model.pt"), "lr": 1e-4}
    store_then, store_now = old / "runs" / "r1" / "store.h5", new / "runs" / "r1" / "store.h5"
    settings = moved_with_its_folder(recorded, str(store_then), store_now)
    assert settings["init_checkpoint"] == str(new / "models" / "v0001" / "model.pt")
    assert moved_with_its_folder(recorded, str(store_then), store_then) == recorded  # not moved
    outside = {"init_checkpoint": str(tmp_path / "elsewhere.pt")}
    assert moved_with_its_folder(outside, str(store_then), store_now) == outside
    # not moved, the store reached through a link (the record holds it resolved): no move
    (old / "runs" / "r1").mkdir(parents=True)
    store_then.write_bytes(b"store")
    (tmp_path / "link").symlink_to(old)
    linked = tmp_path / "link" / "runs" / "r1" / "store.h5"
    assert moved_with_its_folder(recorded, str(store_then.resolve()), linked) == recorded


def test_a_correction_is_not_removed_while_another_process_holds_the_projects_state(tmp_path, monkeypatch):
    """A retrain checks that no correction it used was removed and activates its version in one step
    under the state lock; `remove-correction` did not take that lock, so a removal landing between
    the check and the activation put a version trained on it live."""
    import subprocess
    import sys

    from cgs_engine.project import project as project_module

    project = make_project(tmp_path, corrections=2, unlabeled=0)
    name = project.corrections()[0].name
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from cgs_engine.project import Project\n"
            "project = Project.open(sys.argv[1])\n"
            "with project.state_lock():\n"
            "    print('held', flush=True)\n"
            "    sys.stdin.readline()\n",
            str(project.folder),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(project_module, "STATE_LOCK_WAIT_S", 0.3)
        with pytest.raises(ProjectError, match="busy"):
            project.remove_correction(name)
        assert name in {info.name for info in project.corrections()}
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    project.remove_correction(name)
    assert name not in {info.name for info in project.corrections()}
