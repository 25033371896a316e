"""Boxes (3 slices, [z, y, x]) that keep each tool's work near the organ instead of the whole scan."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[slice, slice, slice]


def bounding_box(mask: np.ndarray) -> Box | None:
    """The smallest box holding every True voxel, None when there is none."""
    bounds = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        bounds.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(bounds)  # type: ignore[return-value]


def expand(box: Box, reach: Sequence[int], shape: Sequence[int]) -> Box:
    """``box`` grown by ``reach`` voxels per axis, clipped to the volume."""
    return tuple(  # type: ignore[return-value]
        slice(max(part.start - r, 0), min(part.stop + r, size))
        for part, r, size in zip(box, reach, shape, strict=True)
    )


def intersect(a: Box, b: Box) -> Box | None:
    parts = []
    for first, second in zip(a, b, strict=True):
        start, stop = max(first.start, second.start), min(first.stop, second.stop)
        if start >= stop:
            return None
        parts.append(slice(start, stop))
    return tuple(parts)  # type: ignore[return-value]


def within(inner: Box, outer: Box) -> Box:
    """``inner`` (inside ``outer``) in the coordinates of an array cropped to ``outer``."""
    return tuple(  # type: ignore[return-value]
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )


def reach_in_voxels(distance_mm: float, spacing_zyx: Sequence[float]) -> tuple[int, int, int]:
    """How many voxels along each axis ``distance_mm`` spans (rounded up)."""
    return tuple(int(np.ceil(distance_mm / s)) for s in spacing_zyx)  # type: ignore[return-value]
