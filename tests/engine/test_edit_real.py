"""Segment-editor tools on a real clinical label map: OpenKBP patient pt_222 (../shared/data/openkbp).

Organs 1..7: Brainstem, SpinalCord, RightParotid, LeftParotid, Esophagus, Larynx, Mandible, on a grid
of 4.688 x 4.688 x 3 mm (x, y, z).
"""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.edit import fill_between_slices, keep_largest_island, remove_small_islands
from cgs_engine.io import check_same_grid, read_volume

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning"),
]

MANDIBLE = 7


@pytest.fixture(scope="module")
def pt_222(shared_data):
    folder = shared_data / "openkbp"
    if not (folder / "labels" / "pt_222.nii.gz").is_file():
        pytest.skip(f"OpenKBP pt_222 not in {folder}")
    labels = read_volume(folder / "labels" / "pt_222.nii.gz", kind="labels")
    check_same_grid(labels, read_volume(folder / "images" / "pt_222.nii.gz"), "pt_222 labels")
    return labels


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def keep_every(labels: np.ndarray, class_id: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """The label map with the organ erased on all but every ``step``-th axial slice of its extent,
    and which slices stayed drawn."""
    slices = np.flatnonzero((labels == class_id).any(axis=(1, 2)))
    drawn = np.zeros(labels.shape[0], bool)
    drawn[slices[(slices - slices[0]) % step == 0]] = True
    sparse = labels.copy()
    sparse[(sparse == class_id) & ~drawn[:, None, None]] = 0
    return sparse, drawn


@pytest.mark.parametrize(
    ("step", "dice_before", "dice_after"),
    # Measured on pt_222: 2 of 3 slices erased 0.49 -> 0.86; every other slice erased 0.67 -> 0.925.
    # The mandible is 1 to 2 voxels (5 to 9 mm) thick here, so 9 mm gaps cost the most.
    [(3, 0.55, 0.83), (2, 0.70, 0.90)],
)
def test_fill_between_slices_brings_back_an_erased_mandible(pt_222, step, dice_before, dice_after):
    original = pt_222.array
    sparse, drawn = keep_every(original, MANDIBLE, step)
    assert dice(sparse == MANDIBLE, original == MANDIBLE) < dice_before
    result = fill_between_slices(sparse, MANDIBLE)
    assert dice(result.labels == MANDIBLE, original == MANDIBLE) > dice_after
    assert np.array_equal(result.labels[drawn], sparse[drawn])  # drawn slices as drawn
    assert not result.changed[drawn].any()
    assert (sparse[result.changed] == 0).all() and (result.labels[result.changed] == MANDIBLE).all()
    others = (sparse != 0) & (sparse != MANDIBLE)
    assert np.array_equal(result.labels[others], sparse[others])  # no other organ touched
    assert np.array_equal(result.changed, result.labels != sparse)


def test_remove_small_islands_deletes_exactly_a_spurious_island(pt_222):
    original = pt_222.array
    spacing_zyx = pt_222.geometry.spacing[::-1]
    spurious = np.zeros(original.shape, bool)
    spurious[40:43, 30:33, 30:33] = True  # 27 voxels = 1.78 mL, far from every organ
    assert not original[spurious].any()
    edited = original.copy()
    edited[spurious] = MANDIBLE
    result = remove_small_islands(edited, MANDIBLE, 5.0, spacing_zyx)
    assert np.array_equal(result.changed, spurious)
    assert np.array_equal(result.labels, original)
    assert result.changed_ml(spacing_zyx) == pytest.approx(27 * np.prod(spacing_zyx) / 1000)


def test_the_real_mandible_is_one_island(pt_222):
    """One of its voxels touches the rest only along an edge: 6-connectivity would call that voxel an
    island and delete it; the tools' 26-connectivity keeps the mandible whole."""
    assert keep_largest_island(pt_222.array, MANDIBLE).changed_voxels == 0
