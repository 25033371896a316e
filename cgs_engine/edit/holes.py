"""Fill the holes of an organ: background enclosed by the organ, per axial slice or in 3D."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgs_engine.edit.checks import EditError
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target

MODES = ("slice", "3d")
# Background is connected through faces (4-connected in a slice, 6 in 3D), so an organ closes a hole
# even where its own voxels touch only at corners, as a drawn contour does.
IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
IN_SLICE[1] = ndimage.generate_binary_structure(2, 1)
IN_3D = ndimage.generate_binary_structure(3, 1)


def fill_holes(labels, class_id: int, region=None, mode: str = "slice") -> EditResult:
    """``mode="slice"``: holes in each axial (z) slice, as contours are drawn; ``"3d"``: cavities
    closed in 3D. Voxels of another organ inside a hole are kept; only background is filled."""
    if mode not in MODES:
        raise EditError(f"mode must be 'slice' or '3d', got {mode!r}")
    target = edit_target(labels, class_id, region)
    if target.nothing_to_do:
        return target.unchanged()
    # Outside the organ's box is open space, so background on the box's walls is never a hole.
    organ = target.organ[target.organ_box]
    per_slice = mode == "slice"
    pieces, _ = ndimage.label(~organ, structure=IN_SLICE if per_slice else IN_3D)
    walls = [pieces[:, 0], pieces[:, -1], pieces[:, :, 0], pieces[:, :, -1]]
    if not per_slice:  # in a slice, the z walls are just its first and last slice, not open space
        walls += [pieces[0], pieces[-1]]
    open_space = np.unique(np.concatenate([wall.ravel() for wall in walls]))
    holes = (pieces > 0) & ~np.isin(pieces, open_space)
    return target.apply(organ | holes, target.organ_box)
