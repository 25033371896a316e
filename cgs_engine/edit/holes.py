"""Fill the holes of an organ: background enclosed by the organ, per axial slice or in 3D."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgs_engine.edit.checks import EditError, check_axis
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target

MODES = ("slice", "3d")
# Background is connected through faces (4-connected in a slice, 6 in 3D), so an organ closes a hole
# even where its own voxels touch only at corners, as a drawn contour does.
IN_3D = ndimage.generate_binary_structure(3, 1)


def in_slice(axis: int) -> np.ndarray:
    """Face neighbours within a slice across ``axis`` (0: the z slices)."""
    structure = IN_3D.copy()
    ends = [slice(None)] * 3
    for end in (0, 2):
        ends[axis] = end
        structure[tuple(ends)] = False
    return structure


def fill_holes(labels, class_id: int, region=None, mode: str = "slice", axis: int = 0) -> EditResult:
    """``mode="slice"``: holes in each slice across ``axis`` of the array (0: z, the axial slices of
    a file stored axially), as contours are drawn; ``"3d"``: cavities closed in 3D. Voxels of
    another organ inside a hole are kept; only background is filled."""
    if mode not in MODES:
        raise EditError(f"mode must be 'slice' or '3d', got {mode!r}")
    axis = check_axis(axis)
    target = edit_target(labels, class_id, region)
    if target.nothing_to_do:
        return target.unchanged()
    # Outside the organ's box is open space, so background on the box's walls is never a hole.
    organ = target.organ[target.organ_box]
    per_slice = mode == "slice"
    pieces, _ = ndimage.label(~organ, structure=in_slice(axis) if per_slice else IN_3D)
    # in a slice, the walls across its own axis are just its first and last slice, not open space
    walled = [a for a in range(3) if not (per_slice and a == axis)]
    walls = [np.take(pieces, end, axis=a) for a in walled for end in (0, -1)]
    open_space = np.unique(np.concatenate([wall.ravel() for wall in walls]))
    holes = (pieces > 0) & ~np.isin(pieces, open_space)
    return target.apply(organ | holes, target.organ_box)
