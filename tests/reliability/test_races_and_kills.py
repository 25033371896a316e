"""Concurrent writers, killed writers and a vanished GUI: nothing saved is lost or mixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, cgs, ct_array, write_image
from hooked_cgs import HOOKED_CGS, fail_at
from synthetic import make_store
from test_project import TINY_SETTINGS, make_project

from cgs_engine.durable import remove_stale_temp_files
from cgs_engine.locks import exclusive
from cgs_engine.project import Project, ProjectError
from cgs_engine.train import hooks
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.loop import train
from cgs_engine.train.run_dir import RunError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX locks and signals")


def tiny_config(**changes) -> TrainConfig:
    settings = {
        "iterations": 4,
        "input_size": 32,
        "batch_labeled": 2,
        "batch_unlabeled": 2,
        "widths": (4, 8),
        "dropouts": (0.0, 0.1),
        "val_every": 2,
        "precision": "fp32",
        "device": "cpu",
        "threads": 1,
        **changes,
    }
    return TrainConfig(**settings)


def test_parallel_add_unlabeled_keeps_every_scan(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    scans = [write_image(tmp_path / f"s{i}.nii.gz", ct_array(i)) for i in range(10)]
    command = [sys.executable, "-m", "cgs_engine", "project", "add-unlabeled", str(project.folder)]
    processes = [subprocess.Popen([*command, str(scan)], stderr=subprocess.PIPE) for scan in scans]
    assert [p.wait(timeout=300) for p in processes] == [0] * 10
    kept = {scan.path for scan in Project.open(project.folder).unlabeled()}
    assert kept == {scan.resolve() for scan in scans}


def test_activate_waits_for_a_version_being_written(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=0)
    project.add_version(project.active_version().model_path, {"origin": "retrained", "status": "accepted"})
    held, release = threading.Event(), threading.Event()

    def writer_holding_the_state() -> None:  # a retrain between its check and its activation
        with project.state_lock():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=writer_holding_the_state)
    thread.start()
    held.wait(10)
    started = subprocess.Popen(
        [sys.executable, "-m", "cgs_engine", "project", "activate", str(project.folder), "v0002"],
        stderr=subprocess.PIPE,
    )
    time.sleep(2.0)
    assert started.poll() is None, "activate must wait for the lock"
    release.set()
    thread.join()
    assert started.wait(timeout=120) == 0
    assert Project.open(project.folder).active_version().id == "v0002"


def test_two_training_runs_cannot_share_a_folder(tmp_path):
    store = make_store(tmp_path / "store.h5", size=32)
    run = tmp_path / "run"
    run.mkdir()
    with (
        exclusive(run / ".run.lock", "", reentrant=False),
        pytest.raises(RunError, match="another training run"),
    ):
        train(store, run, tiny_config())
    assert [p.name for p in run.iterdir()] == [".run.lock"]


def test_a_run_killed_before_its_first_state_can_be_started_again(tmp_path):
    store = make_store(tmp_path / "store.h5", size=32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "log.jsonl").write_text('{"kind": "step", "step": 1}\n{"kind": "st')
    with pytest.raises(RunError, match="nothing to resume"):
        train(store, run, resume=True)
    result = train(store, run, tiny_config())
    assert result.steps_done == 4 and (run / "state.pt").is_file()
    with pytest.raises(RunError, match="not empty"):  # a run with results is never overwritten
        train(store, run, tiny_config())


def test_a_resumed_run_logs_each_step_once(tmp_path, monkeypatch):
    store = make_store(tmp_path / "store.h5", size=32)
    run = tmp_path / "run"
    # dies at step 25: state saved at 15, log at 20
    monkeypatch.setattr(hooks, "STEP_HOOKS", [fail_at(0, 24)])
    with pytest.raises(RuntimeError, match="injected fault"):
        train(store, run, tiny_config(iterations=30, val_every=15))
    monkeypatch.setattr(hooks, "STEP_HOOKS", [])
    train(store, run, resume=True)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    vals = [r["step"] for r in records if r["kind"] == "val"]
    assert steps == [10, 20, 30] and vals == [15, 30]


def test_a_correction_file_cannot_name_a_file_outside_the_project(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    victim = tmp_path / "victim.h5"
    victim.write_bytes(b"precious")
    (info,) = project.corrections()
    forged = project.corrections_dir / "forged.h5"
    forged.write_bytes(info.path.read_bytes())
    with h5py.File(forged, "r+") as file:
        file.attrs["name"] = "../../victim"
    reopened = Project.open(project.folder)
    assert [c.name for c in reopened.corrections()] == [info.name]
    assert any("forged.h5" in problem for problem in reopened.problems)
    with pytest.raises(ProjectError, match="not a valid correction name"):
        reopened.remove_correction("../../victim")
    assert victim.read_bytes() == b"precious"


def test_remove_commands(tmp_path):
    project = make_project(tmp_path, corrections=2, unlabeled=2)
    scan, other = (s.path for s in project.unlabeled())
    assert cgs("project", "remove-unlabeled", project.folder, scan).returncode == 0
    assert [s.path for s in Project.open(project.folder).unlabeled()] == [other]
    assert_one_line_error(cgs("project", "remove-unlabeled", project.folder, scan), "not among")
    assert cgs("project", "remove-correction", project.folder, "case0").returncode == 0
    assert [c.name for c in Project.open(project.folder).corrections()] == ["case1"]
    assert_one_line_error(cgs("project", "remove-correction", project.folder, "case0"), "no correction")


def test_a_damaged_scan_is_refused_when_added_and_skipped_when_it_breaks_later(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=0)
    project.update_settings(train={**TINY_SETTINGS, "threads": 1})
    bad = ct_array()
    bad[0, 0, 0] = np.nan
    nan_scan = write_image(tmp_path / "nan.mha", bad)
    assert_one_line_error(cgs("project", "add-unlabeled", project.folder, nan_scan), "NaN or infinite")
    assert project.unlabeled() == []
    good = write_image(tmp_path / "later.mha", ct_array())
    project.add_unlabeled([good])
    write_image(good, bad)  # damaged after it was added
    result = cgs("retrain", project.folder, "--iterations", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped unlabeled scan" in result.stdout + result.stderr


def test_the_retrain_worker_outlives_its_parent(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    settings = json.dumps({**TINY_SETTINGS, "threads": 1})
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cgs_engine.retrain.worker",
            str(project.folder),
            "--iterations",
            "6",
            "--settings",
            settings,
            "--nice",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert json.loads(worker.stdout.readline())["kind"] == "stage"
    worker.stdout.close()  # napari was killed: nobody reads the messages any more
    assert worker.wait(timeout=300) == 0
    reopened = Project.open(project.folder)
    assert [v.id for v in reopened.versions()] == ["v0001", "v0002"]
    (run,) = [p for p in reopened.runs_dir.iterdir() if p.is_dir()]
    assert json.loads((run / "finished.json").read_text())["outcome"] == "finished"


def test_a_failed_retrain_with_a_saved_state_resumes(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    project.update_settings(train={**TINY_SETTINGS, "threads": 1})
    failed = subprocess.run(
        [
            sys.executable,
            str(HOOKED_CGS),
            "--fail-at",
            "0:4",
            "retrain",
            str(project.folder),
            "--iterations",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode != 0
    (run,) = [p for p in project.runs_dir.iterdir() if p.is_dir()]
    assert json.loads((run / "finished.json").read_text())["outcome"] == "failed"
    assert Project.open(project.folder).interrupted_run() == run
    resumed = cgs("retrain", project.folder, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [v.id for v in Project.open(project.folder).versions()] == ["v0001", "v0002"]


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    dead = project.corrections_dir / ".case0.h5.999999999-0a1b2c3d.partial"
    alive = project.corrections_dir / f".case0.h5.{os.getpid()}-0a1b2c3d.partial"
    unrelated = project.corrections_dir / ".keep-me"
    for path in (dead, alive, unrelated):
        path.write_bytes(b"x" * 1000)
    Project.open(project.folder)
    assert not dead.exists() and alive.exists() and unrelated.exists()
    assert remove_stale_temp_files(project.corrections_dir) == []
