"""Planar contours of a 2D mask, and the mask of a set of contours (islands and their holes).

Contours are traced with marching squares at level 0.5 (scikit-image), so every vertex lies
half-way between a pixel inside and a pixel outside, and a pixel centre is never on a contour:
filling a traced slice by "pixel centre inside" gives back exactly the mask. Each island is one
contour and each hole another one inside it. Filling reads the nesting: a contour lying wholly
inside another one of the slice is a hole, one inside a hole an island again, and so on (for
nested contours this is the even-odd rule, whatever their winding); a single contour is filled
by the even-odd rule, which also reads the "keyhole" contours that some planning systems write.
Contours that share pixels without one lying inside the other (the same polygon stored twice,
two islands drawn across each other) are read as their union and counted, so that the caller can
say so: the even-odd rule across contours erased a repeated organ and the overlap of two islands.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Rows and columns are pixel indices; a contour is an (N, 2) array of (row, column) vertices.


def trace_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours around every island and hole of a 2D boolean mask (without repeated end point)."""
    from skimage.measure import find_contours  # lazy: scikit-image costs 0.2 s; SEG never needs it

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"trace_contours needs a 2D mask, got shape {mask.shape}")
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return []
    # Trace only the bounding box, padded by one pixel so that every contour closes.
    top, left = rows.min() - 1, columns.min() - 1
    crop = np.zeros((rows.max() - top + 2, columns.max() - left + 2), dtype=np.float32)
    crop[rows - top, columns - left] = 1.0
    contours = []
    for contour in find_contours(crop, 0.5):
        contour = _without_collinear(contour[:-1] if np.allclose(contour[0], contour[-1]) else contour)
        contours.append(contour + (top, left))
    return contours


# A contour inside another is a hole of it, unless the two trace one outline: every vertex of each
# within this distance (pixels) of the other's edges (a repeat stored with rounding noise, a copy
# shrunk by a few hundredths of a pixel). A traced hole lies a whole pixel inside its island; a
# drawn ring 0.3 pixels thin is still a hole (it holds no pixel centre either way).
REPEAT_DISTANCE = 0.15
RASTERS_KEPT = 32  # outer contours whose pixel masks are kept at once (a 512 x 512 slice: 256 kB each)


@dataclass
class FilledSlice:
    mask: np.ndarray
    empty: int = 0  # contours enclosing no pixel centre (narrower than a pixel)
    repeated: int = 0  # pairs of contours covering the same pixels, neither inside the other
    overlapping: int = 0  # pairs sharing some of their pixels, neither inside the other


def fill_contours(contours: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The pixels (centres) in the islands of ``contours`` and not in their holes; clipped to the image."""
    return fill_slice(contours, shape).mask


def fill_slice(contours: Iterable[np.ndarray], shape: tuple[int, int]) -> FilledSlice:
    """:func:`fill_contours`, and how many contours reach no pixel, repeat or overlap each other."""
    from skimage.draw import polygon  # lazy: scikit-image costs 0.2 s; SEG never needs it

    polygons, pixels, empty = [], [], 0
    for contour in contours:
        contour = np.asarray(contour, dtype=float)
        if len(contour) < 3:
            continue
        rows, columns = polygon(contour[:, 0], contour[:, 1], shape=shape)
        if rows.size == 0:
            empty += 1
            continue
        polygons.append(contour)
        pixels.append(np.unique(np.ravel_multi_index((rows, columns), shape)))
    result = FilledSlice(np.zeros(shape, dtype=bool), empty)
    # Largest area first: a contour can lie only inside one before it.
    order = sorted(range(len(polygons)), key=lambda index: -abs(_area(polygons[index])))
    polygons, pixels = [polygons[i] for i in order], [pixels[i] for i in order]
    depth = [0] * len(polygons)  # 0: an island, 1: a hole in one, 2: an island in that hole...
    crossing: set[int] = set()  # contours partly overlapping a larger one (neither inside the other)
    parents: set[int] = set()  # contours that another one is nested in
    rasters: OrderedDict[int, np.ndarray] = OrderedDict()  # outer contours' pixels as flat masks
    for inner, outer in _pairs_near(polygons):  # by inner, so each outer's depth is final
        common = int(np.count_nonzero(_raster(rasters, outer, pixels[outer], shape)[pixels[inner]]))
        if not common:
            continue
        if common == pixels[inner].size and _lies_inside(polygons[inner], polygons[outer]):
            if _same_outline(polygons[inner], polygons[outer]):
                result.repeated += 1
            else:
                depth[inner] = max(depth[inner], depth[outer] + 1)
                parents.add(outer)
        elif common == pixels[inner].size == pixels[outer].size:
            result.repeated += 1
        else:
            result.overlapping += 1
            crossing.add(inner)  # the smaller one: the patch, the island across a hole's edge
    # A pixel takes the depth of the deepest contour around it: even is an island, odd a hole.
    deepest = np.full(shape[0] * shape[1], -1, dtype=np.int64)
    for index in sorted(range(len(polygons)), key=depth.__getitem__):
        deepest[pixels[index]] = depth[index]
    mask = (deepest >= 0) & (deepest % 2 == 0)
    # Contours that cross others are read as their union, so they are islands, also where they
    # reach into a hole (an island in a hole crossing its edge by 0.4 px became a hole itself);
    # one holding holes of its own keeps them.
    for index in crossing - parents:
        mask[pixels[index]] = True
    result.mask = mask.reshape(shape)
    return result


def _pairs_near(polygons: list[np.ndarray]) -> list[tuple[int, int]]:
    """The pairs (later, earlier) of polygons whose bounding boxes overlap, by the later one."""
    if len(polygons) < 2:
        return []
    low = np.array([polygon.min(axis=0) for polygon in polygons])
    high = np.array([polygon.max(axis=0) for polygon in polygons])
    near = np.all((low[:, None] <= high[None]) & (low[None] <= high[:, None]), axis=2)
    later, earlier = np.nonzero(np.tril(near, k=-1))
    return list(zip(later.tolist(), earlier.tolist(), strict=True))  # row-major: by the later


def _raster(rasters: OrderedDict, index: int, pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Contour ``index``'s pixels as a flat mask, the last few kept (an island is compared with
    each of its holes: a sort of its pixels per hole made 876 holes 4x slower)."""
    if index in rasters:
        rasters.move_to_end(index)
        return rasters[index]
    raster = np.zeros(shape[0] * shape[1], dtype=bool)
    raster[pixels] = True
    rasters[index] = raster
    if len(rasters) > RASTERS_KEPT:
        rasters.popitem(last=False)
    return raster


def _lies_inside(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Whether every vertex of ``inner`` lies inside ``outer`` or on its edges (a hole may touch its
    island at a vertex)."""
    from skimage.measure import points_in_poly

    inside = points_in_poly(inner, outer)
    return bool(inside.all() or (_distances_to_edges(inner[~inside], outer) < 1e-6).all())


def _same_outline(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether each contour's vertices all lie within REPEAT_DISTANCE of the other's edges."""
    return bool(
        _distances_to_edges(first, second).max() < REPEAT_DISTANCE
        and _distances_to_edges(second, first).max() < REPEAT_DISTANCE
    )


def _distances_to_edges(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """The distance from each of ``points`` to the nearest edge of the closed ``polygon``."""
    start = polygon
    edge = np.roll(polygon, -1, axis=0) - start
    length = np.maximum((edge**2).sum(axis=1), 1e-12)
    nearest = np.empty(len(points))
    for first in range(0, len(points), 256):  # in blocks: two 2,000-point contours need 64 MB at once
        offset = points[first : first + 256, None, :] - start[None]
        along = np.clip((offset * edge).sum(axis=2) / length, 0.0, 1.0)
        gap = offset - along[..., None] * edge
        nearest[first : first + 256] = np.sqrt((gap**2).sum(axis=2).min(axis=1))
    return nearest


def _area(polygon: np.ndarray) -> float:
    """The signed area of a closed polygon (shoelace)."""
    rows, columns = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(rows, np.roll(columns, -1)) - np.dot(columns, np.roll(rows, -1)))


def _without_collinear(contour: np.ndarray) -> np.ndarray:
    """The same closed polygon without the vertices that lie on a straight run."""
    if len(contour) < 4:
        return contour
    before, after = np.roll(contour, 1, axis=0), np.roll(contour, -1, axis=0)
    cross = (contour[:, 0] - before[:, 0]) * (after[:, 1] - contour[:, 1]) - (
        contour[:, 1] - before[:, 1]
    ) * (after[:, 0] - contour[:, 0])
    keep = np.abs(cross) > 1e-9
    return contour[keep] if keep.sum() >= 3 else contour
