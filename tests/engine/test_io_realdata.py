"""The real example volumes in ../shared/data (skipped when the folder or a file is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.io import VolumeIOError, read_volume, write_volume

pytestmark = pytest.mark.realdata

LPS = np.eye(3)
RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def real_file(shared_data):
    def locate(*parts: str):
        path = shared_data.joinpath(*parts)
        if not path.is_file():
            pytest.skip(f"real data not available: {path}")
        return path

    return locate


@pytest.mark.parametrize(
    ("name", "shape_zyx", "direction"),
    [("example_ct_sm.nii.gz", (30, 101, 122), RAS), ("example_mr_sm.nii.gz", (20, 91, 117), LPS)],
)
def test_totalsegmentator_examples(real_file, name, shape_zyx, direction):
    volume = read_volume(real_file("totalsegmentator_example", name))

    assert volume.shape == shape_zyx
    assert volume.array.dtype == np.int16
    np.testing.assert_allclose(volume.geometry.spacing, (3.0, 3.0, 3.0), rtol=1e-5)
    np.testing.assert_allclose(volume.geometry.direction_matrix, direction, atol=1e-6)


def test_openkbp_image_and_labels_share_a_grid(real_file):
    image = read_volume(real_file("openkbp", "images", "pt_168.nii.gz"))
    labels = read_volume(real_file("openkbp", "labels", "pt_168.nii.gz"), kind="labels")

    assert image.shape == labels.shape == (128, 128, 128)
    np.testing.assert_allclose(image.geometry.spacing, (5.078, 5.078, 2.5), rtol=1e-4)
    np.testing.assert_allclose(image.geometry.origin, (0.0, 0.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(image.geometry.direction_matrix, np.eye(3), atol=1e-6)
    assert labels.array.dtype == np.uint8 and labels.kind == "labels"
    np.testing.assert_array_equal(np.unique(labels.array), np.arange(8))
    assert labels.geometry.is_close(image.geometry)


def test_real_ct_converts_to_mha_and_back(real_file, tmp_path):
    ct = read_volume(real_file("totalsegmentator_example", "example_ct_sm.nii.gz"))
    back = read_volume(write_volume(ct, tmp_path / "ct.mha"))
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.geometry == ct.geometry  # MetaImage keeps the float64 values NIfTI gave us


def test_first_half_of_a_real_gzip_nifti_is_truncated(real_file, tmp_path):
    data = real_file("openkbp", "images", "pt_168.nii.gz").read_bytes()
    path = tmp_path / "pt_168.nii.gz"
    path.write_bytes(data[: len(data) // 2])

    with pytest.raises(VolumeIOError) as raised:
        read_volume(path)

    assert str(raised.value) == f"{path}: file is truncated or corrupt (gzip stream ended early)"
