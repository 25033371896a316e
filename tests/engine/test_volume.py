"""Geometry and Volume: validation, serialisation and the voxel-to-world conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.volume import Geometry, Volume


def rotation(axis, degrees) -> np.ndarray:
    """Proper rotation matrix about ``axis`` (Rodrigues' formula)."""
    x, y, z = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


OBLIQUE = rotation((1, 2, 3), 30)
OBLIQUE_GEOMETRY = Geometry(spacing=(0.7, 0.8, 5.0), origin=(-12.5, 33.25, 101.0), direction=OBLIQUE.ravel())


def test_geometry_defaults_are_identity():
    geometry = Geometry()
    assert geometry.spacing == (1.0, 1.0, 1.0)
    assert geometry.origin == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(geometry.direction_matrix, np.eye(3))


def test_geometry_normalises_to_float_tuples():
    geometry = Geometry(spacing=np.array([1, 2, 3]), origin=[0, 0, 1], direction=np.eye(3))
    assert geometry.spacing == (1.0, 2.0, 3.0) and isinstance(geometry.spacing[0], float)
    assert len(geometry.direction) == 9


@pytest.mark.parametrize(
    "arguments",
    [
        {"spacing": (1.0, 1.0)},
        {"origin": (0.0, 0.0, 0.0, 0.0)},
        {"direction": (1.0, 0.0, 0.0, 1.0)},
        {"spacing": (1.0, 0.0, 1.0)},
        {"spacing": (1.0, -2.0, 1.0)},
        {"spacing": (1.0, float("nan"), 1.0)},
        {"origin": (0.0, float("inf"), 0.0)},
        {"direction": (1.0, 0.0, 0.0, 0.0, float("nan"), 0.0, 0.0, 0.0, 1.0)},
    ],
)
def test_geometry_rejects_invalid_values(arguments):
    with pytest.raises(ValueError):
        Geometry(**arguments)


def test_geometry_dict_round_trip_through_json():
    data = json.loads(json.dumps(OBLIQUE_GEOMETRY.to_dict()))
    assert Geometry.from_dict(data) == OBLIQUE_GEOMETRY


def test_zyx_transform_reverses_axes():
    scale, translate, linear = OBLIQUE_GEOMETRY.zyx_transform()
    np.testing.assert_array_equal(scale, (5.0, 0.8, 0.7))
    np.testing.assert_array_equal(translate, (101.0, 33.25, -12.5))
    np.testing.assert_allclose(linear[::-1, ::-1], OBLIQUE)


def test_from_zyx_transform_inverts_zyx_transform():
    back = Geometry.from_zyx_transform(*OBLIQUE_GEOMETRY.zyx_transform())
    assert back.is_close(OBLIQUE_GEOMETRY, rtol=1e-12, atol=1e-12)


def test_zyx_transform_maps_zyx_indices_like_index_to_world():
    scale, translate, linear = OBLIQUE_GEOMETRY.zyx_transform()
    index_xyz = np.array([3.0, 5.0, 2.0])
    world_zyx = linear @ (scale * index_xyz[::-1]) + translate
    world_xyz = OBLIQUE_GEOMETRY.index_to_world() @ np.append(index_xyz, 1.0)
    np.testing.assert_allclose(world_zyx[::-1], world_xyz[:3])


def test_index_to_world_matches_simpleitk():
    image = sitk.Image(11, 9, 6, sitk.sitkInt16)
    image.SetSpacing(OBLIQUE_GEOMETRY.spacing)
    image.SetOrigin(OBLIQUE_GEOMETRY.origin)
    image.SetDirection(OBLIQUE_GEOMETRY.direction)
    affine = OBLIQUE_GEOMETRY.index_to_world()
    for index in [(0, 0, 0), (10, 0, 0), (0, 8, 0), (0, 0, 5), (3, 7, 2)]:
        expected = image.TransformIndexToPhysicalPoint(index)
        np.testing.assert_allclose((affine @ np.append(index, 1.0))[:3], expected, atol=1e-9)


def test_is_close_tolerates_float32_rounding_only():
    rounded = Geometry(
        spacing=np.float32(OBLIQUE_GEOMETRY.spacing),
        origin=np.float32(OBLIQUE_GEOMETRY.origin),
        direction=np.float32(OBLIQUE_GEOMETRY.direction),
    )
    assert rounded.is_close(OBLIQUE_GEOMETRY)
    shifted = Geometry(OBLIQUE_GEOMETRY.spacing, (-12.5, 33.25, 101.1), OBLIQUE_GEOMETRY.direction)
    assert not shifted.is_close(OBLIQUE_GEOMETRY)
    # far from the scanner's centre: float32 rounding passes, a whole voxel (1 mm) does not
    far = Geometry((1.0, 1.0, 1.0), (2e5, -3e5, 1e5))
    assert Geometry((1.0, 1.0, 1.0), tuple(float(v) for v in np.float32(far.origin))).is_close(far)
    assert not Geometry((1.0, 1.0, 1.0), (2e5 + 1.0, -3e5, 1e5)).is_close(far)
    # and never by as much as a voxel, however far: 0.25 mm voxels at 3e5 mm, 1 mm voxels at 1e6 mm
    from cgs_engine.io import VolumeIOError, check_same_grid

    image = Volume(np.zeros((2, 3, 4), np.int16), Geometry((0.1, 0.1, 0.1), (2e5, 0.0, 0.0)))
    shifted_labels = Volume(
        np.zeros((2, 3, 4), np.uint8), Geometry((0.1, 0.1, 0.1), (2e5 + 0.1, 0.0, 0.0)), "labels"
    )
    with pytest.raises(VolumeIOError, match="origin"):  # the message's part-by-part check lost the cap
        check_same_grid(shifted_labels, image, "labels.nii.gz")
    fine = Geometry((0.25, 0.25, 0.25), (3e5, 0.0, 0.0))
    assert not Geometry((0.25, 0.25, 0.25), (3e5 + 0.25, 0.0, 0.0)).is_close(fine)
    assert not Geometry((1.0, 1.0, 1.0), (1e6 + 1.0, 0.0, 0.0)).is_close(
        Geometry((1.0, 1.0, 1.0), (1e6, 0.0, 0.0))
    )
    assert Geometry((1.0, 1.0, 1.0), (float(np.float32(1e6 + 0.3)), 0, 0)).is_close(
        Geometry((1.0,) * 3, (1e6 + 0.3, 0, 0))
    )


def test_volume_requires_3d_array_and_known_kind():
    with pytest.raises(ValueError, match="3D"):
        Volume(array=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="kind"):
        Volume(array=np.zeros((2, 4, 5)), kind="mask")


def test_volume_like_keeps_geometry_and_checks_shape():
    image = Volume(array=np.zeros((6, 9, 11), np.int16), geometry=OBLIQUE_GEOMETRY, source="ct.nii.gz")
    labels = image.like(np.ones((6, 9, 11), np.uint8), kind="labels")
    assert labels.geometry == image.geometry and labels.kind == "labels" and labels.source == "ct.nii.gz"
    assert labels.shape == (6, 9, 11)
    with pytest.raises(ValueError, match="shape"):
        image.like(np.zeros((6, 9, 10), np.uint8), kind="labels")
