"""The npe2 reader: which paths it claims and the Image layer data it returns."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.io import VolumeIOError
from napari_cgs import GEOMETRY_KEY, get_reader, image_contrast_limits
from napari_cgs._layers import CT_SOFT_TISSUE_WINDOW, layer_name_for, layers_support_units


def read_single(path):
    reader = get_reader(str(path))
    assert callable(reader), f"reader did not claim {path}"
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


@pytest.mark.parametrize("name", ["notes.txt", "scan.png", "archive.tar.gz"])
def test_get_reader_declines_other_files(tmp_path, name):
    path = tmp_path / name
    path.write_text("not a volume")
    assert get_reader(str(path)) is None


def test_get_reader_declines_a_list_with_one_foreign_file(tmp_path, synth):
    image_path, _ = synth.write_case(tmp_path, "identity")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert get_reader([str(image_path), str(other)]) is None


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"])
def test_reader_returns_image_layer_with_geometry(tmp_path, suffix, synth):
    image = synth.sitk_image(synth.ct_like_array(), "oblique")
    path = tmp_path / f"patient_01{suffix}"
    sitk.WriteImage(image, str(path))
    stored = sitk.ReadImage(str(path))

    data, kwargs, layer_type = read_single(path)

    assert layer_type == "image"
    assert kwargs["name"] == "patient_01"
    assert data.shape == synth.SHAPE_ZYX
    np.testing.assert_array_equal(data, sitk.GetArrayFromImage(stored))
    np.testing.assert_allclose(kwargs["scale"], stored.GetSpacing()[::-1])
    np.testing.assert_allclose(kwargs["translate"], stored.GetOrigin()[::-1])
    reverse = np.eye(3)[::-1]
    direction_zyx = reverse @ np.reshape(stored.GetDirection(), (3, 3)) @ reverse
    np.testing.assert_allclose(kwargs["rotate"], direction_zyx, atol=1e-12)
    assert kwargs["metadata"][GEOMETRY_KEY]["spacing"] == list(stored.GetSpacing())
    assert kwargs["metadata"]["cgs_source"] == str(path)
    assert kwargs["colormap"] == "gray"
    assert tuple(kwargs["contrast_limits"]) == CT_SOFT_TISSUE_WINDOW
    if layers_support_units():
        assert kwargs["units"] == ("mm", "mm", "mm")


def test_reader_uses_percentiles_without_hounsfield_air(tmp_path, synth):
    rng = np.random.default_rng(3)
    array = rng.gamma(2.0, 150.0, size=synth.SHAPE_ZYX).astype(np.float32)
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(synth.sitk_image(array, "lps_anisotropic"), str(path))

    _, kwargs, _ = read_single(path)

    lo, hi = kwargs["contrast_limits"]
    assert lo == pytest.approx(np.percentile(array, 0.5), rel=0.05)
    assert hi == pytest.approx(np.percentile(array, 99.5), rel=0.05)


def test_reader_reads_a_dicom_series_directory(tmp_path, synth):
    series = tmp_path / "CT_series"
    series.mkdir()
    spacing, origin, _ = synth.CASES["lps_anisotropic"]
    image = synth.sitk_image(synth.ct_like_array(), "lps_anisotropic")
    _write_dicom_series(image, series)

    data, kwargs, _ = read_single(series)

    assert kwargs["name"] == "CT_series"
    assert data.shape == synth.SHAPE_ZYX
    np.testing.assert_allclose(kwargs["scale"], spacing[::-1], rtol=1e-5)
    np.testing.assert_allclose(kwargs["translate"], origin[::-1], rtol=1e-5, atol=1e-3)


def _write_dicom_series(image: sitk.Image, folder) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study, series = "1.2.826.0.1.3680043.2.1125.1", "1.2.826.0.1.3680043.2.1125.2"
    for k in range(image.GetDepth()):
        slice_2d = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {
            "0008|0060": "CT",
            "0020|000d": study,
            "0020|000e": series,
            "0020|0052": f"{series}.0",  # frame of reference
            "0008|0018": f"{series}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": f"{image.GetSpacing()[2]:g}",
            "0028|1052": "0",
            "0028|1053": "1",
        }.items():
            slice_2d.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice_{k:03d}.dcm"))
        writer.Execute(slice_2d)


def test_reader_error_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b this is not a gzip stream, nor NIfTI" * 4)
    reader = get_reader(str(path))
    assert reader is not None
    with pytest.raises(VolumeIOError) as raised:
        reader(str(path))
    message = str(raised.value)
    assert "broken.nii.gz" in message
    assert "\n" not in message


def test_layer_name_strips_double_extensions(tmp_path):
    assert layer_name_for("/data/case_007.nii.gz") == "case_007"
    assert layer_name_for("/data/case_007.nii") == "case_007"
    assert layer_name_for("/data/ct.v2.mha") == "ct.v2"
    assert layer_name_for(tmp_path) == tmp_path.name


def test_contrast_limits_choice(synth):
    hounsfield = synth.ct_like_array()
    assert image_contrast_limits(hounsfield) == CT_SOFT_TISSUE_WINDOW
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    lo, hi = image_contrast_limits(ramp)
    assert lo == pytest.approx(5.0, abs=0.1) and hi == pytest.approx(994.0, abs=0.1)
    assert image_contrast_limits(np.full((4, 4, 4), 7.0)) == (7.0, 8.0)
    with_nan = ramp.copy()
    with_nan[0] = np.nan
    assert np.isfinite(image_contrast_limits(with_nan)).all()


def test_contrast_limits_subsample_large_volumes():
    big = np.zeros((200, 256, 256), dtype=np.int16)  # 13 M voxels
    big[:, :, :100] = -1000
    assert image_contrast_limits(big) == CT_SOFT_TISSUE_WINDOW


@pytest.mark.realdata
def test_real_ct_gets_soft_tissue_window(synth):
    data, kwargs, _ = read_single(synth.shared_file("totalsegmentator_example", "example_ct_sm.nii.gz"))
    assert kwargs["name"] == "example_ct_sm"
    assert tuple(kwargs["contrast_limits"]) == CT_SOFT_TISSUE_WINDOW
    np.testing.assert_allclose(kwargs["scale"], (3.0, 3.0, 3.0), rtol=1e-5)


@pytest.mark.realdata
def test_real_mr_gets_percentile_limits(synth):
    data, kwargs, _ = read_single(synth.shared_file("totalsegmentator_example", "example_mr_sm.nii.gz"))
    lo, hi = kwargs["contrast_limits"]
    assert (lo, hi) != CT_SOFT_TISSUE_WINDOW
    assert data.min() <= lo < hi <= data.max()


def test_volume_kinds_become_the_right_layers():
    from cgs_engine.volume import Geometry, Volume
    from napari_cgs import volume_to_layer_data

    geometry = Geometry(spacing=(0.7, 0.7, 5.0), origin=(1.0, 2.0, 3.0))
    labels = Volume(np.zeros((2, 3, 4), np.uint8), geometry, kind="labels", source="/d/seg.nii.gz")
    probability = Volume(np.full((2, 3, 4), 0.25, np.float32), geometry, kind="map")

    _, label_kwargs, label_type = volume_to_layer_data(labels)
    _, map_kwargs, map_type = volume_to_layer_data(probability, name="liver p", colormap="magma")

    assert (label_type, label_kwargs["name"]) == ("labels", "seg")
    assert "colormap" not in label_kwargs
    assert label_kwargs["metadata"][GEOMETRY_KEY] == geometry.to_dict()
    assert (map_type, map_kwargs["name"], map_kwargs["colormap"]) == ("image", "liver p", "magma")
    assert map_kwargs["contrast_limits"] == (0.0, 1.0)
    np.testing.assert_allclose(map_kwargs["scale"], (5.0, 0.7, 0.7))


def test_package_exposes_a_version():
    import napari_cgs

    assert isinstance(napari_cgs.__version__, str) and napari_cgs.__version__
