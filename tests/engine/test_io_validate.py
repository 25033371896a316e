"""check_label_map and check_same_grid, the checks shared by readers, writers and other modules."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.io import VolumeIOError, check_label_map, check_same_grid
from cgs_engine.volume import Geometry, Volume

GEOMETRY = Geometry(spacing=(0.7, 0.7, 5.0), origin=(-12.5, 33.25, 101.0))


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([0, 1, 255], np.int64), np.uint8),
        (np.array([0, 256], np.int32), np.uint16),
        (np.array([0, 65535], np.uint32), np.uint16),
        (np.array([0.0, 3.0, 7.0], np.float32), np.uint8),
        (np.array([0.0, 1000.0], np.float64), np.uint16),
        (np.array([True, False]), np.uint8),
        (np.array([], np.int16), np.uint8),
    ],
)
def test_label_maps_become_uint8_or_uint16(values, dtype):
    checked = check_label_map(values, "seg.nii.gz")
    assert checked.dtype == dtype
    np.testing.assert_array_equal(checked, values.astype(np.int64))


def test_label_map_already_uint8_is_not_copied():
    labels = np.zeros((2, 3, 4), np.uint8)
    assert check_label_map(labels, "seg") is labels


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (np.array([0, -3], np.int8), "negative values (min -3)"),
        (np.array([0.0, 2.25]), "non-integer values (e.g. 2.25)"),
        (np.array([0.0, 4.9999995], dtype=np.float32), "non-integer values (e.g. 4.9999995)"),
        (np.array([0.0, np.inf]), "NaN or infinite"),
        (np.array([0, 65536], np.int64), "ids above 65535 (max 65536)"),
        (np.array(["a"]), "integer ids"),
    ],
)
def test_bad_label_maps(values, problem):
    with pytest.raises(VolumeIOError) as raised:
        check_label_map(values, "case_3/seg.nii.gz")
    message = str(raised.value)
    assert message.startswith("case_3/seg.nii.gz: ") and problem in message


def test_same_grid_passes_within_float32_rounding():
    image = Volume(np.zeros((4, 5, 6), np.int16), GEOMETRY)
    rounded = Geometry(np.float32(GEOMETRY.spacing), np.float32(GEOMETRY.origin), GEOMETRY.direction)
    check_same_grid(Volume(np.zeros((4, 5, 6), np.uint8), rounded, kind="labels"), image, "seg")


def test_same_grid_names_every_difference():
    image = Volume(np.zeros((4, 5, 6), np.int16), GEOMETRY)
    labels = Volume(np.zeros((4, 5, 7), np.uint8), Geometry((1.0, 1.0, 5.0), (0, 0, 0)), kind="labels")
    with pytest.raises(VolumeIOError) as raised:
        check_same_grid(labels, image, "seg.nii.gz")
    message = str(raised.value)
    assert message.startswith("seg.nii.gz: label map geometry differs from its image (")
    assert "shape 4x5x7 vs 4x5x6" in message
    assert "spacing (1, 1, 5) vs (0.7, 0.7, 5)" in message
    assert "origin (0, 0, 0) vs (-12.5, 33.25, 101)" in message
    assert "direction" not in message


def test_a_label_map_given_as_an_image_is_recognised():
    from cgs_engine.io import label_map_problem

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, (6, 16, 16)).astype(np.uint8)
    assert "only the whole numbers (0, 1, 2, 3, 4, 5, 6, 7)" in label_map_problem(labels)
    assert label_map_problem(labels.astype(np.float32)) is not None  # saved as float NIfTI
    assert label_map_problem(labels > 3) is not None  # a mask
    assert label_map_problem(labels.astype(np.uint16) * 50) is None  # values above 255: no label map
    ct = rng.normal(0, 300, (6, 16, 16)).astype(np.int16)  # HU: negative values
    assert label_map_problem(ct) is None and label_map_problem(ct.astype(np.float32)) is None
    mr = rng.integers(0, 256, (6, 16, 16)).astype(np.uint8)  # an 8-bit MR: hundreds of values
    assert label_map_problem(mr) is None
    assert label_map_problem(rng.random((6, 16, 16)).astype(np.float32)) is None  # not whole numbers
    assert label_map_problem(np.zeros((0, 4, 4), np.uint8)) is None
    assert label_map_problem(np.zeros((2, 4, 4), np.uint8)) is None  # blank, not a label map
