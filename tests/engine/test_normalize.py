"""Intensity normalisation: modes, serialisation and the CT/MR guess."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cgs_engine.normalize import Normalization, guess_normalization

SHARED_DATA = Path(
    os.environ.get("CGS_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)


def test_default_is_soft_tissue_ct_window():
    normalization = Normalization()
    assert normalization.mode == "ct-window"
    assert (normalization.lower, normalization.upper) == (-160.0, 240.0)


def test_ct_window_clips_and_scales_to_unit_range():
    hu = np.array([[[-1000, -160, 40, 240, 3000]]], dtype=np.int16)
    result = Normalization().apply(hu)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert hu.dtype == np.int16 and hu.ravel()[0] == -1000  # input untouched


def test_ct_window_from_bounds():
    bone = Normalization.ct_window(-200, 1300)
    assert (bone.window_center, bone.window_width) == (550.0, 1500.0)
    np.testing.assert_allclose(bone.apply(np.array([-200.0, 550.0, 1300.0])), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError):
        Normalization.ct_window(100, 100)


def test_mr_percentile_ignores_outliers_and_clips():
    rng = np.random.default_rng(0)
    values = rng.uniform(100, 200, size=(4, 50, 50)).astype(np.float32)
    values[0, 0, 0] = 50_000  # a hot voxel must not squash the tissue range
    result = Normalization(mode="mr-percentile").apply(values)
    assert result.dtype == np.float32
    assert result.min() == 0.0 and result.max() == 1.0
    assert np.median(result) == pytest.approx(0.5, abs=0.05)
    assert result[0, 0, 0] == 1.0


def test_minmax_and_identity():
    values = np.array([[[2.0, 4.0, 6.0]]])
    np.testing.assert_allclose(Normalization(mode="minmax").apply(values).ravel(), [0.0, 0.5, 1.0])
    identity = Normalization(mode="identity").apply(values)
    assert identity.dtype == np.float32
    np.testing.assert_array_equal(identity, values.astype(np.float32))


@pytest.mark.parametrize("mode", ["minmax", "mr-percentile"])
def test_constant_volume_becomes_zeros(mode):
    result = Normalization(mode=mode).apply(np.full((2, 3, 3), 7.0))
    np.testing.assert_array_equal(result, np.zeros((2, 3, 3), dtype=np.float32))


def test_non_finite_values_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        Normalization(mode="minmax").apply(np.array([1.0, np.nan]))


@pytest.mark.parametrize("mode", ["ct-window", "mr-percentile", "minmax", "identity"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_slab_by_slab_equals_the_whole_volume(mode, dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 2000, size=(9, 5, 4)).astype(dtype)
    norm = Normalization(mode=mode)
    whole = norm.apply(array)
    normalize = norm.slab_normalizer(array)  # bounds from the whole volume, not from each slab
    slabs = np.concatenate([normalize(array[i : i + 4]) for i in range(0, 9, 4)])
    assert slabs.dtype == np.float32 and array.dtype == dtype  # the input is not touched
    np.testing.assert_array_equal(slabs, whole)


def test_slab_normalizer_rejects_non_finite_volumes_up_front():
    with pytest.raises(ValueError, match="NaN"):
        Normalization(mode="ct-window").slab_normalizer(np.array([[[1.0, np.inf]]]))
    with pytest.raises(ValueError, match="infinite"):  # finite in float64, inf in float32
        Normalization(mode="minmax").apply(np.array([[[1.0, 1e300]]]))


def test_serialisation_round_trip():
    for normalization in (
        Normalization(),
        Normalization.ct_window(-500, 1500),
        Normalization(mode="mr-percentile", p_low=1, p_high=99),
        Normalization(mode="identity"),
    ):
        assert Normalization.from_dict(normalization.to_dict()) == normalization
        assert Normalization.from_json(normalization.to_json()) == normalization
    assert Normalization.from_dict({"mode": "minmax", "added_later": 1}) == Normalization(mode="minmax")


@pytest.mark.parametrize(
    "kwargs",
    [{"mode": "zscore"}, {"window_width": 0}, {"p_low": 50, "p_high": 10}, {"p_high": 101}],
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Normalization(**kwargs)


def test_from_dict_needs_a_mode():
    with pytest.raises(ValueError, match="mode"):
        Normalization.from_dict({"window_center": 40})


def test_guess_ct_like_versus_mr_like():
    rng = np.random.default_rng(1)
    ct = rng.integers(-100, 300, size=(8, 64, 64)).astype(np.int16)
    ct[:, :20, :] = -1000  # air around the patient
    assert guess_normalization(ct).mode == "ct-window"
    mr = rng.uniform(0, 900, size=(8, 64, 64)).astype(np.float32)
    assert guess_normalization(mr).mode == "mr-percentile"
    one_dark_voxel = mr.copy()
    one_dark_voxel[0, 0, 0] = -1000  # an outlier alone is not CT
    assert guess_normalization(one_dark_voxel).mode == "mr-percentile"


@pytest.mark.realdata
def test_guess_on_real_ct_and_mr():
    sitk = pytest.importorskip("SimpleITK")
    ct_path = SHARED_DATA / "openkbp" / "images" / "pt_168.nii.gz"
    mr_path = SHARED_DATA / "totalsegmentator_example" / "example_mr_sm.nii.gz"
    if not (ct_path.exists() and mr_path.exists()):
        pytest.skip("real data not available")
    assert guess_normalization(sitk.GetArrayFromImage(sitk.ReadImage(str(ct_path)))).mode == "ct-window"
    assert guess_normalization(sitk.GetArrayFromImage(sitk.ReadImage(str(mr_path)))).mode == "mr-percentile"
