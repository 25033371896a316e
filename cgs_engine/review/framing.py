"""What the viewer should frame: a review region with enough anatomy around it, or the whole body.

A clinician judges a contour by its neighbours. Zoomed to the region's box alone (18 x 20 voxels
of a 128 x 128 slice on the OpenKBP CTs) a review reads as a mosaic; fitted to the scan's field
of view, a head fills a fifth of the canvas (the whole-slice view frames the body on the slice
shown instead). :func:`review_field` gives the region at least
``CONTEXT`` times its own size, at least :data:`MIN_FIELD_MM` and :data:`MIN_FIELD_VOXELS`, never
more than the body; :func:`body_box` is the body's bounding box (the largest connected part
above the air/background threshold on a few slices: the couch and tubes are left out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cgs_engine.scope import CT_AIR_HU, MR_BODY_SHARE_OF_P99, guess_modality

CONTEXT = 2.5  # the field of view around a region: this many times its extent
MIN_FIELD_MM = 120.0  # never closer than a 12 cm field of view ...
MIN_FIELD_VOXELS = 40  # ... nor than 40 voxels across (4.7 mm voxels: 19 cm, a head at the neck)
BODY_SLICES = 12  # slices looked at to find the body
OPENING_VOXELS = 2  # removes couch rails and tubes a few voxels thin
EDGE_VOXELS = 3  # a view kept on the body may show this much beyond its edge (the skin, the review box)


def review_field(
    bbox: Sequence[slice],
    spacing_zyx: Sequence[float],
    shape: Sequence[int],
    limit: Sequence[slice] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (voxel index, z y x) and size (mm per axis) of the view of a region's box.

    ``limit`` (default: the whole volume) caps the field: a view never shows more than the body,
    and the centre moves off the region's towards the body's so that the view stays on the body.
    """
    spacing = np.asarray(spacing_zyx, dtype=float)
    start = np.array([part.start for part in bbox], dtype=float)
    stop = np.array([part.stop for part in bbox], dtype=float)
    extent_mm = (stop - start) * spacing
    field = np.maximum.reduce([CONTEXT * extent_mm, np.full(3, MIN_FIELD_MM), MIN_FIELD_VOXELS * spacing])
    bounds = limit if limit is not None else tuple(slice(0, n) for n in shape)
    largest = np.array([max(part.stop - part.start, 1) for part in bounds], dtype=float) * spacing
    field = np.minimum(field, np.maximum(largest, extent_mm))
    centre = (start + stop - 1) / 2
    low = np.array([part.start for part in bounds], dtype=float) - 0.5 - EDGE_VOXELS
    high = np.array([part.stop for part in bounds], dtype=float) - 0.5 + EDGE_VOXELS
    half = field / spacing / 2
    inside = high - low >= 2 * half  # room to keep the whole field on the body along this axis
    centre[inside] = np.clip(centre, low + half, high - half)[inside]
    # ... but never so far that the region leaves the view: one lying off the body (a false organ in
    # the air or on the couch) is shown at the field's edge rather than framed out of sight.
    region_low, region_high = stop - 0.5 - half, start - 0.5 + half
    centre = np.where(region_low <= region_high, np.clip(centre, region_low, region_high), centre)
    return centre, field


def body_box(array: np.ndarray, slices: Sequence[int] | None = None) -> tuple[slice, slice, slice] | None:
    """The bounding box (z, y, x) of the body on ``slices`` (default: up to BODY_SLICES evenly spaced
    ones; z spans the volume either way); None where there is no body."""
    volume = np.asarray(array)
    if volume.ndim != 3 or volume.size == 0:
        return None
    if slices is None:
        picks = np.unique(np.linspace(0, volume.shape[0] - 1, min(BODY_SLICES, volume.shape[0])).astype(int))
    else:
        picks = np.array([int(z) for z in slices if 0 <= int(z) < volume.shape[0]], dtype=int)
        if picks.size == 0:
            return None
    sample = np.asarray(volume[picks], dtype=np.float32)
    if guess_modality(sample) == "CT":
        threshold = CT_AIR_HU
    else:
        threshold = MR_BODY_SHARE_OF_P99 * float(np.percentile(sample, 99))
    rows, cols = [], []
    for image in sample:
        opened = ndimage.binary_opening(image > threshold, iterations=OPENING_VOXELS)
        labelled, count = ndimage.label(opened)
        if count == 0:
            continue
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        row, col = ndimage.find_objects((labelled == int(np.argmax(sizes))).astype(np.uint8))[0]
        rows.append(row)
        cols.append(col)
    if not rows:
        return None
    return (
        slice(0, volume.shape[0]),
        slice(min(r.start for r in rows), max(r.stop for r in rows)),
        slice(min(c.start for c in cols), max(c.stop for c in cols)),
    )
