"""Fill the slices between drawn ones: ITK's morphological contour interpolation.

The method of Albu, Beugeling and Laurendeau (IEEE TBME 2008), as ITK-SNAP and 3D Slicer use it: the
pieces of the organ on two drawn slices are aligned and matched, and each slice between them gets
the morphological in-between of the matched pair.
"""

from __future__ import annotations

import numpy as np

from cgs_engine.edit.checks import EditError, check_axis
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target

PACKAGE = "itk-morphologicalcontourinterpolation"


def fill_between_slices(labels, class_id: int, axis: int = 0, region=None, interpolate=None) -> EditResult:
    """The organ is drawn on some slices across ``axis`` (0 = z, axial); fill the slices between
    them. Only background voxels of slices with no voxel of the organ are filled: drawn slices stay
    exactly as drawn, and nothing is added before the first or after the last drawn slice.

    ``interpolate(mask, axis, drawn_slices)`` runs ITK's filter (default: in this process); a GUI
    passes ``InterpolationProcess`` (``interpolate_process``), which keeps ITK out of its process."""
    target = edit_target(labels, class_id, region)
    axis = check_axis(axis)
    if target.nothing_to_do:
        return target.unchanged()
    box = target.organ_box
    drawn = target.organ[box]
    in_plane = tuple(a for a in range(3) if a != axis)
    empty_slices = ~drawn.any(axis=in_plane)
    if not empty_slices.any():
        return target.unchanged()
    filled = (interpolate or interpolate_in_process)(drawn, axis, np.flatnonzero(~empty_slices))
    shape = [1, 1, 1]
    shape[axis] = -1
    return target.apply(drawn | (filled & empty_slices.reshape(shape)), box)


def interpolate_in_process(mask: np.ndarray, axis: int, drawn_slices: np.ndarray) -> np.ndarray:
    """ITK's morphological contour interpolation of a bool ``mask`` from its ``drawn_slices``."""
    try:
        import itk  # lazy: ITK's wrapping costs seconds; the panel and `cgs edit --help` load this module
    except ImportError:
        raise EditError(f"filling between slices needs {PACKAGE} (pip install {PACKAGE})") from None
    itk_axis = 2 - axis  # ITK counts axes x, y, z
    try:
        interpolator = itk.MorphologicalContourInterpolator.New(
            itk.image_from_array(np.ascontiguousarray(mask, dtype=np.uint8))
        )
        # With several threads the filter corrupted the heap here (itk 5.4.7, module 2.1.2: glibc
        # aborts with "malloc_consolidate(): unaligned fastbin chunk" after a few calls).
        interpolator.GetMultiThreader().SetMaximumNumberOfThreads(1)
        interpolator.SetNumberOfWorkUnits(1)
        interpolator.SetLabel(1)
        interpolator.SetAxis(itk_axis)
        # Say which slices are drawn: the filter's own guess needs a voxel whose 4 in-slice neighbours
        # are all organ, so it skips thin drawings (a mandible 1 to 2 voxels wide) and leaves the gaps
        # next to them empty.
        interpolator.SetUseCustomSlicePositions(True)
        interpolator.SetLabeledSliceIndices(itk_axis, 1, [int(index) for index in drawn_slices])
        interpolator.Update()
        return itk.array_from_image(interpolator.GetOutput()) > 0
    except (RuntimeError, AttributeError, TypeError) as error:
        reason = " ".join(str(error).split())[:200]
        raise EditError(f"contour interpolation failed ({reason}); is {PACKAGE} installed?") from None
