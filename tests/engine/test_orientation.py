"""Every network reads the canonical layout; every output lands on the file's own grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from review_model import GEOMETRY, checkpoint, image

from cgs_engine.infer import Predictor
from cgs_engine.orientation import Reorientation, canonical_volume
from cgs_engine.review.error_model import ErrorModel, design_names
from cgs_engine.volume import Geometry, Volume

AXIS_ALIGNED = [
    (perm, signs)
    for perm in itertools.permutations(range(3))
    for signs in itertools.product((1, -1), repeat=3)
]


def _direction(perm, signs) -> tuple[float, ...]:
    matrix = np.zeros((3, 3))
    for axis in range(3):
        matrix[perm[axis], axis] = signs[axis]
    return tuple(matrix.ravel())


@pytest.mark.parametrize(("perm", "signs"), AXIS_ALIGNED)
def test_canonical_layout_is_itks_lps_orientation(perm, signs):
    """SimpleITK's DICOMOrient is the independent reference: same voxels, same geometry."""
    array = np.random.default_rng(0).integers(0, 100, (5, 6, 7)).astype(np.int16)
    geometry = Geometry(spacing=(0.5, 0.7, 2.0), origin=(10, -20, 30), direction=_direction(perm, signs))
    volume, turn = canonical_volume(Volume(array, geometry))
    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing(geometry.spacing), itk.SetOrigin(geometry.origin), itk.SetDirection(geometry.direction)
    reference = sitk.DICOMOrient(itk, "LPS")
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(reference))
    np.testing.assert_allclose(volume.geometry.spacing, reference.GetSpacing())
    np.testing.assert_allclose(volume.geometry.origin, reference.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(volume.geometry.direction, reference.GetDirection(), atol=1e-12)
    np.testing.assert_array_equal(turn.from_canonical(volume.array), array)
    assert turn.is_identity == (perm == (0, 1, 2) and signs == (1, 1, 1))


def test_oblique_scans_get_a_permutation_and_keep_their_tilt():
    angle = np.radians(30)  # a gantry tilt about x, and a 45-degree tie between two axes
    tilted = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    half = np.sqrt(0.5)
    tie = np.array([[half, -half, 0], [half, half, 0], [0, 0, 1]])
    for matrix in (tilted, tie, -tilted):
        turn = Reorientation.of(Geometry(direction=tuple(matrix.ravel())))
        assert sorted(turn.source_axes) == [0, 1, 2]
        geometry = turn.canonical_geometry(Geometry(direction=tuple(matrix.ravel())), (4, 5, 6))
        assert np.all(np.diag(geometry.direction_matrix) > 0)  # closest to identity, not resampled


def test_a_scan_stored_mirrored_or_sagittally_gets_the_same_prediction_in_the_world():
    """The same anatomy stored another way must not change which organ is where (left/right)."""
    predictor = Predictor(checkpoint(), device="cpu")
    names = design_names(len(predictor.class_names))  # every feature weighs: a fitted model's stand-in
    weights = np.random.default_rng(4).normal(size=len(names)).tolist()
    predictor.error_model = ErrorModel(
        list(predictor.class_names), names, [0.0] * len(names), [1.0] * len(names), weights, -1.0, {}
    )
    plain = predictor.predict(Volume(image(), GEOMETRY), maps=True)
    assert plain.errors.calibrated and plain.errors.organs
    raw = image()
    for perm, signs in [((0, 1, 2), (-1, 1, 1)), ((0, 1, 2), (-1, -1, 1)), ((2, 1, 0), (1, 1, 1))]:
        turn = Reorientation.of(Geometry(direction=_direction(perm, signs)))
        # store the canonical test image as a file with this direction would hold it
        stored = np.ascontiguousarray(turn.from_canonical(raw))
        spacing = tuple(GEOMETRY.spacing[perm[axis]] for axis in range(3))  # voxel axis -> its world's
        geometry = Geometry(spacing=spacing, direction=_direction(perm, signs))
        other = predictor.predict(Volume(stored, geometry), maps=True)
        assert other.labels.shape == stored.shape and other.labels.geometry == geometry
        np.testing.assert_array_equal(turn.to_canonical(other.labels.array), plain.labels.array)
        for name, volume in plain.specialist_maps.items():
            np.testing.assert_array_equal(turn.to_canonical(other.specialist_maps[name].array), volume.array)
        np.testing.assert_array_equal(turn.to_canonical(other.disagreement.array), plain.disagreement.array)
        # the likely-wrong map and its figures read the axial slices whatever the storage order (a
        # sagittal file gave up to 114/255 other values and other estimated Dice per organ)
        np.testing.assert_array_equal(turn.to_canonical(other.errors.map), plain.errors.map)
        assert other.errors.map.shape == stored.shape and other.errors.map.flags.c_contiguous
        for class_id, figures in plain.errors.organs.items():
            assert other.errors.organs[class_id].likely_wrong_ml == pytest.approx(figures.likely_wrong_ml)
            assert other.errors.organs[class_id].estimated_dice == pytest.approx(
                figures.estimated_dice, nan_ok=True
            )
