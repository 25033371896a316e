"""`cgs train` under torchrun, 2 gloo processes on CPU: same replicas, rank 0 writes, resume, failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hooked_cgs import HOOKED_CGS
from synthetic import make_store

from cgs_engine.checkpoint import load_payload

TORCHRUN = Path(sys.executable).parent / "torchrun"
TINY = {
    "widths": [4, 8, 16],
    "dropouts": [0.0, 0.1, 0.2],
    "precision": "fp32",
    "batch_labeled": 2,
    "batch_unlabeled": 2,
    "input_size": 32,
    "val_every": 3,
    "optimizer": "adamw",
    "lr": 0.01,
}


def _torchrun(store: Path, run_dir: Path, config: Path, *extra: str, fail_at: str | None = None):
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        str(HOOKED_CGS),
        "--check-replicas",
        *(["--fail-at", fail_at] if fail_at else []),
        "train",
        str(store),
        "-o",
        str(run_dir),
        *extra,
    ]
    if "--resume" not in extra:
        command += ["--config", str(config)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torchrun's failure report is not always ASCII (one make test run died decoding byte 0xf0 in
    # the C locale): read as UTF-8, anything else replaced, for the messages the tests look for
    return subprocess.run(
        command, capture_output=True, encoding="utf-8", errors="replace", timeout=600, env=environment
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed beside this Python")
    folder = tmp_path_factory.mktemp("ddp")
    config = folder / "tiny.json"
    config.write_text(json.dumps(TINY))
    return make_store(folder / "store.h5", labeled=2, unlabeled=2), config


def _steps(run_dir: Path) -> list[dict]:
    return [
        r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["kind"] == "step"
    ]


def test_two_ranks_train_identically_and_only_rank_zero_writes(setup, tmp_path):
    store, config = setup
    run = tmp_path / "run"
    result = _torchrun(store, run, config, "--iterations", "12")
    assert result.returncode == 0, result.stdout + result.stderr
    # one summary, rank 0's (rank 1's said "n/a (no val volumes)" and "model: None"), and no raw
    # library warning (torch 2.13's FutureWarning on broadcast_buffers, once per rank)
    assert result.stdout.count("done: 12/12 iterations") == 1 and "model: None" not in result.stdout
    assert "Warning" not in result.stdout + result.stderr
    steps = _steps(run)
    assert [r["step"] for r in steps] == list(range(1, 13))  # each step logged once, by rank 0 only
    assert all(r["replica_hash"] for r in steps)  # every step: hashes gathered from both ranks and equal
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["world_size"] == 2 and "per rank" in recorded["batch_meaning"]
    first = sum(r["loss_sup"] for r in steps[:3]) / 3
    last = sum(r["loss_sup"] for r in steps[-3:]) / 3
    assert last < first
    assert sorted(p.name for p in run.iterdir() if p.name != ".run.lock") == [  # the folder's lock stays
        "best.pt",
        "config.json",
        "final.pt",
        "log.jsonl",
        "state.pt",
    ]


def test_a_failing_rank_stops_the_run_and_resume_continues(setup, tmp_path):
    store, config = setup
    run = tmp_path / "run"
    failed = _torchrun(store, run, config, "--iterations", "8", fail_at="1:4")
    assert failed.returncode != 0
    assert "injected fault on rank 1 at step 4" in failed.stdout + failed.stderr
    state = load_payload(run / "state.pt")  # the last good state, written at step 3, is intact
    assert state["step"] == 3
    resumed = _torchrun(store, run, config, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [r["step"] for r in _steps(run)][-5:] == [4, 5, 6, 7, 8]
    assert load_payload(run / "state.pt")["step"] == 8


def test_retrain_under_torchrun_trains_on_both_ranks_and_rank_zero_keeps_one_version(tmp_path):
    """`cgs retrain` under torchrun: one store, one run, one new version, written by rank 0 alone."""
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed beside this Python")
    from test_project import TINY_SETTINGS, make_project

    from cgs_engine.project import Project

    project = make_project(tmp_path, corrections=3, unlabeled=1)
    project.update_settings(train={**TINY_SETTINGS, "threads": 1})
    command = [
        str(TORCHRUN),
        "--standalone",
        "--nproc-per-node",
        "2",
        str(HOOKED_CGS),
        "--check-replicas",
        "retrain",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, str(project.folder), "--iterations", "4"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        timeout=600,
        env=environment,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("-> version v0002") == 1  # rank 0 reports, rank 1 stays quiet
    reopened = Project.open(project.folder)
    assert [v.id for v in reopened.versions()] == ["v0001", "v0002"]
    (run,) = [p for p in reopened.runs_dir.iterdir() if p.is_dir()]
    steps = _steps(run / "train")
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all(r["replica_hash"] for r in steps)
    assert json.loads((run / "train" / "config.json").read_text())["world_size"] == 2
