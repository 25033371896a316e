"""Each bad command line gives one error line naming the file (exit 2) before work is done."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import assert_one_line_error, cgs, ct_array, unprivileged, write_image
from test_importers import write_acdc_miniature, write_segthor_miniature

from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint, save_checkpoint


def test_predict_output_naming_a_file_is_refused_before_inference(tmp_path, tiny_model, scan):
    target = tmp_path / "afile"
    target.write_bytes(b"keep")
    line = assert_one_line_error(cgs("predict", tiny_model, scan, "-o", target), str(target), "is a file")
    assert "model:" not in line and target.read_bytes() == b"keep"


def test_predict_refuses_existing_outputs_before_writing_any(tmp_path, tiny_model):
    a = write_image(tmp_path / "a.nii.gz", ct_array(1))
    b = write_image(tmp_path / "b.nii.gz", ct_array(2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_labels.nii.gz").write_bytes(b"earlier result")
    result = cgs("predict", tiny_model, a, b, "-o", out, "--maps")
    assert_one_line_error(result, "b_labels.nii.gz", "already exists")
    assert sorted(p.name for p in out.iterdir()) == ["b_labels.nii.gz"]  # a's outputs not written either


def test_inputs_with_one_file_name_in_two_folders_get_two_outputs(tmp_path, tiny_model):
    for patient in ("pt1", "pt2"):
        (tmp_path / patient).mkdir()
        write_image(tmp_path / patient / "ct.nii.gz", ct_array(len(patient)))
    out = tmp_path / "out"
    result = cgs(
        "predict", tiny_model, tmp_path / "pt1" / "ct.nii.gz", tmp_path / "pt2" / "ct.nii.gz", "-o", out
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*_labels.nii.gz")) == [
        "pt1_ct_labels.nii.gz",
        "pt2_ct_labels.nii.gz",
    ]


def test_class_names_with_one_file_name_keep_every_map(tmp_path, tiny_model, scan):
    checkpoint = load_checkpoint(tiny_model)
    checkpoint.class_names = ["background", "left lung", "left/lung", "Left Lung"]
    model = save_checkpoint(checkpoint, tmp_path / "clash.pt")
    out = tmp_path / "out"
    result = cgs("predict", model, scan, "-o", out, "--maps")
    assert result.returncode == 0, result.stderr
    maps = sorted(p.name for p in out.glob("scan_map_*.nii.gz"))
    assert len(maps) == 3, maps
    table = json.loads((out / "scan_classes.json").read_text())["classes"]
    assert sorted(row["map"] for row in table if "map" in row) == maps
    review = cgs("review", out / "scan_disagreement.nii.gz", "--maps-dir", out)
    assert review.returncode == 0, review.stderr
    assert "no specialist map" not in review.stderr


def test_unwritable_output_folders_are_one_line(open_folder, tiny_model):
    scan = write_image(open_folder / "scan.nii.gz", ct_array())
    model = open_folder / "model.pt"
    model.write_bytes(tiny_model.read_bytes())
    locked = open_folder / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    for path in (scan, model):
        path.chmod(0o644)
    store = open_folder / "store.h5"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from synthetic import make_store

    make_store(store, size=32)
    store.chmod(0o644)
    for folder in ("pred", "gt"):
        (open_folder / folder).mkdir()
        write_image(open_folder / folder / "case.nii.gz", np.zeros((3, 8, 8), np.uint8)).chmod(0o644)
    cases = {
        "evaluate --json": [
            "evaluate",
            "--pred",
            open_folder / "pred",
            "--gt",
            open_folder / "gt",
            "--json",
            locked / "r.json",
        ],
        "predict": ["predict", model, scan, "-o", locked / "out"],
        "convert": ["convert", scan, locked / "x.nii.gz"],
        "train": ["train", store, "-o", locked / "run", "--iterations", "1", "--size", "32"],
        "project create": ["project", "create", locked / "p", "--base-model", model],
    }
    for name, arguments in cases.items():
        command = unprivileged([sys.executable, "-m", "cgs_engine", *map(str, arguments)])
        result = cgs_like(command)
        assert_one_line_error(result, str(locked))
        assert list(locked.iterdir()) == [], name


def cgs_like(command):
    import subprocess

    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_evaluate_checks_its_json_target_and_class_names_first(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    labels = np.zeros((3, 8, 8), np.uint8)
    labels[1, 2:5, 2:5], labels[2, 1:3, 1:3] = 1, 2
    for folder in (pred, gt):
        write_image(folder / "case.nii.gz", labels)
    missing = tmp_path / "nowhere" / "r.json"
    assert_one_line_error(
        cgs("evaluate", "--pred", pred, "--gt", gt, "--json", missing), "nowhere", "does not exist"
    )
    assert_one_line_error(
        cgs("evaluate", "--pred", pred, "--gt", gt, "--classes", "a"), "--classes", "ids it does not name (2)"
    )
    (pred / "case_classes.json").write_text('{"classes": [')
    assert_one_line_error(
        cgs("evaluate", "--pred", pred, "--gt", gt), "case_classes.json", "not a readable class table"
    )


def test_review_refuses_an_image_as_a_disagreement_map(tmp_path, scan):
    ct = write_image(tmp_path / "ct.nii.gz", (ct_array() * 1000 - 500).astype(np.float32))
    assert_one_line_error(cgs("review", ct), str(ct), "not a probability or disagreement map")
    hounsfield = write_image(tmp_path / "hu.nii.gz", (ct_array() * 1000).astype(np.int16))
    assert_one_line_error(cgs("review", hounsfield), str(hounsfield), "int16")


def test_cuda_without_a_gpu_is_one_line(tiny_model, scan, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(
        cgs("predict", tiny_model, scan, "-o", tmp_path / "o", "--device", "cuda"), "no CUDA GPU"
    )
    assert not (tmp_path / "o").exists()


def test_import_argument_and_slice_size_errors(tmp_path):
    acdc = tmp_path / "acdc"
    write_acdc_miniature(acdc)
    assert_one_line_error(
        cgs("import", "acdc", acdc, "-o", tmp_path / "a.h5", "--labeled-patients", "0"), "--labeled-patients"
    )
    segthor = tmp_path / "segthor"
    write_segthor_miniature(segthor)
    odd = sorted((segthor / "train" / "img").glob("*.png"))[1]
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.uint8)), str(odd))
    result = cgs("import", "segthor-png", segthor, "-o", tmp_path / "s.h5", "--labeled-patients", "1")
    assert_one_line_error(result, odd.name, "slice size")
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "s.h5").exists()


def test_a_bit_flipped_store_is_one_line(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from synthetic import make_store

    store = make_store(tmp_path / "store.h5", size=32)
    data = bytearray(store.read_bytes())
    rng = np.random.default_rng(3)
    for index in rng.integers(len(data) // 3, len(data), 40):
        data[index] ^= 0xFF
    flipped = tmp_path / "flipped.h5"
    flipped.write_bytes(bytes(data))
    result = cgs("train", flipped, "-o", tmp_path / "run", "--iterations", "2", "--size", "32")
    assert_one_line_error(result, str(flipped))


def _flip_weight_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        largest = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    start = (
        largest.header_offset
        + 30
        + int.from_bytes(data[largest.header_offset + 26 : largest.header_offset + 28], "little")
    )
    start += int.from_bytes(data[largest.header_offset + 28 : largest.header_offset + 30], "little")
    data[start + largest.file_size // 2] ^= 0x04
    path.write_bytes(bytes(data))


def test_bit_flipped_and_malformed_checkpoints_are_refused(tmp_path, tiny_model, scan):
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(tiny_model.read_bytes())
    _flip_weight_bit(flipped)
    assert_one_line_error(cgs("predict", flipped, scan, "-o", tmp_path / "o"), str(flipped), "checksum")
    for size in (0, -4):
        payload = torch.load(tiny_model, weights_only=True)
        payload["input_size"] = size
        bad = tmp_path / f"size{size}.pt"
        torch.save(payload, bad)
        assert_one_line_error(cgs("predict", bad, scan, "-o", tmp_path / "o"), str(bad), "input size")
    assert not (tmp_path / "o").exists()


def test_the_bundled_model_carries_a_weight_checksum():
    from napari_cgs._sample_data import BUNDLED_MODEL

    assert torch.load(BUNDLED_MODEL, weights_only=True)["weights_sha256"]
    load_checkpoint(BUNDLED_MODEL)


def test_written_files_get_the_usual_permissions(tmp_path, tiny_model):
    copy = save_checkpoint(load_checkpoint(tiny_model), tmp_path / "copy.pt")
    assert copy.stat().st_mode & 0o044 == 0o044  # readable by group and others, as umask 022 allows


def test_checkpoint_type_is_not_lost(tiny_model):
    assert isinstance(load_checkpoint(tiny_model), ModelCheckpoint)


def test_two_project_creates_at_once_leave_one_project_and_one_line(tmp_path, tiny_model):
    import subprocess

    target = tmp_path / "project"
    command = [
        sys.executable,
        "-m",
        "cgs_engine",
        "project",
        "create",
        str(target),
        "--base-model",
        str(tiny_model),
    ]
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2, 2]  # one project; the others refused
    for code, stderr in results:
        if code:
            assert code == 2 and "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    from cgs_engine.project import Project

    assert Project.open(target).active_version().id == "v0001"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
