"""A command's outputs never become its inputs or replace them, a damaged input is found before
any output is written, and Ctrl+C after the work is done is not a silent failure (issue 22, 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import assert_one_line_error, cgs, ct_array, write_image
from file_makers import write_metaimage


def test_predicting_a_folder_into_itself_twice_leaves_its_outputs_alone(tmp_path, tiny_model):
    write_image(tmp_path / "a.nii.gz", ct_array(1))
    first = cgs("predict", tiny_model, tmp_path, "-o", tmp_path, "--maps")
    assert first.returncode == 0, first.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    second = cgs("predict", tiny_model, tmp_path, "-o", tmp_path, "--maps", "--overwrite")
    assert second.returncode == 0, second.stderr
    assert "left out" in second.stderr and "output file(s) of an earlier prediction" in second.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no a_labels_labels, a_map_x_labels...


@pytest.mark.parametrize("which", ["gt", "pred"])
def test_evaluate_json_never_replaces_an_input(tmp_path, which):
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "a.nii.gz", np.zeros((4, 16, 16), np.uint8))
    own = tmp_path / which / "a.nii.gz"
    before = own.read_bytes()
    result = cgs(
        "evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--json", own, "--overwrite"
    )
    assert_one_line_error(result, str(own), "is one of this command's inputs")
    assert own.read_bytes() == before


def test_review_json_never_replaces_its_input(tmp_path):
    disagreement = write_image(tmp_path / "a_disagreement.nii.gz", np.zeros((4, 16, 16), np.uint8))
    before = disagreement.read_bytes()
    result = cgs("review", disagreement, "--json", disagreement, "--overwrite")
    assert_one_line_error(result, str(disagreement), "is one of this command's inputs")
    assert disagreement.read_bytes() == before


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_a_damaged_second_input_is_refused_before_the_first_is_written(tmp_path, tiny_model, damage):
    good = write_image(tmp_path / "a_good.nii.gz", ct_array(1))
    if damage == "truncated":
        bad = tmp_path / "b_bad.nii.gz"
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad = write_metaimage(tmp_path / "b_bad.mha", ct_array(2), Offset="nan 0 0")
    result = cgs("predict", tiny_model, good, bad, "-o", tmp_path / "out")
    assert_one_line_error(result, str(bad))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_ctrl_c_after_the_output_is_written_is_not_a_silent_failure(tmp_path):
    """Before, a SIGINT during the interpreter's shutdown ended `cgs convert` with -2 and no word,
    after it had printed what it wrote."""
    scan = write_image(
        tmp_path / "scan.nii.gz", np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    )
    outcomes = []
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        out = tmp_path / f"out{delay}.nii.gz"
        process = subprocess.Popen(
            [sys.executable, "-m", "cgs_engine", "convert", str(scan), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not out.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
        outcomes.append(process.returncode)
        assert process.returncode in (0, 130), (delay, process.returncode, stdout, stderr)
        if process.returncode == 0:
            assert f"wrote {out}" in stdout
        else:
            assert_one_line_error_130(stderr)
    assert 0 in outcomes  # the interesting case happened at least once


def assert_one_line_error_130(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in stderr, stderr
