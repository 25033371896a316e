"""A write that fails (full disk, short write, a library that does not say so) is one line naming
the file, exit 2, the old file intact and no temp file left (issue 22).

Three ways to make the disk refuse: faults injected at the OS boundary in this process
(``os.pwrite``, a writer that stops short), a file-size limit on a child process (a real short
write, no root needed), and a real full tmpfs when the tests run as root.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import assert_one_line_error, ct_array, write_image

from cgs_engine.checkpoint import atomic_torch_save
from cgs_engine.durable import WriteError, append_line, write_json_atomically, write_text_atomically
from cgs_engine.h5_durable import write_h5_atomically
from cgs_engine.io import VolumeIOError, read_volume, write_volume
from cgs_engine.normalize import Normalization
from cgs_engine.store.dataset import SliceStore
from cgs_engine.volume import Geometry, Volume


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".mha", ".nrrd", ".nhdr"])
def test_a_volume_cut_short_by_the_writer_is_refused_and_the_old_file_kept(tmp_path, monkeypatch, extension):
    """ITK returns normally after a short write; the read-back catches it before the rename."""
    target = write_image(tmp_path / f"out{extension}", ct_array(1))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_write = sitk.WriteImage

    def short_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        for written in Path(path).parent.iterdir():  # the header, or the data file of .nhdr
            if written.suffix in (".gz", ".nii", ".mha", ".nrrd", ".raw"):
                written.write_bytes(written.read_bytes()[: written.stat().st_size * 2 // 3])

    monkeypatch.setattr("cgs_engine.io.writers.sitk.WriteImage", short_write)
    with pytest.raises(VolumeIOError, match="could not be written .*nothing was replaced") as raised:
        write_volume(Volume(ct_array(2, (6, 32, 32))), target, overwrite=True)
    assert "\n" not in str(raised.value) and str(target) in str(raised.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("extension", [".mhd", ".nhdr"])
def test_a_header_and_data_pair_stopped_between_its_moves_leaves_no_stale_header(
    tmp_path, monkeypatch, extension
):
    """Overwriting a .mhd/.zraw pair moves two files: a kill between the moves left the old header
    over the new data (read as the new voxels on the old grid, or refused as damaged). The old
    header goes first now: stopped there, the file is missing, never wrong, and the error says so."""
    from cgs_engine.io import writers

    target = write_image(tmp_path / f"out{extension}", ct_array(1))
    real_replace = os.replace

    def replace_data_only(source, destination):
        if Path(destination).name == target.name:
            raise OSError(errno.EIO, "Input/output error")  # the process dies here
        real_replace(source, destination)

    monkeypatch.setattr(writers.os, "replace", replace_data_only)
    with pytest.raises(VolumeIOError, match="partly replaced: write it again"):
        write_volume(Volume(ct_array(2), Geometry(origin=(5.0, 0.0, 0.0))), target, overwrite=True)
    assert not target.exists()


def test_a_volume_file_the_writer_never_made_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("cgs_engine.io.writers.sitk.WriteImage", lambda *args, **kwargs: None)
    with pytest.raises(VolumeIOError, match="could not be written"):
        write_volume(Volume(ct_array()), tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def fill_disk_after(monkeypatch, limit: int) -> None:
    """The guarded writer's disk fills up after ``limit`` bytes (ENOSPC from then on)."""
    real_pwrite = os.pwrite
    written = {"bytes": 0}

    def filling_disk(fd, data, offset):
        written["bytes"] += len(data)
        if written["bytes"] > limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr("cgs_engine.durable.os.pwrite", filling_disk)


def test_a_refused_disk_write_under_hdf5_is_one_error_not_a_crash(tmp_path, monkeypatch):
    """HDF5 2.0 segfaults on close after ENOSPC; the guarded file keeps it from ever seeing one."""
    fill_disk_after(monkeypatch, 20_000)
    target = tmp_path / "store.h5"
    target.write_bytes(b"the previous store")
    normalization = Normalization("identity")
    with (
        pytest.raises(WriteError, match="store.h5: could not be written .No space left on device"),
        SliceStore.create(target, ["background", "organ"], normalization, overwrite=True) as store,
    ):
        for index in range(4):
            image = np.random.default_rng(index).random((8, 64, 64)).astype(np.float32)
            store.add_volume(f"v{index}", image, np.zeros(image.shape, np.uint8), split="labeled")
    assert target.read_bytes() == b"the previous store"
    assert leftovers(tmp_path) == []


def test_the_saved_prediction_on_a_full_disk_is_one_error_and_the_old_file_kept(tmp_path, monkeypatch):
    """The panel's autosave writes the prediction's maps beside the session; written with plain
    h5py, a disk that filled up crashed the viewer (SIGSEGV at close, HDF5 2.0) and the strokes
    since the last autosave were lost. It goes through the guarded writer now."""
    from cgs_engine.review.prediction_file import load_prediction, save_prediction
    from cgs_engine.review.session import SessionError

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (8, 64, 64)).astype(np.uint8)
    maps = {"organ": rng.integers(0, 255, labels.shape).astype(np.uint8)}
    target = tmp_path / "ct.cgs-prediction.h5"
    arguments = ("fingerprint", labels, maps, None, ["background", "organ"], [[0, 0, 0], [255, 0, 0]])
    save_prediction(target, "first", *arguments)
    fill_disk_after(monkeypatch, 20_000)
    with pytest.raises(SessionError, match="cannot save the prediction's maps .*No space left on device"):
        save_prediction(target, "second", *arguments)
    assert load_prediction(target).prediction_id == "first"
    assert leftovers(tmp_path) == []


def test_hdf5_files_written_through_the_guard_read_back(tmp_path):
    path = write_h5_atomically(tmp_path / "x.h5", lambda file: file.create_dataset("a", data=np.arange(10)))
    import h5py

    with h5py.File(path, "r") as file:
        assert list(file["a"][:]) == list(range(10))


def test_a_torch_save_cut_short_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    atomic_torch_save({"step": 1}, target)
    before = target.read_bytes()
    real_save = torch.save

    def short_save(payload, path, *args, **kwargs):
        real_save(payload, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:-200])

    monkeypatch.setattr("cgs_engine.checkpoint.torch.save", short_save)
    with pytest.raises(WriteError, match="state.pt: could not be written .the archive does not read back"):
        atomic_torch_save({"step": 2, "weights": torch.zeros(1000)}, target)
    assert target.read_bytes() == before and leftovers(tmp_path) == []


def test_a_torch_save_failing_like_pytorch_does_is_one_line(tmp_path, monkeypatch):
    def failing_save(payload, path, *args, **kwargs):
        Path(path).write_bytes(b"PK")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr("cgs_engine.checkpoint.torch.save", failing_save)
    with pytest.raises(WriteError) as raised:
        atomic_torch_save({"step": 2}, tmp_path / "best.pt")
    assert "\n" not in str(raised.value) and "best.pt: could not be written" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


def test_a_json_write_that_reads_back_different_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text('{"old": true}')
    real_write_bytes = Path.write_bytes
    monkeypatch.setattr(
        Path, "write_bytes", lambda self, data: real_write_bytes(self, data[: len(data) // 2])
    )
    with pytest.raises(WriteError, match=r"report.json: could not be written \(wrote \d+ of \d+ bytes\)"):
        write_json_atomically(target, {"new": list(range(100))})
    assert json.loads(target.read_text()) == {"old": True} and leftovers(tmp_path) == []


# ------------------------------------------------------------- a real short write: a child process
def limited(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def cgs_limited(*arguments, limit: int = 8000, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "cgs_engine", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limited(limit),
    )


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".mha", ".nhdr"])
def test_convert_with_a_real_short_write_is_one_line_and_keeps_the_old_file(tmp_path, extension):
    scan = write_image(
        tmp_path / "scan.nii.gz", np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    )
    target = tmp_path / "out" / f"old{extension}"
    target.parent.mkdir()
    write_image(target, ct_array(3))
    before = {p.name: p.read_bytes() for p in target.parent.iterdir()}
    result = cgs_limited("convert", scan, target, "--overwrite")
    line = assert_one_line_error(result, str(target), "could not be written", "nothing was replaced")
    assert "NWAD" not in result.stderr.replace(line, "")  # niftilib's own line went into ours
    assert {p.name: p.read_bytes() for p in target.parent.iterdir()} == before


def test_evaluate_json_with_a_real_short_write_keeps_the_old_report(tmp_path):
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "a.nii.gz", np.zeros((4, 16, 16), np.uint8))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"old": "x" * 10}))
    result = cgs_limited(
        "evaluate",
        "--pred",
        tmp_path / "pred",
        "--gt",
        tmp_path / "gt",
        "--json",
        report,
        "--overwrite",
        limit=60,
    )
    assert_one_line_error(result, str(report), "could not be written")
    assert json.loads(report.read_text()) == {"old": "x" * 10}


# ---------------------------------------------------------------------------- a real full disk
@pytest.fixture
def full_disk(tmp_path):
    """(a 2 MB tmpfs, ``fill(keep)`` leaving ``keep`` bytes free on it); root only."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def fill(keep: int) -> None:
        filler = disk / "filler"
        filler.unlink(missing_ok=True)
        info = os.statvfs(disk)
        with open(filler, "wb") as stream, contextlib.suppress(OSError):
            stream.write(b"\0" * max(0, info.f_bavail * info.f_frsize - keep))

    try:
        yield disk, fill
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_convert_onto_a_full_disk(full_disk, tmp_path):
    full_disk, fill = full_disk
    scan = write_image(
        tmp_path / "scan.nii.gz", np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    )
    target = write_image(full_disk / "old.nii.gz", ct_array(1))
    before = target.read_bytes()
    fill(2048)
    result = subprocess.run(
        [sys.executable, "-m", "cgs_engine", "convert", str(scan), str(target), "--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(result, str(target), "No space left on device", "nothing was replaced")
    assert target.read_bytes() == before and leftovers(full_disk) == []
    assert read_volume(target).shape == (4, 32, 32)


def test_train_onto_a_full_disk(full_disk, tmp_path):
    full_disk, fill = full_disk
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from synthetic import make_store

    store = make_store(tmp_path / "store.h5", size=32)
    fill(30_000)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgs_engine",
            "train",
            str(store),
            "-o",
            str(full_disk / "run"),
            "--iterations",
            "2",
            "--size",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_line_error(result, str(full_disk / "run"), "could not be written", "No space left on device")
    assert not list((full_disk / "run").glob(".*partial"))


def test_an_empty_text_file_is_a_valid_write(tmp_path):
    """A log rewritten with no records left is empty on purpose; the read-back knows it."""
    target = tmp_path / "log.jsonl"
    target.write_text("old\n")
    write_text_atomically(target, "")
    assert target.read_text() == ""


def test_a_log_line_refused_halfway_is_cut_back_off(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    append_line(log, '{"step": 1}')
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 4:
            real_write(fd, data[:4])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr("cgs_engine.durable.os.write", half_then_full)
    with pytest.raises(WriteError, match="log.jsonl: could not be written .No space left on device"):
        append_line(log, '{"step": 2, "loss": 0.5}')
    assert log.read_text() == '{"step": 1}\n'
