"""Round trips through read_volume / write_volume for every format and orientation, and DICOM series."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.io import SUPPORTED_EXTENSIONS, VolumeIOError, is_supported_path, read_volume, write_volume
from cgs_engine.volume import Geometry, Volume

SHAPE_ZYX = (6, 9, 11)  # all different, so a swapped axis cannot go unnoticed
NIFTI = (".nii", ".nii.gz")


def rotation(axis, degrees) -> np.ndarray:
    """Proper rotation matrix about ``axis`` (Rodrigues' formula)."""
    x, y, z = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


OBLIQUE = rotation((1, 2, 3), 30)
ANISOTROPIC = (0.7, 0.7, 5.0)
ORIGIN = (-12.5, 33.25, 101.0)

# Directions in ITK's LPS terms: identity is LPS-aligned, diag(-1, -1, 1) is RAS-aligned.
GEOMETRIES = {
    "identity": Geometry(),
    "lps": Geometry(ANISOTROPIC, ORIGIN, np.eye(3).ravel()),
    "ras": Geometry(ANISOTROPIC, ORIGIN, np.diag([-1.0, -1.0, 1.0]).ravel()),
    "oblique": Geometry(ANISOTROPIC, ORIGIN, OBLIQUE.ravel()),
    "reflected": Geometry(ANISOTROPIC, ORIGIN, (OBLIQUE @ np.diag([1.0, 1.0, -1.0])).ravel()),
    # A scanner's 0.01 deg off axis: NIfTI's qform (float32 quaternion next to a half-turn) cannot
    # hold the tilt its sform keeps; the two must still be read as one geometry, not refused.
    "nearly aligned": Geometry(ANISOTROPIC, ORIGIN, rotation((0.3, 0.2, 1.0), 0.01).ravel()),
}


def ct_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1024, 2000, size=SHAPE_ZYX).astype(np.int16)
    array[0, 0, 0] = -32768  # the int16 extremes must survive too
    array[-1, -1, -1] = 32767
    return array


def sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def assert_geometry_equal(actual: Geometry, expected: Geometry, extension: str) -> None:
    if extension in NIFTI:  # NIfTI headers hold float32
        assert actual.is_close(expected), f"{actual} != {expected}"
    else:
        np.testing.assert_allclose(actual.spacing, expected.spacing, rtol=1e-12)
        np.testing.assert_allclose(actual.origin, expected.origin, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-12)


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
@pytest.mark.parametrize("case", sorted(GEOMETRIES))
def test_image_round_trip_keeps_array_and_geometry(tmp_path, extension, case):
    volume = Volume(array=ct_like(), geometry=GEOMETRIES[case])
    path = tmp_path / f"scan{extension}"

    written = write_volume(volume, path)
    back = read_volume(written)

    assert written == path
    assert back.kind == "image" and back.source == str(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    assert_geometry_equal(back.geometry, volume.geometry, extension)


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
def test_written_file_matches_simpleitk_view_of_the_geometry(tmp_path, extension):
    geometry = GEOMETRIES["oblique"]
    path = write_volume(Volume(array=ct_like(), geometry=geometry), tmp_path / f"scan{extension}")

    image = sitk.ReadImage(str(path))

    affine = geometry.index_to_world()
    for index in [(0, 0, 0), (10, 8, 5), (3, 1, 4)]:
        expected = (affine @ np.append(index, 1.0))[:3]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), expected, atol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), ct_like())


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
def test_float_map_round_trip(tmp_path, extension):
    probabilities = np.random.default_rng(1).random(SHAPE_ZYX).astype(np.float32)
    volume = Volume(array=probabilities, geometry=GEOMETRIES["ras"], kind="map")

    back = read_volume(write_volume(volume, tmp_path / f"p{extension}"), kind="map")

    assert back.array.dtype == np.float32 and back.kind == "map"
    np.testing.assert_array_equal(back.array, probabilities)


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
@pytest.mark.parametrize(
    ("top_id", "dtype"),
    [(7, np.uint8), (255, np.uint8), (300, np.uint16), (65535, np.uint16)],
)
def test_labels_round_trip_in_smallest_unsigned_type(tmp_path, extension, top_id, dtype):
    labels = np.random.default_rng(2).integers(0, top_id + 1, size=SHAPE_ZYX)  # int64 in memory
    labels[0, 0, 0] = top_id
    volume = Volume(array=labels, geometry=GEOMETRIES["oblique"], kind="labels")

    path = write_volume(volume, tmp_path / f"seg{extension}")
    back = read_volume(path, kind="labels")

    assert sitk.GetArrayViewFromImage(sitk.ReadImage(str(path))).dtype == dtype  # as stored on disk
    assert back.array.dtype == dtype and back.kind == "labels"
    np.testing.assert_array_equal(back.array, labels)
    assert_geometry_equal(back.geometry, volume.geometry, extension)


def test_labels_stored_as_integral_floats_read_as_uint8(tmp_path):
    labels = np.random.default_rng(3).integers(0, 5, size=SHAPE_ZYX).astype(np.float32)
    path = tmp_path / "float_labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(path))

    back = read_volume(path, kind="labels")

    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)


def test_write_accepts_boolean_mask_and_half_floats(tmp_path):
    mask = np.zeros(SHAPE_ZYX, dtype=bool)
    mask[2:4, 3:6, 4:8] = True
    assert read_volume(write_volume(Volume(mask, kind="map"), tmp_path / "m.nrrd")).array.dtype == np.uint8
    half = np.full(SHAPE_ZYX, 0.25, dtype=np.float16)
    assert read_volume(write_volume(Volume(half, kind="map"), tmp_path / "h.mha")).array.dtype == np.float32


def test_detached_header_formats_write_two_files(tmp_path):
    volume = Volume(array=ct_like(), geometry=GEOMETRIES["lps"])
    write_volume(volume, tmp_path / "a.mhd")
    write_volume(volume, tmp_path / "b.nhdr")
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["a.mhd", "a.zraw", "b.nhdr", "b.raw.gz"]  # no staging folders left behind
    assert "ElementDataFile = a.zraw" in (tmp_path / "a.mhd").read_text()


@pytest.mark.parametrize("name", ["ü.mhd", "скан.nhdr"])
def test_detached_headers_with_non_ascii_names_write_and_read(tmp_path, name):
    # the header names its data file in UTF-8; read as latin-1 that was "Ã¼.zraw", never found
    volume = Volume(array=ct_like(), geometry=GEOMETRIES["lps"])
    back = read_volume(write_volume(volume, tmp_path / name))
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry == volume.geometry


def test_overwrite_replaces_both_files_of_a_detached_header(tmp_path):
    path = tmp_path / "a.mhd"
    write_volume(Volume(array=ct_like(0)), path)
    write_volume(Volume(array=ct_like(5), geometry=GEOMETRIES["ras"]), path, overwrite=True)
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, ct_like(5))
    assert back.geometry == GEOMETRIES["ras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mhd", "a.zraw"]


def test_3d_image_with_a_singleton_axis_is_fine(tmp_path):
    volume = Volume(array=np.arange(11 * 9, dtype=np.int16).reshape(1, 9, 11), geometry=GEOMETRIES["lps"])
    back = read_volume(write_volume(volume, tmp_path / "one_slice.nii.gz"))
    assert back.shape == (1, 9, 11)
    np.testing.assert_array_equal(back.array, volume.array)


@pytest.mark.parametrize("extension", [".mha", ".nrrd"])  # ITK's NIfTI reader drops the axis itself
def test_4d_image_with_one_time_point_reads_as_3d(tmp_path, extension):
    image = sitk.JoinSeries([sitk_image(ct_like(), GEOMETRIES["oblique"])])
    path = tmp_path / f"single_frame{extension}"
    sitk.WriteImage(image, str(path))
    assert sitk.ReadImage(str(path)).GetDimension() == 4

    back = read_volume(path)

    assert back.shape == SHAPE_ZYX
    np.testing.assert_array_equal(back.array, ct_like())
    assert back.geometry.is_close(GEOMETRIES["oblique"])


def test_write_returns_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = write_volume(Volume(array=ct_like()), "relative.nii.gz")
    assert str(written) == "relative.nii.gz"
    assert read_volume("relative.nii.gz").source == "relative.nii.gz"


# --- DICOM series -------------------------------------------------------------------------


def write_dicom_series(image: sitk.Image, folder, series_uid: str, first_file: int = 0) -> None:
    """One int16 CT file per slice, with the tags that define the geometry."""
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = np.reshape(image.GetDirection(), (3, 3))
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(image.GetDepth()):
        slice_2d = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0052": f"{series_uid}.0",  # frame of reference
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.10f}" for p in position),
            "0020|0037": orientation,
            "0028|0030": f"{image.GetSpacing()[1]:g}\\{image.GetSpacing()[0]:g}",
            "0018|0050": f"{image.GetSpacing()[2]:g}",
        }
        for tag, value in tags.items():
            slice_2d.SetMetaData(tag, value)
        # Shuffled file names: the reader must sort slices by position, not by name.
        writer.SetFileName(str(folder / f"IM{(first_file + k * 7) % 97:04d}.dcm"))
        writer.Execute(slice_2d)


@pytest.mark.parametrize("case", ["lps", "ras", "oblique"])
def test_dicom_series_folder_reads_array_and_geometry(tmp_path, case):
    geometry = GEOMETRIES[case]
    folder = tmp_path / "CT"
    write_dicom_series(sitk_image(ct_like(), geometry), folder, "1.2.826.0.1.3680043.2.1125.2")

    volume = read_volume(folder)

    assert volume.source == str(folder)
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, ct_like())
    assert volume.geometry.is_close(geometry), f"{volume.geometry} != {geometry}"


def test_dicom_folder_with_two_series_is_read_only_with_one_picked(tmp_path):
    folder = tmp_path / "mixed"
    small, large = "1.2.826.0.1.3680043.2.1125.3", "1.2.826.0.1.3680043.2.1125.4"
    write_dicom_series(sitk_image(ct_like(7)[:3], GEOMETRIES["lps"]), folder, small, 50)
    write_dicom_series(sitk_image(ct_like(), GEOMETRIES["lps"]), folder, large, 1)

    with pytest.raises(VolumeIOError, match=f"holds 2 image series: {large} .6 CT images.*--series UID"):
        read_volume(folder)
    np.testing.assert_array_equal(read_volume(folder, series_uid=large).array, ct_like())
    np.testing.assert_array_equal(read_volume(folder, series_uid=small).array, ct_like(7)[:3])
    with pytest.raises(VolumeIOError, match="holds no image series 1.2.3; it holds"):
        read_volume(folder, series_uid="1.2.3")


def test_is_supported_path(tmp_path):
    dicom = tmp_path / "dicom"
    write_dicom_series(sitk_image(ct_like(), GEOMETRIES["lps"]), dicom, "1.2.826.0.1.3680043.2.1125.5")
    no_extension = tmp_path / "no_extension"  # DICOM files named like IM000001 are found by their preamble
    no_extension.mkdir()
    for index, path in enumerate(sorted(dicom.iterdir())):
        path.rename(no_extension / f"IM{index:06d}")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("x")

    assert is_supported_path(no_extension)
    assert read_volume(no_extension).shape == SHAPE_ZYX
    assert not is_supported_path(empty)
    assert not is_supported_path(tmp_path / "notes.txt")
    for extension in SUPPORTED_EXTENSIONS:
        assert is_supported_path(tmp_path / f"scan{extension}")
        assert is_supported_path(str(tmp_path / f"scan{extension}"))
    for name in ("scan.png", "scan.nii.zip", "archive.tar.gz", ".nii"):
        assert not is_supported_path(tmp_path / name)
    assert is_supported_path(tmp_path / "SCAN.NII.GZ") and is_supported_path(tmp_path / "Scan.Mha")


@pytest.mark.parametrize("extension", SUPPORTED_EXTENSIONS)
def test_upper_case_names_read_like_lower_case_ones(tmp_path, extension):
    """A folder listing offers SCAN.NII.GZ as a scan, so it must read (ITK's own guess of the
    reader finds none for an upper-case .MHA / .MHD)."""
    volume = Volume(array=ct_like(), geometry=GEOMETRIES[sorted(GEOMETRIES)[-1]])
    written = write_volume(volume, tmp_path / f"scan{extension}")
    upper = written.rename(
        tmp_path / f"SCAN{extension.upper()}"
    )  # a detached header keeps its data file's name

    back = read_volume(upper)

    np.testing.assert_array_equal(back.array, volume.array)
    assert_geometry_equal(back.geometry, volume.geometry, extension)


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_a_nii_gz_is_read_and_not_the_nii_beside_it(tmp_path, kind):
    """ITK opened X.nii when asked for X.nii.gz and both were in one folder (a gunzipped older copy)."""
    from cgs_engine.io import check_volume_file

    named = Volume(
        np.full((4, 5, 6), 3, np.uint8), Geometry((1.0, 1.0, 2.5), (0.0, 0.0, 0.0), np.eye(3).ravel())
    )
    older = Volume(
        np.full((3, 7, 8), 9, np.uint8), Geometry((2.0, 2.0, 2.0), (5.0, 5.0, 5.0), np.eye(3).ravel())
    )
    write_volume(named, tmp_path / "map.nii.gz")
    write_volume(older, tmp_path / "map.nii")
    check_volume_file(tmp_path / "map.nii.gz")  # the size check reads the named header too
    read = read_volume(tmp_path / "map.nii.gz", kind=kind)
    assert read.array.shape == (4, 5, 6) and (read.array == 3).all()
    assert read.geometry.spacing == pytest.approx((1.0, 1.0, 2.5))
    assert (read_volume(tmp_path / "map.nii", kind=kind).array == 9).all()  # and the other as named
    write_volume(named, tmp_path / "map.nii.gz", overwrite=True)  # the written-file check reads it back


def test_napari_open_of_a_folder_with_two_series_says_what_works_there(tmp_path):
    """napari's File > Open has no --series: the advice must be one the user can follow there."""
    from napari_cgs._reader import read_image_layers

    folder = tmp_path / "mixed"
    write_dicom_series(
        sitk_image(ct_like(7)[:3], GEOMETRIES["lps"]), folder, "1.2.826.0.1.3680043.2.1125.3", 50
    )
    write_dicom_series(sitk_image(ct_like(), GEOMETRIES["lps"]), folder, "1.2.826.0.1.3680043.2.1125.4", 1)
    with pytest.raises(VolumeIOError, match="holds 2 image series") as error:
        read_image_layers(str(folder))
    assert "folder of its own" in str(error.value) and "--series" not in str(error.value)
