"""Every bad input gives one VolumeIOError line naming the file and the problem, and writes nothing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.io import VolumeIOError, read_volume, write_volume
from cgs_engine.volume import Geometry, Volume

SHAPE_ZYX = (6, 9, 11)
GEOMETRY = Geometry(spacing=(0.7, 0.7, 5.0), origin=(-12.5, 33.25, 101.0))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder``, hidden ones included, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def assert_one_line_error(raised: pytest.ExceptionInfo, name: str, *problem_words: str) -> str:
    message = str(raised.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{name}: "), message
    for word in problem_words:
        assert word in message, message
    return message


def image_volume(seed: int = 0, geometry: Geometry = GEOMETRY) -> Volume:
    array = np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE_ZYX).astype(np.int16)
    return Volume(array=array, geometry=geometry)


def label_volume(array: np.ndarray, geometry: Geometry = GEOMETRY) -> Volume:
    return Volume(array=array, geometry=geometry, kind="labels")


def read_error(path: Path, *problem_words: str, kind: str = "image") -> str:
    before = snapshot(path.parent)
    with pytest.raises(VolumeIOError) as raised:
        read_volume(path, kind=kind)
    assert snapshot(path.parent) == before
    return assert_one_line_error(raised, str(path), *problem_words)


def write_error(volume: Volume, path: Path, *problem_words: str, **options) -> str:
    before = snapshot(path.parent) if path.parent.exists() else None
    with pytest.raises(VolumeIOError) as raised:
        write_volume(volume, path, **options)
    after = snapshot(path.parent) if path.parent.exists() else None
    assert after == before, "a failed write changed the output folder"
    return assert_one_line_error(raised, str(path), *problem_words)


def gzipped_nifti(tmp_path: Path, shape=(40, 64, 64)) -> bytes:
    """A NIfTI big enough that half its gzip stream holds a good part of the voxels."""
    array = np.random.default_rng(0).integers(-1000, 1000, size=shape).astype(np.int16)
    path = tmp_path / "source" / "full.nii.gz"
    path.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path.read_bytes()


# --- reading ------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    read_error(tmp_path / "pt_1.nii.gz", "no such file or folder")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    read_error(path, "unsupported file type", ".nii.gz")


def test_text_file_named_txt(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n")
    read_error(path, "unsupported file type")


def test_empty_file(tmp_path):
    path = tmp_path / "pt_1.nii.gz"
    path.touch()
    read_error(path, "file is empty")


def test_text_file_named_nii_gz(tmp_path):
    path = tmp_path / "pt_1.nii.gz"
    path.write_text("patient 1: see the report\nline two\n")
    read_error(path, "not a readable image")


def test_bytes_with_gzip_magic_but_no_gzip_stream(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b this is not a gzip stream, nor NIfTI" * 4)
    read_error(path, "truncated or corrupt")


def test_truncated_gzipped_nifti(tmp_path):
    data = gzipped_nifti(tmp_path)
    path = tmp_path / "pt_1.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    read_error(path, "file is truncated or corrupt (gzip stream ended early)")


def test_truncated_uncompressed_nifti(tmp_path):
    data = gzip.decompress(gzipped_nifti(tmp_path))
    path = tmp_path / "pt_1.nii"
    path.write_bytes(data[: len(data) // 2])
    read_error(path, "file is truncated or corrupt", f"of the {len(data)} bytes")


def test_uncompressed_nifti_cut_inside_its_header(tmp_path):
    path = tmp_path / "pt_1.nii"
    path.write_bytes(gzip.decompress(gzipped_nifti(tmp_path))[:200])
    read_error(path, "file is truncated or corrupt")


@pytest.mark.parametrize("extension", [".mha", ".nrrd"])
def test_truncated_single_file_formats(tmp_path, extension):
    path = tmp_path / f"scan{extension}"
    sitk.WriteImage(sitk.GetImageFromArray(image_volume().array), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    read_error(path, "file is truncated or corrupt")


@pytest.mark.parametrize("extension", [".mhd", ".nhdr"])
def test_detached_header_without_its_data_file(tmp_path, extension):
    path = tmp_path / f"scan{extension}"
    sitk.WriteImage(sitk.GetImageFromArray(image_volume().array), str(path))
    for data_file in tmp_path.iterdir():
        if data_file != path:
            data_file.unlink()
    read_error(path, "its data file", "does not exist beside the header")


@pytest.mark.parametrize("extension", [".nii.gz", ".mha", ".nrrd"])
def test_4d_image(tmp_path, extension):
    frames = [sitk.GetImageFromArray(image_volume(seed).array) for seed in range(2)]
    path = tmp_path / f"cine{extension}"
    sitk.WriteImage(sitk.JoinSeries(frames), str(path))
    read_error(path, "image is 4D (11 x 9 x 6 x 2)", "single 3D volume")


@pytest.mark.parametrize("extension", [".nii.gz", ".mha", ".nrrd"])
def test_rgb_image(tmp_path, extension):
    rgb = np.zeros((*SHAPE_ZYX, 3), dtype=np.uint8)
    path = tmp_path / f"photo{extension}"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    read_error(path, "3 values per voxel (vector/RGB)")


def test_vector_field_image(tmp_path):
    field = np.zeros((*SHAPE_ZYX, 3), dtype=np.float32)
    path = tmp_path / "displacement.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(field, isVector=True), str(path))
    read_error(path, "vector/RGB")


@pytest.mark.parametrize("extension", [".nii.gz", ".mha"])
def test_2d_image(tmp_path, extension):
    path = tmp_path / f"slice{extension}"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 11), np.int16)), str(path))
    read_error(path, "image is 2D (11 x 9)", "3D volume is needed")


def test_folder_without_dicom_series(tmp_path):
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    read_error(folder, "no DICOM series found")


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (-1, "negative values (min -1)"),
        (0.5, "non-integer values (e.g. 0.5)"),
        (np.nan, "NaN or infinite"),
        (70000, "ids above 65535 (max 70000)"),
    ],
)
def test_reading_a_bad_label_map(tmp_path, values, problem):
    array = np.zeros(SHAPE_ZYX, dtype=np.float32)
    array[2, 3, 4] = values
    path = tmp_path / "seg.mha"  # not NIfTI: ITK's NIfTI reader turns NaN into 0
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    read_error(path, problem, kind="labels")


def test_error_is_picklable_and_keeps_its_parts(tmp_path):
    import pickle

    error = VolumeIOError(tmp_path / "a.nii", "file is empty")
    assert (error.path, error.problem) == (str(tmp_path / "a.nii"), "file is empty")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
    assert str(VolumeIOError("x.nii: two\nlines")) == "x.nii: two lines"


# --- writing ------------------------------------------------------------------------------


def test_output_exists_without_overwrite(tmp_path):
    path = tmp_path / "pt_1.nii.gz"
    path.write_bytes(b"precious")
    write_error(image_volume(), path, "already exists (pass overwrite=True / --overwrite to replace it)")
    assert path.read_bytes() == b"precious"


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "pt_1.nii.gz"
    path.write_bytes(b"old")
    assert write_volume(image_volume(3), path, overwrite=True) == path
    np.testing.assert_array_equal(read_volume(path).array, image_volume(3).array)
    assert [p.name for p in tmp_path.iterdir()] == ["pt_1.nii.gz"]


def test_detached_header_refuses_to_replace_a_stray_data_file(tmp_path):
    (tmp_path / "scan.zraw").write_bytes(b"someone else's data")
    write_error(image_volume(), tmp_path / "scan.mhd", "its data file scan.zraw already exists")


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.full(SHAPE_ZYX, -2, dtype=np.int16), "negative values (min -2)"),
        (np.full(SHAPE_ZYX, 0.5, dtype=np.float32), "non-integer values (e.g. 0.5)"),
        (np.full(SHAPE_ZYX, 70000, dtype=np.int32), "ids above 65535"),
        (np.full(SHAPE_ZYX, 1 + 1j), "integer ids"),
    ],
)
def test_writing_a_bad_label_map(tmp_path, array, problem):
    write_error(label_volume(array), tmp_path / "seg.nii.gz", problem)


def test_bad_label_map_leaves_an_existing_file_alone(tmp_path):
    path = tmp_path / "seg.nii.gz"
    path.write_bytes(b"earlier labels")
    write_error(label_volume(np.full(SHAPE_ZYX, -1)), path, "negative values", overwrite=True)
    assert path.read_bytes() == b"earlier labels"


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        (Volume(np.zeros((6, 9, 12), np.int16), GEOMETRY), "shape 6x9x11 vs 6x9x12"),
        (Volume(np.zeros(SHAPE_ZYX, np.int16), Geometry((0.7, 0.7, 2.5), GEOMETRY.origin)), "spacing"),
        (Volume(np.zeros(SHAPE_ZYX, np.int16), Geometry(GEOMETRY.spacing, (0, 0, 0))), "origin"),
        (Geometry(GEOMETRY.spacing, GEOMETRY.origin, np.diag([-1.0, -1.0, 1.0]).ravel()), "direction"),
        ((GEOMETRY, (6, 9, 10)), "shape 6x9x11 vs 6x9x10"),
    ],
)
def test_label_geometry_differs_from_reference(tmp_path, reference, problem):
    labels = label_volume(np.ones(SHAPE_ZYX, np.uint8))
    expected = ("label map geometry differs from its image", problem)
    write_error(labels, tmp_path / "seg.nii.gz", *expected, reference=reference)


def test_label_geometry_within_float32_tolerance_is_accepted(tmp_path):
    rounded = Geometry(np.float32(GEOMETRY.spacing), np.float32(GEOMETRY.origin), GEOMETRY.direction)
    reference = Volume(np.zeros(SHAPE_ZYX, np.int16), rounded)
    write_volume(label_volume(np.ones(SHAPE_ZYX, np.uint8)), tmp_path / "seg.nrrd", reference=reference)
    assert (tmp_path / "seg.nrrd").exists()


def test_unsupported_output_extension(tmp_path):
    write_error(image_volume(), tmp_path / "scan.png", "unsupported output type")


@pytest.mark.parametrize("name, lower", [("SCAN.NII.GZ", "SCAN.nii.gz"), ("out.Mha", "out.mha")])
def test_upper_case_output_extension_is_refused_with_the_name_that_works(tmp_path, name, lower):
    # ITK's NIfTI writer refuses such a name, its MetaImage writer does not recognise it
    message = write_error(image_volume(), tmp_path / name, "lower-case", f"name it {lower}")
    assert "Traceback" not in message


def test_missing_output_folder(tmp_path):
    write_error(image_volume(), tmp_path / "missing" / "scan.nii.gz", "output folder", "does not exist")


def test_output_path_is_a_folder(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    write_error(image_volume(), folder, "is a folder")


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"the old scan")

    def write_half_then_fail(image, file_name, *args, **kwargs):
        Path(file_name).write_bytes(b"half a file")
        raise RuntimeError("sitk::ERROR: No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", write_half_then_fail)
    expected = ("could not be written", "No space left on device")
    message = write_error(image_volume(), path, *expected, overwrite=True)
    assert "sitk::ERROR" not in message
    assert path.read_bytes() == b"the old scan"


def test_singular_direction_is_refused_before_writing(tmp_path):
    flat = Geometry(direction=(1, 0, 0, 0, 0, 0, 0, 0, 1))
    write_error(image_volume(geometry=flat), tmp_path / "scan.mha", "direction matrix is singular")
