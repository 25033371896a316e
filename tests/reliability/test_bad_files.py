"""Damaged or hostile image files: refused in one line before anything large is allocated."""

from __future__ import annotations

import gzip
import os
import time

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import assert_one_line_error, cgs, cgs_bytes, ct_array, write_image

from cgs_engine.io import VolumeIOError, read_volume


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".mha", ".nrrd"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinite_voxels_are_refused_in_every_format(tmp_path, extension, bad):
    array = ct_array()
    array[2, 5, 7] = bad
    path = write_image(tmp_path / f"scan{extension}", array)
    with pytest.raises(VolumeIOError, match="1 NaN or infinite voxel value"):
        read_volume(path)


def test_itk_alone_reads_nan_in_nifti_as_zero(tmp_path):
    """Why the raw bytes are checked: ITK hides the damage."""
    array = ct_array()
    array[0, 0, 0] = np.nan
    path = write_image(tmp_path / "scan.nii.gz", array)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0, 0, 0] == 0


def test_float64_beyond_float32_is_refused(tmp_path):
    array = ct_array().astype(np.float64)
    array[1, 1, 1] = 1e300
    path = write_image(tmp_path / "huge.mha", array)
    with pytest.raises(VolumeIOError, match="beyond the float32 range"):
        read_volume(path)


def test_finite_float64_images_still_read(tmp_path):
    path = write_image(tmp_path / "fine.nii.gz", ct_array().astype(np.float64) * 1000)
    assert read_volume(path).array.dtype == np.float64


@pytest.mark.parametrize("verb", ["info", "convert", "predict", "import"])
def test_cli_verbs_name_the_damaged_scan(tmp_path, tiny_model, verb):
    array = ct_array()
    array[0, 0, 0] = np.nan
    bad = write_image(tmp_path / "nan.mha", array)
    (tmp_path / "labels").mkdir()
    labels = write_image(tmp_path / "labels" / "nan.mha", np.zeros(array.shape, np.uint8))
    arguments = {
        "info": ["info", bad],
        "convert": ["convert", bad, tmp_path / "out.nii.gz"],
        "predict": ["predict", tiny_model, bad, "-o", tmp_path / "pred"],
        "import": ["import", "nifti", "--images", bad, "--labels", labels, "-o", tmp_path / "s.h5"],
    }[verb]
    assert_one_line_error(cgs(*arguments), str(bad), "NaN or infinite")
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "s.h5").exists()


# where the patient is: a NRRD without a named space is refused before its size is looked at
PLACED = "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"


def nrrd_claiming(sizes: str, encoding: str = "raw", payload: bytes = b"\0" * 1000) -> bytes:
    header = (
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {sizes}\nencoding: {encoding}\nendian: little\n"
        f"{PLACED}\n"
    )
    return header.encode() + payload


def test_a_header_claiming_more_than_memory_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.nrrd"
    path.write_bytes(nrrd_claiming("200000 20000 1000"))
    started = time.perf_counter()
    with pytest.raises(VolumeIOError, match="more than this machine's memory"):
        read_volume(path)
    assert time.perf_counter() - started < 5  # nothing was allocated


@pytest.mark.parametrize("encoding, payload", [("raw", b"\0" * 1000), ("gzip", gzip.compress(b"\0" * 1000))])
def test_a_header_claiming_more_than_the_file_holds_is_refused(tmp_path, encoding, payload):
    path = tmp_path / "short.nrrd"
    path.write_bytes(nrrd_claiming("300 300 100", encoding, payload))  # 36 MB claimed
    with pytest.raises(VolumeIOError, match="claims 300 x 300 x 100 voxels"):
        read_volume(path)


def test_a_detached_header_is_checked_against_its_data_file(tmp_path):
    (tmp_path / "scan.raw").write_bytes(b"\0" * 400)
    header = (
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 100 100 10\nencoding: raw\nendian: little\n"
        f"{PLACED}data file: scan.raw\n\n"
    )
    (tmp_path / "scan.nhdr").write_text(header)
    with pytest.raises(VolumeIOError, match="data holds only 400 bytes"):
        read_volume(tmp_path / "scan.nhdr")


def test_the_cli_reports_a_size_bomb_in_one_line(tmp_path):
    path = tmp_path / "bomb.nrrd"
    path.write_bytes(nrrd_claiming("2000 2000 1000"))
    assert_one_line_error(cgs("info", path), str(path), "2000 x 2000 x 1000")


NON_UTF8 = b"scan\xff\xfe.nii.gz"


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")
@pytest.mark.parametrize("verb", ["info", "convert", "predict", "add-correction"])
def test_a_non_utf8_path_is_refused_instead_of_aborting(tmp_path, tiny_model, verb):
    folder = os.fsencode(tmp_path)
    bad = folder + b"/" + NON_UTF8
    write_image(tmp_path / "good.nii.gz", ct_array())
    os.link(os.fsencode(tmp_path / "good.nii.gz"), bad)
    if verb == "add-correction":
        assert cgs("project", "create", tmp_path / "p", "--base-model", tiny_model).returncode == 0
    arguments = {
        "info": [b"info", bad],
        "convert": [b"convert", bad, folder + b"/out.nii.gz"],
        "predict": [b"predict", os.fsencode(tiny_model), bad, b"-o", folder + b"/pred"],
        "add-correction": [
            b"project",
            b"add-correction",
            folder + b"/p",
            b"--image",
            bad,
            b"--labels",
            bad,
        ],
    }[verb]
    result = cgs_bytes(*arguments)
    line = assert_one_line_error(result, "not UTF-8")
    assert "\\xff\\xfe" in line  # the name shown as it is on disk
    assert not (tmp_path / "out.nii.gz").exists() and not (tmp_path / "pred").exists()
