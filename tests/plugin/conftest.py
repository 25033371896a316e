"""Synthetic images with known ITK geometry, and the real-data location, for plugin tests.

Helpers reach the tests through the ``synth`` fixture rather than ``import conftest``, which
would be ambiguous once other test folders have their own conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(
    os.environ.get("CGS_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)

_C, _S = np.cos(np.radians(25)), np.sin(np.radians(25))
_OBLIQUE = np.array([[1, 0, 0], [0, _C, -_S], [0, _S, _C]]) @ np.array(
    [[_C, -_S, 0], [_S, _C, 0], [0, 0, 1]]
)  # proper rotation (det +1) about two axes, so no axis stays aligned with the world

# name -> (spacing, origin, direction) in ITK x, y, z order, LPS millimetres
GEOMETRY_CASES = {
    "identity": ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
    "lps_anisotropic": ((0.7, 0.7, 5.0), (-120.5, 80.25, -300.0), np.eye(3)),
    "ras": ((0.9, 0.8, 2.5), (130.0, 95.5, -42.0), np.diag([-1.0, -1.0, 1.0])),
    "oblique": ((0.7, 0.7, 5.0), (-17.25, 33.5, 102.0), _OBLIQUE),
    "reflected": ((0.7, 0.7, 5.0), (12.0, -7.5, 64.0), _OBLIQUE @ np.diag([1.0, 1.0, -1.0])),
    # stored slices along x (sagittal MR: columns anterior->posterior, rows superior->inferior) and
    # along y (coronal): napari cannot slice an array whose axes the direction permutes
    "sagittal": ((0.9, 0.9, 4.0), (-30.0, -110.0, 95.0), np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)),
    "coronal": ((0.9, 0.9, 4.0), (-110.0, -40.0, 95.0), np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float)),
}

SHAPE_ZYX = (6, 9, 11)  # all different, so a swapped axis cannot go unnoticed


def sitk_image(array_zyx: np.ndarray, case: str) -> sitk.Image:
    spacing, origin, direction = GEOMETRY_CASES[case]
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


def ct_like_array(seed: int = 0, shape=SHAPE_ZYX) -> np.ndarray:
    """int16 Hounsfield-like values: air (-1000) around soft tissue and some bone."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-100, 300, size=shape).astype(np.int16)
    array[:, :2, :] = -1000
    array[:, -1, :] = 1200
    return array


def write_case(tmp_path: Path, case: str, name: str | None = None, array=None) -> tuple[Path, sitk.Image]:
    image = sitk_image(ct_like_array() if array is None else array, case)
    path = tmp_path / f"{name or case}.nii.gz"
    sitk.WriteImage(image, str(path))
    # What a NIfTI file really holds (float32 header), the reference for every comparison.
    return path, sitk.ReadImage(str(path))


def zyx_world_point(image: sitk.Image, index_zyx) -> np.ndarray:
    """SimpleITK's physical point of a [z, y, x] voxel index, reversed to (z, y, x)."""
    index_xyz = [int(i) for i in index_zyx[::-1]]
    return np.array(image.TransformIndexToPhysicalPoint(index_xyz))[::-1]


def assert_same_geometry(actual: sitk.Image, expected: sitk.Image) -> None:
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), atol=1e-5)


def _shared_file(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture(params=sorted(GEOMETRY_CASES))
def geometry_case(request) -> str:
    return request.param


@pytest.fixture
def synth() -> SimpleNamespace:
    return SimpleNamespace(
        CASES=GEOMETRY_CASES,
        SHAPE_ZYX=SHAPE_ZYX,
        sitk_image=sitk_image,
        ct_like_array=ct_like_array,
        write_case=write_case,
        zyx_world_point=zyx_world_point,
        assert_same_geometry=assert_same_geometry,
        shared_file=_shared_file,
    )
