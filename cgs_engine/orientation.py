"""The one array orientation every network sees: axial slices, patient's left and back ascending.

A 2D network learns anatomy in the orientation of its training arrays. Files store the same
patient in many: NIfTI from dcm2niix or nibabel runs x towards the patient's right and y to the
front (direction diag(-1, -1, 1) in LPS), a feet-first DICOM series runs z downwards, a sagittal
acquisition has its slices along left-right. Fed as stored, the bundled model (trained on OpenKBP,
direction identity) sees such a scan mirrored or rotated: it swaps the left and right parotids,
or worse, with no error anywhere.

So every array a network reads or learns from is first turned into the canonical layout, the
axis permutation and flips that bring its direction matrix closest to identity (LPS: array x to
the patient's left, y to the back, z to the head; slices along z), and everything it produces is
turned back onto the file's own grid. Only whole-axis permutations and flips are used: no voxel
is resampled, an oblique scan keeps its small residual rotation, and the geometry of every file
written stays exactly the input's. Data stores hold canonical arrays (with their canonical
geometry), so training and prediction agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from cgs_engine.volume import Geometry, Volume


@dataclass(frozen=True)
class Reorientation:
    """How a [z, y, x] array of a geometry maps onto the canonical [z, y, x] array.

    ``source_axes[c]``: the stored array axis that becomes canonical array axis ``c``;
    ``flipped[c]``: canonical axis ``c`` runs the other way than its stored axis.
    """

    source_axes: tuple[int, int, int] = (0, 1, 2)
    flipped: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def of(cls, geometry: Geometry) -> Reorientation:
        direction = geometry.direction_matrix  # columns: world direction of the x, y, z voxel axes
        # the world axis of each voxel axis: the assignment with the largest total alignment, so
        # that an oblique scan (a 45-degree tie) still gets a permutation, never one axis twice
        world_of = max(permutations(range(3)), key=lambda p: sum(abs(direction[p[i], i]) for i in range(3)))
        voxel_of = [world_of.index(w) for w in range(3)]  # voxel axis (x=0) along world axis w
        # canonical array axis c holds world axis 2 - c; array axis of voxel axis i is 2 - i
        source = tuple(2 - voxel_of[2 - c] for c in range(3))
        flipped = tuple(bool(direction[2 - c, voxel_of[2 - c]] < 0) for c in range(3))
        return cls(source, flipped)  # type: ignore[arg-type]

    @property
    def is_identity(self) -> bool:
        return self.source_axes == (0, 1, 2) and not any(self.flipped)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of a stored [z, y, x] array (trailing axes kept) in the canonical layout."""
        if self.is_identity:
            return array
        view = np.transpose(array, (*self.source_axes, *range(3, array.ndim)))
        flips = tuple(axis for axis in range(3) if self.flipped[axis])
        return np.flip(view, flips) if flips else view

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """A view of a canonical array in the stored layout (the inverse of ``to_canonical``)."""
        if self.is_identity:
            return array
        flips = tuple(axis for axis in range(3) if self.flipped[axis])
        view = np.flip(array, flips) if flips else array
        inverse = tuple(int(axis) for axis in np.argsort(self.source_axes))
        return np.transpose(view, (*inverse, *range(3, array.ndim)))

    def canonical_copies(self, *arrays: np.ndarray | None) -> list[np.ndarray | None]:
        """Arrays on one stored grid as contiguous canonical arrays (``None`` kept; no copy when
        the layout is already canonical)."""
        if self.is_identity:
            return list(arrays)
        return [None if a is None else np.ascontiguousarray(self.to_canonical(np.asarray(a))) for a in arrays]

    def canonical_geometry(self, geometry: Geometry, shape: tuple[int, int, int]) -> Geometry:
        """The geometry of the canonical array: the same voxels at the same world positions."""
        if self.is_identity:
            return geometry
        voxel_axes = [2 - self.source_axes[2 - i] for i in range(3)]  # canonical voxel i <- stored
        direction = geometry.direction_matrix
        spacing = [geometry.spacing[axis] for axis in voxel_axes]
        columns = []
        corner = np.zeros(3)  # stored voxel index (x, y, z) of the canonical first voxel
        for i, axis in enumerate(voxel_axes):
            reversed_axis = self.flipped[2 - i]
            columns.append(-direction[:, axis] if reversed_axis else direction[:, axis])
            if reversed_axis:
                corner[axis] = shape[2 - axis] - 1
        origin = geometry.index_to_world() @ np.append(corner, 1.0)
        return Geometry(
            spacing=tuple(spacing),
            origin=tuple(origin[:3]),
            direction=tuple(np.stack(columns, axis=1).ravel()),
        )


def canonical_volume(volume: Volume) -> tuple[Volume, Reorientation]:
    """The volume as a contiguous canonical array with its geometry, and the way back."""
    turn = Reorientation.of(volume.geometry)
    if turn.is_identity:
        return volume, turn
    (array,) = turn.canonical_copies(volume.array)
    return Volume(array, turn.canonical_geometry(volume.geometry, volume.shape), volume.kind), turn
