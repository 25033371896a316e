"""Regions worth a human look: connected blobs of specialist disagreement or low generalist confidence.

Maps may be uint8 (255 = 1.0, as ``cgs predict --maps`` writes them) or floats in [0, 1].

A voxel is *uncertain* when

* its disagreement is >= ``threshold``, or
* ``confidence`` is given, the generalist's top probability is < ``confidence_threshold``, and the
  voxel is plausibly near an organ: ``labels != 0`` there, or the disagreement is above 0. (Low
  confidence deep in the background of a CT is common and uninteresting, so it alone does not count.)

Uncertain voxels are grouped into 3D connected components with 26-connectivity (voxels touching by a
face, edge or corner belong together), so a thin oblique sliver of disagreement stays one region.
With specialist maps (and ``split_by_organ``, the default) a component never crosses from voxels
whose likeliest organ (the specialist with the highest "mine" value) is one organ to voxels of
another: disagreement along the borders of touching organs (mandible, parotids) would otherwise
join into one blob of 90 mL that no one can review; split, each organ's border is its own region.
Components smaller than ``min_voxels`` are dropped; the rest are ranked by ``mass`` (descending,
then larger first) and numbered 1..n in that order.

``mass`` is the sum of the disagreement over the region in [0, 1] units. For a region found only
through low confidence (``source == "low-confidence"``) it is the sum of ``1 - confidence``
instead, so such regions still rank by how uncertain they are.

With a *likely-wrong* map (``likely_wrong``: the calibrated probability that a voxel's label is
wrong, from ``cgs_engine.review.likely_wrong``) the uncertain voxels are those where it is >=
``wrong_threshold`` instead, a region's ``mass`` is its expected number of wrong voxels and
``likely_wrong_ml`` their volume, and the queue ranks by that: the disagreement map only sees
where the heads contradict each other, whereas most of a model's errors are organ voxels it
missed with every head agreeing on background (see ``error_features``).

All per-region statistics come from the voxels of the mask only (gathered once, then summed with
``np.bincount``), so the cost is one pass over each full array plus work proportional to the
number of uncertain voxels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

MAX_LIKELY_CLASSES = 3
UINT8_ONE = 255.0
SOURCES = ("disagreement", "low-confidence", "both", "likely-wrong")
# Calibrated P(wrong) above which a voxel joins a region; chosen on the bundled model's training
# patients (`bench/review_recall.py --split labeled_train --in-sample --wrong-threshold 0.05 0.1
# 0.2 0.3`): 0.1 is the one whose top 10 regions beat the disagreement queue on both the share of
# errors (0.82 vs 0.74) and precision (0.32 vs 0.28); 0.3 held 0.38. The error model is fitted
# where the model errs least (its training patients), so on new patients its P(wrong) runs low.
WRONG_THRESHOLD = 0.1
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Region:
    id: int
    bbox: tuple[slice, slice, slice]  # z, y, x; stop exclusive
    centroid: tuple[float, float, float]  # voxel index z, y, x (mean of the region's voxels)
    voxels: int
    volume_ml: float
    mass: float
    mean_disagreement: float
    likely_classes: tuple[int, ...]  # class ids, most likely first
    source: str  # "disagreement" | "low-confidence" | "both" | "likely-wrong"
    likely_wrong_ml: float = 0.0  # expected volume of wrong labels in the region (likely-wrong map only)

    def __hash__(self) -> int:  # slices are unhashable before Python 3.12
        return hash((self.id, tuple((s.start, s.stop) for s in self.bbox), self.voxels, self.mass))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "bbox": [[s.start, s.stop] for s in self.bbox],
            "centroid": list(self.centroid),
            "voxels": self.voxels,
            "volume_ml": self.volume_ml,
            "mass": self.mass,
            "mean_disagreement": self.mean_disagreement,
            "likely_classes": list(self.likely_classes),
            "source": self.source,
            "likely_wrong_ml": self.likely_wrong_ml,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        bbox = tuple(slice(int(start), int(stop)) for start, stop in data["bbox"])
        if len(bbox) != 3:
            raise ValueError(f"a region bbox needs 3 [start, stop] pairs, got {data['bbox']!r}")
        source = str(data["source"])
        if source not in SOURCES:
            raise ValueError(f"unknown region source {source!r}")
        return cls(
            id=int(data["id"]),
            bbox=bbox,  # type: ignore[arg-type]
            centroid=tuple(float(c) for c in data["centroid"]),  # type: ignore[arg-type]
            voxels=int(data["voxels"]),
            volume_ml=float(data["volume_ml"]),
            mass=float(data["mass"]),
            mean_disagreement=float(data["mean_disagreement"]),
            likely_classes=tuple(int(c) for c in data["likely_classes"]),
            source=source,
            likely_wrong_ml=float(data.get("likely_wrong_ml", 0.0)),
        )


def unit_scale(array: np.ndarray, what: str = "map") -> float:
    """The factor turning ``array`` values into [0, 1] units: 1/255 for uint8, 1 for floats."""
    if array.dtype == np.uint8:
        return 1.0 / UINT8_ONE
    if array.dtype.kind == "f":
        return 1.0
    raise ValueError(f"{what} must be uint8 (255 = 1.0) or float in [0, 1], got {array.dtype}")


def _cutoff(array: np.ndarray, threshold: float) -> float:
    """``threshold`` in the array's own units; for uint8, the smallest stored value that reaches it."""
    if array.dtype == np.uint8:
        return math.ceil(threshold * UINT8_ONE - 1e-6)
    return threshold


def slice_profile(disagreement: np.ndarray, axis: int = 0) -> np.ndarray:
    """Disagreement mass (sum in [0, 1] units) of every slice along ``axis``, as float64."""
    scale = unit_scale(disagreement, "disagreement")
    others = tuple(a for a in range(disagreement.ndim) if a != axis % disagreement.ndim)
    accumulator = np.int64 if disagreement.dtype == np.uint8 else np.float64
    return disagreement.sum(axis=others, dtype=accumulator) * scale


def busiest_slices(profile: np.ndarray, count: int = 5) -> list[int]:
    """Indices of the ``count`` slices with the most mass, busiest first (empty slices left out)."""
    order = np.argsort(-profile, kind="stable")[:count]
    return [int(i) for i in order if profile[i] > 0]


def component_mask(component_map: np.ndarray, region: Region) -> np.ndarray:
    """Boolean mask (full shape) of exactly the voxels of ``region`` in ``component_map``."""
    mask = np.zeros(component_map.shape, dtype=bool)
    mask[region.bbox] = component_map[region.bbox] == region.id
    return mask


def find_regions(
    disagreement: np.ndarray,
    labels: np.ndarray | None = None,
    specialist_maps: dict[int, np.ndarray] | None = None,
    confidence: np.ndarray | None = None,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    threshold: float = 0.5,
    confidence_threshold: float = 0.6,
    min_voxels: int = 5,
    max_regions: int = 200,
    split_by_organ: bool = True,
    *,
    likely_wrong: np.ndarray | None = None,
    wrong_threshold: float = WRONG_THRESHOLD,
) -> list[Region]:
    """Ranked uncertain regions, most uncertain first; see the module docstring for the rules."""
    regions, _ = find_regions_with_map(
        disagreement,
        labels,
        specialist_maps,
        confidence,
        spacing_zyx,
        threshold,
        confidence_threshold,
        min_voxels,
        max_regions,
        split_by_organ,
        likely_wrong=likely_wrong,
        wrong_threshold=wrong_threshold,
    )
    return regions


def find_regions_with_map(
    disagreement: np.ndarray,
    labels: np.ndarray | None = None,
    specialist_maps: dict[int, np.ndarray] | None = None,
    confidence: np.ndarray | None = None,
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0),
    threshold: float = 0.5,
    confidence_threshold: float = 0.6,
    min_voxels: int = 5,
    max_regions: int = 200,
    split_by_organ: bool = True,
    *,
    likely_wrong: np.ndarray | None = None,
    wrong_threshold: float = WRONG_THRESHOLD,
) -> tuple[list[Region], np.ndarray]:
    """:func:`find_regions` plus an int32 map holding each kept region's id on its voxels (0 elsewhere)."""
    _check_inputs(disagreement, labels, specialist_maps, confidence, spacing_zyx, likely_wrong)
    _check_settings(threshold, confidence_threshold, min_voxels, max_regions)
    if not 0 < wrong_threshold <= 1:
        raise ValueError(f"wrong_threshold must be in (0, 1], got {wrong_threshold}")
    high = disagreement >= _cutoff(disagreement, threshold)
    mask = _uncertain(
        high, disagreement, labels, confidence, confidence_threshold, likely_wrong, wrong_threshold
    )
    if split_by_organ and specialist_maps:
        component_map, count = _components_per_organ(mask, specialist_maps)
    else:
        component_map, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    component_map = component_map.astype(np.int32, copy=False)
    if count == 0:
        return [], component_map

    # Work on the uncertain voxels only: their flat positions and component ids.
    positions = np.flatnonzero(mask)
    del mask
    stats = _component_stats(positions, component_map, count, high, disagreement, confidence, likely_wrong)
    kept = _ranked(stats, min_voxels, max_regions)

    new_id = np.zeros(count + 1, dtype=np.int32)
    new_id[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    renumbered = new_id[stats.ids]
    component_map.ravel()[positions] = renumbered  # dropped components become 0
    if len(kept) == 0:
        return [], component_map
    in_kept = renumbered > 0
    positions, renumbered = positions[in_kept], renumbered[in_kept]
    likely = _likely_classes(positions, renumbered, len(kept), specialist_maps, labels)
    centroids = _centroids(positions, renumbered, component_map.shape, len(kept))
    regions = _regions(kept, stats, component_map, centroids, likely, spacing_zyx, likely_wrong is not None)
    return regions, component_map


def _uncertain(high, disagreement, labels, confidence, confidence_threshold, likely_wrong, wrong_threshold):
    """The uncertain voxels (see the module docstring): ``high`` disagreement, or low confidence near an
    organ, or, given a likely-wrong map, its voxels above ``wrong_threshold`` instead."""
    if likely_wrong is not None:
        return likely_wrong >= _cutoff(likely_wrong, wrong_threshold)
    if confidence is not None:
        low_confidence = confidence < _cutoff(confidence, confidence_threshold)
        near_organ = disagreement > 0 if labels is None else (labels != 0) | (disagreement > 0)
        return high | (low_confidence & near_organ)
    return high


@dataclass(frozen=True)
class _Stats:
    """Per component id (index 0 unused): voxel counts and masses, summed over the uncertain voxels."""

    ids: np.ndarray  # the component id of each uncertain voxel
    sizes: np.ndarray
    dis_mass: np.ndarray
    high_count: np.ndarray
    low_only_count: np.ndarray
    mass: np.ndarray


def _component_stats(positions, component_map, count, high, disagreement, confidence, likely_wrong) -> _Stats:
    ids = component_map.ravel()[positions]
    sizes = np.bincount(ids, minlength=count + 1)
    dis_mass = np.bincount(ids, weights=_unit_values(disagreement, positions), minlength=count + 1)
    high_count = np.bincount(ids[high.ravel()[positions]], minlength=count + 1)
    if confidence is not None:
        doubt = 1.0 - _unit_values(confidence, positions)
        doubt_mass = np.bincount(ids, weights=doubt, minlength=count + 1)
    else:
        doubt_mass = np.zeros(count + 1)
    mass = np.where(high_count > 0, dis_mass, doubt_mass)
    if likely_wrong is not None:
        mass = np.bincount(ids, weights=_unit_values(likely_wrong, positions), minlength=count + 1)
    return _Stats(ids, sizes, dis_mass, high_count, sizes - high_count, mass)


def _ranked(stats: _Stats, min_voxels: int, max_regions: int) -> np.ndarray:
    """The ids of the components kept, best first."""
    sizes, mass = stats.sizes, stats.mass
    candidates = np.flatnonzero(sizes >= min_voxels)
    candidates = candidates[candidates > 0]
    # Rank: mass descending, then size descending, then scan order (component id) for determinism.
    order = np.lexsort((candidates, -sizes[candidates], -mass[candidates]))
    return candidates[order][:max_regions]


def _regions(kept, stats: _Stats, component_map, centroids, likely, spacing_zyx, wrong: bool) -> list[Region]:
    """One :class:`Region` per kept component, numbered 1..n in ``kept``'s order."""
    boxes = ndimage.find_objects(component_map, max_label=len(kept))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    regions = []
    for index, old in enumerate(kept):
        region_id = index + 1
        size, mass = int(stats.sizes[old]), float(stats.mass[old])
        source = (
            "likely-wrong" if wrong else _source(int(stats.high_count[old]), int(stats.low_only_count[old]))
        )
        regions.append(
            Region(
                id=region_id,
                bbox=tuple(slice(int(s.start), int(s.stop)) for s in boxes[index]),  # type: ignore[arg-type]
                centroid=tuple(float(c) for c in centroids[region_id]),  # type: ignore[arg-type]
                voxels=size,
                volume_ml=size * voxel_ml,
                mass=mass,
                mean_disagreement=float(stats.dis_mass[old] / stats.sizes[old]),
                likely_classes=likely[region_id],
                source=source,
                likely_wrong_ml=mass * voxel_ml if wrong else 0.0,
            )
        )
    return regions


def _components_per_organ(mask: np.ndarray, specialist_maps: dict[int, np.ndarray]) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask`` that never join voxels of different likeliest organs.

    The likeliest organ of a voxel is the specialist map with the highest value there (ties: the
    lower class id). Only the bounding box of the mask is visited, with two box-sized work arrays.
    """
    component_map = np.zeros(mask.shape, dtype=np.int32)
    boxes = ndimage.find_objects(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return component_map, 0
    box = boxes[0]
    class_ids = sorted(specialist_maps)
    best = specialist_maps[class_ids[0]][box].astype(np.float32)
    owner = np.zeros(best.shape, dtype=np.int16)
    for index, class_id in enumerate(class_ids[1:], start=1):
        values = specialist_maps[class_id][box].astype(np.float32)
        better = values > best
        owner[better] = index
        np.maximum(best, values, out=best)
    del best
    inside, target, count = mask[box], component_map[box], 0
    for index in range(len(class_ids)):
        part, found = ndimage.label(inside & (owner == index), structure=CONNECTIVITY_26)
        if found:
            labelled = part > 0
            target[labelled] = part[labelled] + count
            count += found
    return component_map, count


def _unit_values(array: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The values at flat ``positions`` in [0, 1] units, as float64."""
    return array.ravel()[positions].astype(np.float64) * unit_scale(array)


def _source(high_voxels: int, low_confidence_only_voxels: int) -> str:
    if high_voxels and low_confidence_only_voxels:
        return "both"
    return "disagreement" if high_voxels else "low-confidence"


def _check_inputs(disagreement, labels, specialist_maps, confidence, spacing_zyx, likely_wrong=None) -> None:
    if disagreement.ndim != 3:
        raise ValueError(f"disagreement must be a 3D [z, y, x] array, got shape {disagreement.shape}")
    maps = {"disagreement": disagreement, "confidence": confidence, "likely_wrong": likely_wrong}
    maps.update({f"specialist map {k}": v for k, v in (specialist_maps or {}).items()})
    for name, array in [*maps.items(), ("labels", labels)]:
        if array is None:
            continue
        if name != "labels":
            unit_scale(array, name)
        if array.shape != disagreement.shape:
            raise ValueError(f"{name} shape {array.shape} differs from disagreement {disagreement.shape}")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise ValueError(f"spacing_zyx needs 3 positive values, got {spacing_zyx}")


def _check_settings(threshold: float, confidence_threshold: float, min_voxels: int, max_regions: int) -> None:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not 0 < confidence_threshold <= 1:
        raise ValueError(f"confidence_threshold must be in (0, 1], got {confidence_threshold}")
    if min_voxels < 1 or max_regions < 1:
        raise ValueError(f"min_voxels and max_regions must be at least 1, got {min_voxels} and {max_regions}")


def _centroids(positions: np.ndarray, ids: np.ndarray, shape: tuple[int, ...], count: int) -> np.ndarray:
    """Row ``id`` holds the mean (z, y, x) index of that region's voxels; row 0 is unused."""
    _, height, width = shape
    z, within_slice = np.divmod(positions, height * width)
    y, x = np.divmod(within_slice, width)
    sizes = np.bincount(ids, minlength=count + 1).astype(np.float64)
    sizes[0] = 1.0
    columns = [np.bincount(ids, weights=axis_index, minlength=count + 1) / sizes for axis_index in (z, y, x)]
    return np.stack(columns, axis=1)


def _likely_classes(
    positions: np.ndarray,
    ids: np.ndarray,
    count: int,
    specialist_maps: dict[int, np.ndarray] | None,
    labels: np.ndarray | None,
) -> list[tuple[int, ...]]:
    """Per region id (index 0 unused): class ids by specialist "mine" mass, else by label voxel count.

    ``ids`` are the region ids (all > 0) of the voxels at ``positions``. A region where every
    specialist says 0 falls back to the label histogram; classes with no evidence at all are left
    out, so the tuple may be shorter than three or empty.
    """
    result: list[tuple[int, ...]] = [() for _ in range(count + 1)]
    if specialist_maps:
        class_ids = np.array(sorted(specialist_maps), dtype=np.int64)
        scores = np.stack(
            [
                np.bincount(ids, weights=_unit_values(specialist_maps[c], positions), minlength=count + 1)
                for c in class_ids
            ],
            axis=1,
        )
        for region_id in range(1, count + 1):
            result[region_id] = _top_classes(class_ids, scores[region_id])
    if labels is not None:
        values, inverse = np.unique(labels.ravel()[positions], return_inverse=True)
        histogram = np.bincount(ids * len(values) + inverse.ravel(), minlength=(count + 1) * len(values))
        histogram = histogram.reshape(count + 1, len(values))
        histogram[:, values == 0] = 0
        for region_id in range(1, count + 1):
            if not result[region_id]:
                result[region_id] = _top_classes(values.astype(np.int64), histogram[region_id])
    return result


def _top_classes(class_ids: np.ndarray, scores: np.ndarray) -> tuple[int, ...]:
    order = np.argsort(-scores, kind="stable")[:MAX_LIKELY_CLASSES]
    return tuple(int(class_ids[i]) for i in order if scores[i] > 0)
