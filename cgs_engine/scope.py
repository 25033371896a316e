"""What a model was trained on, and a plain-words warning when a scan lies far from it.

A :class:`TrainingScope` records, from the raw training images (HU for CT, scanner units for
MR, before any normalisation):

``modality``
    ``"CT"`` or ``"MR"``, guessed from intensities (:func:`guess_modality`): CT holds air near
    -1000 HU (and fat below 0 HU); MR magnitude images are non-negative arbitrary units.
``body_region``
    Free text from whoever trains (``"head and neck"``); empty when nobody said.
``intensity``
    Percentiles 1/50/99 of the voxels inside the body, pooled over the training images.
``spacing_mm``
    The smallest and largest voxel spacing per axis (ITK x, y, z order).
``body_area_cm2`` and ``body_width_to_depth``
    Percentiles 10/50/90 over axial slices of the body cross-section (largest connected region
    above -500 HU for CT, above 10 % of the 99th percentile for MR, times the in-plane pixel
    area) and of its left-right width over its front-back depth.
``body_slices``
    The (area, width/depth) pairs of the training slices, quantised to 10 % area and 5 % ratio
    bins and kept once per bin: the region the model has seen, in a few kilobytes.
``field_mm``
    The smallest and largest extent of the axial slices (their larger side, in mm): the field
    of view the network learned organ sizes in (:mod:`cgs_engine.infer.field` pads smaller slices).

Why two numbers per slice and not the area alone: a head-and-neck CT runs from the head
(100-300 cm^2, deeper than wide) through the neck to the shoulders, which with the arms down
measure 450-1100 cm^2 and are 1.7-2.8 times as wide as deep. One OpenKBP scan (pt_38) holds
only shoulders, 740-1070 cm^2, larger than an abdomen (TotalSegmentator example, 665-750 cm^2),
so no area threshold separates them. An abdomen or chest with the arms up is 1.2-1.6 times as
wide as deep, a shape no head-and-neck slice of that size has. :func:`check_scope` therefore
asks what share of a scan's body volume lies in slices that resemble some training slice (area
within a factor 1.5 and width/depth within a factor 1.2, an ellipse in log space) and warns
below one half. Measured on the bundled model (6 training patients): every one of the 52 OpenKBP CTs has
at least 86 % (pt_51; all others at least 94 %), the TotalSegmentator abdominal CTs 0 % and
21 %, its MR 0 %.

:func:`check_scope` returns zero or more one-line warnings; it never refuses a scan. Voxel
spacing is recorded but not checked: inference resizes every slice to the model's input size,
so the spacing itself does not change what the network sees; the slice's extent in mm does, and a
slice smaller than the trained field is padded to it (:mod:`cgs_engine.infer.field`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cgs_engine.volume import Volume

SCOPE_VERSION = 1

# Modality guess (see guess_modality).
CT_AIR_HU = -500.0  # at or below: air or lung; also the CT body threshold
CT_MIN_AIR_SHARE = 0.01  # of all voxels: every CT field of view has air around the patient
CT_FAT_HU = -50.0  # a 0.5th percentile this low is fat or air in HU: MR is never this negative
MR_BODY_SHARE_OF_P99 = 0.1  # MR body threshold: 10 % of the 99th percentile

# Body cross-section measurement.
MEASURE_PIXEL_MM = 2.0  # in-plane sub-sampling: pixels are at least this big (and at most 2x)
OPENING_MM = 3.0  # morphological opening removes couch rails, tubes and other thin parts
MAX_MEASURED_SLICES = 160
MIN_BODY_AREA_CM2 = 20.0  # smaller regions (markers, couch fragments) are not a body slice
INTENSITY_SAMPLES_PER_VOLUME = 100_000

# Body-region check (see the module docstring for the measurements behind these).
AREA_BIN_LOG = 0.1
RATIO_BIN_LOG = 0.05
AREA_TOLERANCE = 1.5
RATIO_TOLERANCE = 1.2
MIN_RESEMBLING_SHARE = 0.5
# Slices padded out to the trained field keep the anatomy's size (cgs_engine.infer.field), but one
# covering less than this share of the smallest trained field shows too little of the body to place
# an organ: an 8 x 8 pixel, 37 mm patch of a neck CT came back with three organs labelled, unwarned.
MIN_FIELD_SHARE = 1 / 3

__all__ = [
    "ScanMeasurement",
    "ScopeMeter",
    "TrainingScope",
    "check_scope",
    "guess_modality",
    "measure_scan",
    "measure_scope",
]


@dataclass(frozen=True)
class TrainingScope:
    """What a model was trained on; :meth:`to_dict` is the JSON form stored in checkpoints."""

    modality: str = ""
    body_region: str = ""
    volumes: int = 0
    intensity: dict[str, Any] = field(default_factory=dict)
    spacing_mm: dict[str, list[float]] = field(default_factory=dict)
    body_area_cm2: dict[str, float] = field(default_factory=dict)
    body_width_to_depth: dict[str, float] = field(default_factory=dict)
    body_slices: list[list[float]] = field(default_factory=list)
    field_mm: dict[str, float] = field(default_factory=dict)  # min/max slice extent (larger side)
    version: int = SCOPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": int(self.version),
            "modality": str(self.modality),
            "body_region": str(self.body_region),
            "volumes": int(self.volumes),
            "intensity": dict(self.intensity),
            "spacing_mm": {key: [float(v) for v in values] for key, values in self.spacing_mm.items()},
            "body_area_cm2": {key: float(v) for key, v in self.body_area_cm2.items()},
            "body_width_to_depth": {key: float(v) for key, v in self.body_width_to_depth.items()},
            "body_slices": [[float(a), float(r)] for a, r in self.body_slices],
            **({"field_mm": {key: float(v) for key, v in self.field_mm.items()}} if self.field_mm else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainingScope:
        """The scope of a stored dict; unknown keys are ignored, malformed slice pairs dropped."""
        data = dict(data or {})
        slices = []
        for pair in data.get("body_slices") or []:
            try:
                area, ratio = (float(value) for value in pair)
            except (TypeError, ValueError):
                continue
            if np.isfinite(area) and np.isfinite(ratio) and area > 0 and ratio > 0:
                slices.append([area, ratio])
        return cls(
            modality=str(data.get("modality") or ""),
            body_region=str(data.get("body_region") or ""),
            volumes=int(data.get("volumes") or 0),
            intensity=dict(data.get("intensity") or {}),
            spacing_mm=dict(data.get("spacing_mm") or {}),
            body_area_cm2=dict(data.get("body_area_cm2") or {}),
            body_width_to_depth=dict(data.get("body_width_to_depth") or {}),
            body_slices=slices,
            field_mm=dict(data.get("field_mm") or {}),
            version=int(data.get("version") or SCOPE_VERSION),
        )

    @property
    def is_empty(self) -> bool:
        return self.modality not in ("CT", "MR") and not self.body_slices


@dataclass(frozen=True)
class ScanMeasurement:
    """One volume, measured: its modality guess and one (area, width/depth) pair per body slice."""

    modality: str
    spacing: tuple[float, float, float]
    areas_cm2: np.ndarray  # per body slice
    width_to_depth: np.ndarray  # per body slice, left-right width over front-back depth
    body_values: np.ndarray  # a sample of the intensities inside the body
    field_mm: float = 0.0  # the axial slices' larger side in mm

    @property
    def median_area_cm2(self) -> float:
        return float(np.median(self.areas_cm2)) if self.areas_cm2.size else 0.0


def guess_modality(values: np.ndarray) -> str:
    """``"CT"`` when the values hold air (>= 1 % at or below -500 HU) or fat-like negatives, else ``"MR"``."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        return "MR"
    air_share = np.count_nonzero(values <= CT_AIR_HU) / values.size
    lowest = float(np.percentile(values, 0.5))
    return "CT" if air_share >= CT_MIN_AIR_SHARE or lowest <= CT_FAT_HU else "MR"


def measure_scan(volume: Volume) -> ScanMeasurement:
    """Modality guess, body cross-sections and body intensities of one raw-intensity volume."""
    axial, width, depth = _oriented(volume)
    spacing = volume.geometry.spacing
    step_depth = max(1, int(MEASURE_PIXEL_MM // spacing[depth]))
    step_width = max(1, int(MEASURE_PIXEL_MM // spacing[width]))
    array = np.transpose(np.asarray(volume.array), (2 - axial, 2 - depth, 2 - width))
    field_mm = max(array.shape[1] * spacing[depth], array.shape[2] * spacing[width])
    step_z = max(1, int(np.ceil(array.shape[0] / MAX_MEASURED_SLICES)))
    array = np.asarray(array[::step_z, ::step_depth, ::step_width], dtype=np.float32)
    modality = guess_modality(array)
    pixel_depth, pixel_width = spacing[depth] * step_depth, spacing[width] * step_width
    if modality == "CT":
        threshold = CT_AIR_HU
    else:
        threshold = MR_BODY_SHARE_OF_P99 * float(np.percentile(array, 99)) if array.size else 0.0
    iterations = max(1, int(round(OPENING_MM / min(pixel_depth, pixel_width))))
    areas, ratios, values = [], [], []
    for image in array:
        body = _largest_region(image > threshold, iterations)
        if body is None:
            continue
        mask, (rows, cols) = body
        area = np.count_nonzero(mask) * pixel_depth * pixel_width / 100.0
        if area < MIN_BODY_AREA_CM2:
            continue
        areas.append(area)
        ratios.append(((cols.stop - cols.start) * pixel_width) / ((rows.stop - rows.start) * pixel_depth))
        values.append(image[mask])
    body_values = np.concatenate(values) if values else np.zeros(0, np.float32)
    if body_values.size > INTENSITY_SAMPLES_PER_VOLUME:
        pick = np.linspace(0, body_values.size - 1, INTENSITY_SAMPLES_PER_VOLUME).astype(np.int64)
        body_values = body_values[pick]
    return ScanMeasurement(
        modality=modality,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        areas_cm2=np.asarray(areas, dtype=np.float64),
        width_to_depth=np.asarray(ratios, dtype=np.float64),
        body_values=body_values,
        field_mm=float(field_mm),
    )


class ScopeMeter:
    """Collects the measurements of training volumes one at a time (no volume is kept)."""

    def __init__(self) -> None:
        self._scans: list[ScanMeasurement] = []

    def add(self, volume: Volume) -> ScanMeasurement:
        scan = measure_scan(volume)
        self._scans.append(scan)
        return scan

    def __len__(self) -> int:
        return len(self._scans)

    def scope(self, body_region: str = "", modality: str | None = None) -> TrainingScope:
        scans = self._scans
        if not scans:
            return TrainingScope(body_region=body_region, modality=modality or "")
        if modality is None:
            guesses = [scan.modality for scan in scans]
            modality = max(("CT", "MR"), key=guesses.count)
        areas = np.concatenate([scan.areas_cm2 for scan in scans])
        ratios = np.concatenate([scan.width_to_depth for scan in scans])
        values = np.concatenate([scan.body_values for scan in scans])
        spacings = np.array([scan.spacing for scan in scans])
        intensity: dict[str, Any] = {"unit": "HU" if modality == "CT" else "scanner units"}
        if values.size:
            p1, p50, p99 = np.percentile(values, [1, 50, 99])
            intensity.update(body_p1=_round(p1), body_p50=_round(p50), body_p99=_round(p99))
        return TrainingScope(
            modality=modality,
            body_region=body_region.strip(),
            volumes=len(scans),
            intensity=intensity,
            spacing_mm={
                "min": [round(float(s), 3) for s in spacings.min(axis=0)],
                "max": [round(float(s), 3) for s in spacings.max(axis=0)],
            },
            body_area_cm2=_percentiles(areas, 1),
            body_width_to_depth=_percentiles(ratios, 2),
            body_slices=_occupied_bins(areas, ratios),
            # rounded outwards: the smallest training scan must not fall below the recorded
            # minimum and be padded by a pixel in its own training bank
            field_mm={
                "min": math.floor(10 * min(scan.field_mm for scan in scans)) / 10,
                "max": math.ceil(10 * max(scan.field_mm for scan in scans)) / 10,
            },
        )


def measure_scope(
    volumes: Iterable[Volume], body_region: str = "", modality: str | None = None
) -> TrainingScope:
    """The scope of raw-intensity training volumes; ``modality`` defaults to the majority guess."""
    meter = ScopeMeter()
    for volume in volumes:
        meter.add(volume)
    return meter.scope(body_region, modality)


def check_scope(volume: Volume, scope: TrainingScope | Mapping[str, Any] | None) -> list[str]:
    """Zero or more one-line warnings, in plain words, where ``volume`` lies outside ``scope``.

    An empty scope (a checkpoint from before scopes were recorded) gives no warnings.
    """
    if not isinstance(scope, TrainingScope):
        scope = TrainingScope.from_dict(scope)
    if scope.is_empty:
        return []
    scan = measure_scan(volume)
    warnings = []
    if scope.modality in ("CT", "MR") and scan.modality != scope.modality:
        evidence = "air near -1000 HU" if scan.modality == "CT" else "no air near -1000 HU"
        warnings.append(
            f"this scan looks like {scan.modality} ({evidence}), the model was trained on "
            f"{scope.modality}: results are not to be trusted"
        )
    trained_field = float(scope.field_mm.get("min") or 0.0)
    if 0 < scan.field_mm < MIN_FIELD_SHARE * trained_field:
        warnings.append(
            f"its slices are {scan.field_mm:.0f} mm across, the model learnt to read "
            f"{trained_field:.0f}-{float(scope.field_mm.get('max') or trained_field):.0f} mm fields: "
            "too little of the body to place its organs, results are not to be trusted"
        )
    elif scope.body_slices and not scan.areas_cm2.size:
        warnings.append(
            f"no body cross-section of {MIN_BODY_AREA_CM2:.0f} cm^2 or more found in this scan: "
            "nothing like what the model was trained on (an empty result is expected)"
        )
    if scope.body_slices and scan.areas_cm2.size:
        share = resembling_share(scan, scope.body_slices)
        if share < MIN_RESEMBLING_SHARE:
            warnings.append(_region_warning(scan, scope, share))
    return warnings


def resembling_share(scan: ScanMeasurement, body_slices: list[list[float]]) -> float:
    """Share of the scan's body volume in slices whose size and shape some training slice has."""
    if not scan.areas_cm2.size:
        return 1.0
    seen = np.asarray(body_slices, dtype=np.float64).reshape(-1, 2)
    if not seen.size:
        return 1.0
    area_offset = np.log(scan.areas_cm2)[:, None] - np.log(seen[:, 0])[None, :]
    ratio_offset = np.log(scan.width_to_depth)[:, None] - np.log(seen[:, 1])[None, :]
    distance = (area_offset / np.log(AREA_TOLERANCE)) ** 2 + (ratio_offset / np.log(RATIO_TOLERANCE)) ** 2
    resembles = distance.min(axis=1) <= 1.0
    return float(np.sum(scan.areas_cm2 * resembles) / np.sum(scan.areas_cm2))


# ------------------------------------------------------------------------------ internals
def _oriented(volume: Volume) -> tuple[int, int, int]:
    """ITK axes (0 = x, 1 = y, 2 = z) closest to the world's foot-head, left-right and front-back."""
    direction = np.abs(volume.geometry.direction_matrix)  # columns: world direction of x, y, z
    axial = int(np.argmax(direction[2]))
    in_plane = [axis for axis in range(3) if axis != axial]
    width = max(in_plane, key=lambda axis: direction[0, axis])
    depth = next(axis for axis in in_plane if axis != width)
    return axial, width, depth


def _largest_region(mask: np.ndarray, iterations: int):
    """The largest connected region of ``mask`` after an opening, with its bounding box."""
    if not mask.any():
        return None
    opened = ndimage.binary_opening(mask, iterations=iterations)
    labels, count = ndimage.label(opened)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    box = ndimage.find_objects(labels, max_label=largest)[largest - 1]
    return labels == largest, box


def _percentiles(values: np.ndarray, digits: int) -> dict[str, float]:
    if not values.size:
        return {}
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {"p10": _round(p10, digits), "p50": _round(p50, digits), "p90": _round(p90, digits)}


def _occupied_bins(areas: np.ndarray, ratios: np.ndarray) -> list[list[float]]:
    if not areas.size:
        return []
    bins = np.unique(
        np.stack(
            [np.round(np.log(areas) / AREA_BIN_LOG), np.round(np.log(ratios) / RATIO_BIN_LOG)], axis=1
        ).astype(np.int64),
        axis=0,
    )
    return [
        [_round(np.exp(a * AREA_BIN_LOG), 1), _round(np.exp(r * RATIO_BIN_LOG), 3)] for a, r in bins.tolist()
    ]


def _region_warning(scan: ScanMeasurement, scope: TrainingScope, share: float) -> str:
    region = f"{scope.body_region} scans" if scope.body_region else "scans"
    area, shape = scope.body_area_cm2, scope.body_width_to_depth
    if {"p10", "p90"} <= area.keys() and {"p10", "p90"} <= shape.keys():
        region += (
            f" of {area['p10']:.0f}-{area['p90']:.0f} cm^2, {shape['p10']:.1f}-{shape['p90']:.1f} times as "
            f"wide as deep"
        )
    return (
        f"body cross-section {scan.median_area_cm2:.0f} cm^2 (median), "
        f"{float(np.median(scan.width_to_depth)):.1f} times as wide as deep, the model was trained on "
        f"{region} ({100 * share:.0f}% of this scan looks like them): this scan is likely outside the "
        f"model's body region"
    )


def _round(value: float, digits: int = 1) -> float:
    return round(float(value), digits)
