"""Correct by pointing: a click (or a scribble of several points) and a box, on one organ.

The evidence is what CGS already computes: the organ's specialist map P (its head's probability of
its own organ, uint8 255 = 1.0 or float), plus the image.

**Click.** The pre-segmentation draws the organ roughly where P crosses 0.5. A positive click on a
voxel the organ missed says "the organ reaches here": the level of P that bounds the organ is
lowered near the click just enough to take the clicked voxel in (in logits, ``level(x) =
w(x) * (logit P(click) - margin)`` with ``w`` a Gaussian of ``reach_mm`` around the click, 0 far
away), and the background voxels above that level are added. A negative click raises the level the
same way and removes the organ's voxels below it. Two limits keep a click local and make it follow
the organ's surface rather than spill: only voxels at most as far from the organ as the click is
(as deep inside it, for a negative click) change, and only those connected to the click. A
positive click also needs image support: added voxels must have an intensity within the range of
the organ's own voxels near the click (its 2nd-98th percentiles, widened by ``intensity_margin``).
Voxels in ``locked`` (what the user drew or accepted, earlier prompts included) never change,
except the clicked voxel itself, so a second click cannot undo the first.

**Box.** A box says "the organ lies in here". Inside it the organ becomes the largest 3D piece of
``P >= t`` whose extent fills the box best (``t`` in 12 steps from 0.04 to 0.96; the smallest change from
0.5 wins a tie); voxels of the organ outside the box become background.

Like every edit tool, a prompt moves voxels only between its organ and background (another
organ's voxels are never taken, not even by a box), works in a bounding region around the
prompt rather than the whole volume, and returns the new labels with exactly the voxels it
changed (:class:`EditResult`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cgs_engine.edit.boxes import Box, bounding_box, expand
from cgs_engine.edit.checks import EditError, check_amount, check_class_id, check_labels, check_spacing
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.target import edit_target
from cgs_engine.io.validate import probability_map_problem

# 26-connected, as the islands tool: thick slices meet their neighbours at edges and corners
CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
LOGIT_LIMIT = 6.0  # |logit P| is clipped here: uint8 maps hold nothing surer than 254/255
LEVEL_MARGIN = 0.3  # logits past the clicked voxel's own level, so that voxel always flips
REACH_SIGMAS = 3.0  # the click's bounding region: the Gaussian is < 0.012 beyond it
MIN_WEIGHT = 0.05  # where the Gaussian falls under this, nothing changes
INTENSITY_QUANTILES = (0.02, 0.98)
BOX_LEVELS = np.linspace(0.04, 0.96, 12)
BOX_TIE_PENALTY = 0.002  # box fit score lost per unit of |t - 0.5|: prefer the model's own level


def why_click_does_nothing(labels, class_id: int, point, positive: bool, names=None) -> str | None:
    """Why a click at ``point`` (z, y, x) cannot change the labels, in words; None when it may.

    A click acts only from a voxel it can change: adding, from background; removing, from the organ.
    Said before the click runs: "changed nothing" left the user guessing. ``names``: class names by
    id (a list, background first, or a dict), for the message."""
    array = np.asarray(labels)
    index = tuple(int(i) for i in point)
    if len(index) != array.ndim or not all(0 <= i < n for i, n in zip(index, array.shape, strict=True)):
        # (a negative index wrapped round and described another voxel)
        raise EditError(f"point {index} lies outside the volume {array.shape}")
    value = int(array[index])
    known = dict(enumerate(names)) if isinstance(names, (list, tuple)) else dict(names or {})

    def named(class_id: int) -> str:
        return known.get(class_id) or f"class {class_id}"

    if positive and value == class_id:
        return f"the clicked voxel is {named(class_id)} already: click on the background next to it to add"
    if positive and value != 0:
        return f"the clicked voxel is {named(value)}: a click adds only background voxels (remove it first)"
    if not positive and value != class_id:
        return f"the clicked voxel is not {named(class_id)}: click inside it to remove from it"
    return None


def click(
    labels,
    class_id: int,
    points,
    positive: bool,
    probability,
    spacing_zyx,
    image=None,
    locked=None,
    reach_mm: float = 15.0,
    intensity_margin: float = 30.0,
) -> EditResult:
    """One click (``points``: a (z, y, x) voxel index) or a scribble (several of them, same sign).

    ``positive``: add to the organ where the click is; else remove. ``probability``: the organ's
    specialist map over the whole volume. ``image``: raw intensities (without it a positive click
    has no image support). ``locked``: bool mask of voxels that must not change. ``reach_mm``:
    the Gaussian's sigma, how far along the organ the click is felt.
    """
    labels = check_labels(labels)
    class_id = check_class_id(class_id, labels)
    spacing = np.asarray(check_spacing(spacing_zyx), dtype=np.float64)
    reach = check_amount("reach_mm", reach_mm)
    margin = check_amount("intensity_margin", intensity_margin)
    if reach == 0:
        raise EditError("reach_mm must be more than 0")
    shape = labels.shape
    points = _check_points(points, shape)
    probability = _check_volume("probability", probability, shape)
    check_probability_map(probability)
    image = None if image is None else _check_volume("image", image, shape)
    locked = None if locked is None else _check_volume("locked", locked, shape).astype(bool, copy=False)
    clicked = labels[tuple(points.T)]
    wanted = 0 if positive else class_id  # what a clicked voxel must be for the click to act
    points = points[clicked == wanted]
    if len(points) == 0:
        return EditResult(labels.copy(), np.zeros(shape, dtype=bool))

    box = _click_box(points, reach * REACH_SIGMAS, spacing, shape)
    local = points - np.array([part.start for part in box])
    current = labels[box]
    organ = current == class_id
    evidence = _logits(probability[box])
    weight = _click_weight(local, current.shape, spacing, reach)
    levels = evidence[tuple(local.T)] + (-LEVEL_MARGIN if positive else LEVEL_MARGIN)
    # the level each voxel is held to: the strongest pull of any point of the scribble
    level = np.stack([w * lv for w, lv in zip(weight, levels, strict=True)])
    level = level.min(axis=0) if positive else level.max(axis=0)
    felt = weight.max(axis=0) >= MIN_WEIGHT
    if positive:
        candidates = (current == 0) & (evidence > level) & felt
        if organ.any():
            distance = ndimage.distance_transform_edt(~organ, sampling=spacing)
            candidates &= distance <= distance[tuple(local.T)].max() + 0.5 * spacing.min()
        if image is not None:
            candidates &= _like_the_organ(image[box], organ, local, margin)
    else:
        candidates = organ & (evidence < level) & felt
        depth = ndimage.distance_transform_edt(organ, sampling=spacing)
        candidates &= depth <= depth[tuple(local.T)].max() + 0.5 * spacing.min()
    if locked is not None:
        candidates &= ~locked[box]
    candidates[tuple(local.T)] = True  # the clicked voxels themselves always change
    pieces, _ = ndimage.label(candidates, structure=CONNECTIVITY)
    reached = np.isin(pieces, np.unique(pieces[tuple(local.T)]))
    # only the box is looked at: the whole-volume work is one copy of the labels and of the mask
    new, changed = labels.copy(), np.zeros(shape, dtype=bool)
    new[box][reached] = class_id if positive else 0
    changed[box] = reached
    return EditResult(new, changed)


def box_prompt(labels, class_id: int, box, probability, locked=None) -> EditResult:
    """Re-segment the organ inside ``box`` (3 slices, z, y, x) and clear it outside the box."""
    target = edit_target(labels, class_id)
    shape = target.shape
    box = _check_box(box, shape)
    probability = _check_volume("probability", probability, shape)
    check_probability_map(probability)
    locked = None if locked is None else _check_volume("locked", locked, shape).astype(bool, copy=False)
    inside = _fit_inside(_probabilities(probability[box]), target.labels[box], class_id)
    if not inside.any():  # it would only clear the organ everywhere: surely not what was meant
        raise EditError(
            f"the box holds nothing of class {class_id} (its map finds none of it there): nothing changed; "
            "draw the box around the organ"
        )
    organ_box = target.organ_box
    region = box if organ_box is None else _union(box, organ_box)
    proposed = np.zeros(tuple(part.stop - part.start for part in region), dtype=bool)
    proposed[tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(box, region, strict=True))] = (
        inside
    )
    if locked is not None:  # locked voxels keep what they are
        current = target.organ[region]
        proposed = np.where(locked[region], current, proposed)
    return target.apply(proposed, region)


def box_from_drawing(corners, shape, spacing_zyx, slice_axis: int, depth_mm: float = 0.0) -> Box:
    """The 3D box of a rectangle drawn on one slice: ``corners`` (N x 3 voxel coordinates, as a
    viewer reports them) span the two drawn axes; along ``slice_axis`` the box reaches
    ``depth_mm`` either side of the drawn slice, or every slice with ``depth_mm`` 0."""
    array = np.asarray(corners, dtype=np.float64)
    spacing = check_spacing(spacing_zyx)
    depth = check_amount("depth_mm", depth_mm)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) < 2 or not np.isfinite(array).all():
        raise EditError(f"a drawn box needs at least 2 corners of 3 coordinates, got shape {array.shape}")
    parts = []
    for axis, size in enumerate(shape):
        if axis == slice_axis:
            centre = int(np.clip(np.rint(array[:, axis].mean()), 0, size - 1))
            reach = size if depth == 0 else int(np.floor(depth / spacing[axis] + 1e-9))
            parts.append(slice(max(centre - reach, 0), min(centre + reach + 1, size)))
        else:  # a voxel belongs to the box when its centre lies inside the drawn rectangle
            if array[:, axis].max() < -0.5 or array[:, axis].min() > size - 0.5:
                # (one drawn wholly above or left of the image became its first row or column)
                raise EditError(f"the drawn box lies outside the image along {'zyx'[axis]}")
            # one holding no voxel centre (thin, or over the image's edge) takes the nearest row,
            # at either edge alike
            low = int(np.clip(np.ceil(array[:, axis].min() - 1e-9), 0, size - 1))
            high = int(np.clip(np.floor(array[:, axis].max() + 1e-9) + 1, 0, size))
            parts.append(slice(low, max(high, low + 1)))
    return _check_box(parts, shape)


# ----------------------------------------------------------------------------- the click's pieces
def _click_box(points: np.ndarray, reach_mm: float, spacing: np.ndarray, shape) -> Box:
    around = tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(points.min(0), points.max(0), strict=True))
    reach = tuple(int(np.ceil(reach_mm / s)) for s in spacing)
    return expand(around, reach, shape)


def _click_weight(local: np.ndarray, shape, spacing: np.ndarray, reach_mm: float) -> np.ndarray:
    """One Gaussian per point over the box: [points, z, y, x] float32."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    weights = np.empty((len(local), *shape), dtype=np.float32)
    for index, point in enumerate(local):
        squared = [((axis - p) * s) ** 2 for axis, p, s in zip(axes, point, spacing, strict=True)]
        distance2 = squared[0][:, None, None] + squared[1][None, :, None] + squared[2][None, None, :]
        weights[index] = np.exp(-distance2 / (2.0 * reach_mm**2))
    return weights


def _like_the_organ(image: np.ndarray, organ: np.ndarray, local: np.ndarray, margin: float) -> np.ndarray:
    """Voxels whose intensity lies in the organ's own range here (else around the clicked voxels)."""
    values = image[organ] if organ.any() else image[tuple(local.T)]
    low, high = np.quantile(values.astype(np.float64), INTENSITY_QUANTILES)
    return (image >= low - margin) & (image <= high + margin)


def _logits(values: np.ndarray) -> np.ndarray:
    probability = _probabilities(values)
    eps = np.float32(1.0 / (1.0 + np.exp(LOGIT_LIMIT)))
    probability = np.clip(probability, eps, 1 - eps)
    return np.log(probability / (1 - probability))


def _probabilities(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values.astype(np.float32) / 255.0
    return values.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- the box's pieces
def _fit_inside(probability: np.ndarray, current: np.ndarray, class_id: int) -> np.ndarray:
    """The largest piece of P >= t (over background or the organ) that fills the box best."""
    allowed = (current == 0) | (current == class_id)
    best_score, best = -np.inf, np.zeros(current.shape, dtype=bool)
    volume = float(current.size)
    for level in BOX_LEVELS:
        mask = (probability >= level) & allowed
        pieces, count = ndimage.label(mask, structure=CONNECTIVITY)
        if count == 0:
            continue
        largest = pieces == 1 + int(np.argmax(np.bincount(pieces.ravel())[1:]))
        extent = bounding_box(largest)
        filled = np.prod([part.stop - part.start for part in extent]) / volume
        score = filled - BOX_TIE_PENALTY * abs(level - 0.5) / 0.5
        if score > best_score:
            best_score, best = score, largest
    return best


def _union(a: Box, b: Box) -> Box:
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- input checks
def _check_points(points, shape) -> np.ndarray:
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise EditError(f"points must be (z, y, x) voxel indices, got {points!r}") from None
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0:
        raise EditError(f"points must be one (z, y, x) index or a list of them, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise EditError("points must be finite voxel indices")
    rounded = np.rint(array).astype(np.int64)
    outside = (rounded < 0) | (rounded >= np.asarray(shape))
    if outside.any():
        bad = tuple(int(v) for v in rounded[outside.any(axis=1)][0])
        raise EditError(f"point {bad} lies outside the volume of shape {tuple(shape)}")
    return rounded


def check_probability_map(values: np.ndarray) -> None:
    """:class:`EditError` unless ``values`` is a probability map (see ``probability_map_problem``)."""
    problem = probability_map_problem(values)
    if problem is not None:
        raise EditError(problem)


def _check_volume(name: str, values, shape) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != tuple(shape):
        raise EditError(f"{name} has shape {array.shape}, the labels {tuple(shape)}")
    return array


def _check_box(box: Sequence[slice], shape) -> Box:
    if not isinstance(box, (tuple, list)) or len(box) != 3 or not all(isinstance(p, slice) for p in box):
        raise EditError("box must be 3 slices (z, y, x)")
    parts = []
    for axis, part, size in zip("zyx", box, shape, strict=True):
        start, stop, step = part.indices(size)
        if step != 1 or start >= stop:
            raise EditError(f"box holds no voxel along {axis} ({part} in a volume of {size})")
        parts.append(slice(start, stop))
    return tuple(parts)  # type: ignore[return-value]
