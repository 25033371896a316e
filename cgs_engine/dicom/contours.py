"""Planar contours of a 2D mask, and the mask of a set of contours (the even-odd rule).

Contours are traced with marching squares at level 0.5 (scikit-image), so every vertex lies
half-way between a pixel inside and a pixel outside, and a pixel centre is never on a contour:
filling a traced slice by "pixel centre inside" gives back exactly the mask. Each island is one
contour and each hole another one inside it; the even-odd rule (a pixel is inside when it lies
within an odd number of contours) fills islands, empties holes, refills islands within holes,
and also reads the single "keyhole" contours that some planning systems write.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def fill_contours(contours: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """The pixels (centres) inside an odd number of ``contours``; outside the image is clipped."""
    from skimage.draw import polygon  # lazy: scikit-image costs 0.2 s; SEG never needs it

    mask = np.zeros(shape, dtype=bool)
    for contour in contours:
        contour = np.asarray(contour, dtype=float)
        if len(contour) < 3:
            continue
        rows, columns = polygon(contour[:, 0], contour[:, 1], shape=shape)
        inside = np.zeros(shape, dtype=bool)
        inside[rows, columns] = True
        mask ^= inside
    return mask


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
