"""Intensity normalisation, defined once and stored with every data set and model.

A :class:`Normalization` maps raw scanner intensities of one volume to float32 in [0, 1]. The
same object is written into the slice store (and from there into trained models), so that
inference applies exactly the transform the training images went through.

Modes
-----
``ct-window``
    Clip Hounsfield units to ``[lower, upper]`` and scale linearly to [0, 1]. A fixed window,
    not per-volume statistics, because HU are calibrated: the same tissue gives the same value
    on every scanner, and fixed windows keep it that way.
``mr-percentile``
    MR intensities have no absolute scale. Per volume, the ``p_low`` and ``p_high``
    percentiles map to 0 and 1 and the values are clipped. Percentiles, not min/max,
    so that a few hot voxels (flow artefacts, fat near coils) do not compress the tissue range.
``minmax``
    Per-volume min/max to [0, 1]. This is what the public 2D benchmark pipelines (ACDC
    SSL4MIS, the SegTHOR PNG export) did to their images. Use it to reproduce their scale on
    new raw volumes.
``identity``
    Cast to float32 only, for data that was normalised before it reached us.

Choice of the default CT window
-------------------------------
The default is the soft-tissue window, level 40 HU and width 400 HU, i.e. [-160, 240] HU.
The organs we segment in CT (heart, great vessels, oesophagus, parotids, brainstem, cord,
larynx) differ from their surroundings by only tens of HU. A 400 HU window gives each HU
1/400 of the output range, whereas a bone-inclusive window such as [-1000, 1000] would give
only a fifth of that contrast. Structures outside the window stay separable: air (trachea,
larynx lumen) clips to 0 and bone (mandible, vertebrae; ~700 HU on average) clips to 1, so
their shapes remain sharp, and fat (about -100 HU) stays inside the window, which keeps the
parotid, a gland embedded in fat, distinguishable. For bone-only targets, pass a bone
window, e.g. ``Normalization.ct_window(-200, 1300)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NORMALIZATION_MODES = ("ct-window", "mr-percentile", "identity", "minmax")

# guess_normalization: an array is taken for CT when its minimum is air-like and a
# sizeable share of voxels is air or lung. Every CT field of view contains air around
# the patient; MR magnitude images are never strongly negative.
CT_MIN_AT_MOST = -500.0
CT_LOW_HU = -200.0
CT_MIN_LOW_FRACTION = 0.05
GUESS_SAMPLE_VOXELS = 2_000_000


@dataclass(frozen=True)
class Normalization:
    """How raw intensities become float32 in [0, 1]; see the module docstring."""

    mode: str = "ct-window"
    window_center: float = 40.0
    window_width: float = 400.0
    p_low: float = 0.5
    p_high: float = 99.5

    def __post_init__(self) -> None:
        if self.mode not in NORMALIZATION_MODES:
            raise ValueError(f"unknown normalization mode {self.mode!r}; use one of {NORMALIZATION_MODES}")
        for name in ("window_center", "window_width", "p_low", "p_high"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"normalization {name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if self.window_width <= 0:
            raise ValueError(f"CT window width must be positive, got {self.window_width}")
        if not 0.0 <= self.p_low < self.p_high <= 100.0:
            raise ValueError(
                f"percentiles must satisfy 0 <= p_low < p_high <= 100, got {self.p_low}, {self.p_high}"
            )

    @classmethod
    def ct_window(cls, lower: float, upper: float) -> Normalization:
        """A CT window given by its HU bounds instead of level and width."""
        if not upper > lower:
            raise ValueError(f"CT window needs lower < upper, got [{lower}, {upper}]")
        return cls(mode="ct-window", window_center=(lower + upper) / 2.0, window_width=upper - lower)

    @property
    def lower(self) -> float:
        return self.window_center - self.window_width / 2.0

    @property
    def upper(self) -> float:
        return self.window_center + self.window_width / 2.0

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Normalised float32 copy of ``array``; the input is left untouched."""
        return self.slab_normalizer(array)(array)

    def slab_normalizer(self, array: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A function that normalises any part of ``array`` exactly as ``apply(array)`` would.

        The per-volume bounds (percentiles, min-max) are computed once here, so a predictor can
        normalise slice batch by slice batch instead of holding a float32 copy of the whole volume.
        """
        values = np.asarray(array)
        if values.dtype.kind == "f" and values.size and not _finite_in_float32(values):
            raise ValueError("cannot normalise an array that contains NaN or infinite values")
        bounds = None if self.mode == "identity" else self._bounds(values)

        def normalize(part: np.ndarray) -> np.ndarray:
            part = np.array(part, dtype=np.float32, copy=True)
            return part if bounds is None else _rescale_in_place(part, *bounds)

        return normalize

    def _bounds(self, values: np.ndarray) -> tuple[float, float]:
        if self.mode == "ct-window":
            return self.lower, self.upper
        if self.mode == "mr-percentile":
            return _percentiles(values.astype(np.float32, copy=False), self.p_low, self.p_high)
        return (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)

    def describe(self) -> str:
        if self.mode == "ct-window":
            return f"CT window [{self.lower:g}, {self.upper:g}] HU"
        if self.mode == "mr-percentile":
            return f"per-volume percentiles {self.p_low:g}-{self.p_high:g}"
        if self.mode == "minmax":
            return "per-volume min-max"
        return "identity (already normalised)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        if not isinstance(data, dict) or "mode" not in data:
            raise ValueError(f"a normalization needs at least a 'mode', got {data!r}")
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Normalization:
        return cls.from_dict(json.loads(text))


def guess_normalization(array: np.ndarray) -> Normalization:
    """Soft-tissue CT window for HU-like arrays, per-volume percentiles otherwise."""
    flat = np.asarray(array).ravel()
    if flat.size == 0:
        return Normalization(mode="mr-percentile")
    # A strided sample keeps this fast on 500 MB CTs; air fills large contiguous regions, so
    # the sampled fraction is representative.
    sample = flat[:: max(1, flat.size // GUESS_SAMPLE_VOXELS)].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    air_like = sample.size and sample.min() <= CT_MIN_AT_MOST
    if air_like and np.count_nonzero(sample < CT_LOW_HU) / sample.size >= CT_MIN_LOW_FRACTION:
        return Normalization(mode="ct-window")
    return Normalization(mode="mr-percentile")


def _finite_in_float32(values: np.ndarray) -> bool:
    """Finite, and still finite once cast to float32 (a float64 1e300 would become inf)."""
    if not np.isfinite(values).all():
        return False
    return values.dtype.itemsize <= 4 or float(np.abs(values).max()) <= float(np.finfo(np.float32).max)


def _percentiles(values: np.ndarray, p_low: float, p_high: float) -> tuple[float, float]:
    if not values.size:
        return 0.0, 0.0
    low, high = np.percentile(values, [p_low, p_high])
    return float(low), float(high)


def _rescale_in_place(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:  # a constant volume carries no contrast
        values[...] = 0.0
        return values
    values -= np.float32(low)
    values *= np.float32(1.0 / (high - low))
    np.clip(values, 0.0, 1.0, out=values)
    return values
