"""Checks shared by readers and writers: label maps, probability maps, and two volumes on one grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..volume import Geometry, Volume
from .errors import VolumeIOError

UINT8_MAX = int(np.iinfo(np.uint8).max)
UINT16_MAX = int(np.iinfo(np.uint16).max)


def check_label_map(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as uint8 (ids < 256) or uint16 label ids, or :class:`VolumeIOError` naming ``name``.

    Floats are accepted when every value is a whole number (label maps saved as float NIfTI).
    """
    values = np.asarray(array)
    if values.dtype == np.bool_:
        return values.astype(np.uint8)
    if values.dtype.kind == "f":
        _check_whole_numbers(values, name)
    elif values.dtype.kind not in "iu":
        raise VolumeIOError(name, f"a label map needs integer ids, got {values.dtype} voxels")
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = values.min(), values.max()
    if low < 0:
        raise VolumeIOError(name, f"label map has negative values (min {low:g}); ids must be 0 or positive")
    if high > UINT16_MAX:
        raise VolumeIOError(name, f"label map has ids above {UINT16_MAX} (max {high:g}); uint16 is the limit")
    return values.astype(np.uint8 if high <= UINT8_MAX else np.uint16, copy=False)


def _check_whole_numbers(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise VolumeIOError(name, "label map has NaN or infinite values; ids must be whole numbers")
    fractional = values != np.round(values)
    if fractional.any():
        # shortest exact text: 4.9999995 was shown as "e.g. 5", which reads as a whole number
        example = np.format_float_positional(values[fractional].flat[0], trim="-")
        problem = f"label map has non-integer values (e.g. {example}); ids must be whole numbers"
        raise VolumeIOError(name, problem)


# A scan holds hundreds of distinct values at least (CT in HU, MR intensities); a label map a few
# small whole numbers. Above this many distinct values an image is never taken for a label map.
LABEL_LIKE_MAX_VALUES = 64
_SLAB = 16  # slices looked at a time: no full-size copy of a large scan


def slabs_of(values: np.ndarray):
    """``values`` a few slices (first axis) at a time, as views: whole-volume counts without a
    full-size copy."""
    slabs = values.reshape(-1, *values.shape[-2:]) if values.ndim >= 2 else values.reshape(1, 1, -1)
    for start in range(0, slabs.shape[0], _SLAB):
        yield slabs[start : start + _SLAB]


def label_map_problem(array: np.ndarray) -> str | None:
    """Why ``array``, given as an image, looks like a label map (2 to 64 distinct whole numbers in
    0..255), or None. A label map taken for a scan (an edited or exported map saved beside its CT)
    would be trained on as an image of organ-shaped plateaus."""
    values = np.asarray(array)
    if values.size == 0 or values.dtype.kind not in "biuf":
        return None
    low, high = float(values.min()), float(values.max())  # NaN anywhere makes both NaN
    if not (low >= 0 and high <= UINT8_MAX):
        return None
    counts = np.zeros(UINT8_MAX + 1, np.int64)
    for slab in slabs_of(values):
        if slab.dtype.kind == "f" and not np.array_equal(slab, np.round(slab)):
            return None
        counts += np.bincount(slab.ravel().astype(np.intp), minlength=UINT8_MAX + 1)
        if np.count_nonzero(counts) > LABEL_LIKE_MAX_VALUES:
            return None
    found = np.flatnonzero(counts)
    if found.size < 2:  # a blank image is no label map either
        return None
    return f"looks like a label map, not a scan (its voxels hold only the whole numbers {_values(found)})"


def probability_map_problem(array: np.ndarray) -> str | None:
    """What keeps ``array`` from being a map as `cgs predict` writes them (uint8, 255 = 1.0, or
    floats in 0..1), or None. An image given in its place (HU, MR units) would be read as
    probabilities: a review queue of nonsense, a prompt that moves whole organs."""
    values = np.asarray(array)
    if values.dtype != np.uint8 and values.dtype.kind != "f":
        return f"{values.dtype} voxels: expected a probability map (uint8, 255 = 1.0, or floats in 0..1)"
    if values.dtype.kind == "f" and values.size:
        low, high = float(values.min()), float(values.max())  # NaN anywhere makes both NaN
        if not (low >= -1e-6 and high <= 1 + 1e-6):
            return (
                f"values {low:g}..{high:g} lie outside 0..1, so this is not a probability or "
                "disagreement map (an image?)"
            )
    return None


def check_same_grid(labels: Volume, image: Volume, name: str) -> None:
    """:class:`VolumeIOError` unless ``labels`` has the shape and geometry of ``image``."""
    raise_if_grids_differ(labels.shape, labels.geometry, image.shape, image.geometry, name, "label map")


def raise_if_grids_differ(
    shape: tuple[int, ...] | None,
    geometry: Geometry,
    reference_shape: tuple[int, ...] | None,
    reference_geometry: Geometry,
    name: str,
    what: str,
) -> None:
    """Shared by :func:`check_same_grid` and writers; a ``None`` shape is not compared."""
    differences = grid_differences(shape, geometry, reference_shape, reference_geometry)
    if differences:
        raise VolumeIOError(name, f"{what} geometry differs from its image ({'; '.join(differences)})")


def grid_differences(
    shape: tuple[int, ...] | None,
    geometry: Geometry,
    reference_shape: tuple[int, ...] | None,
    reference_geometry: Geometry,
) -> list[str]:
    """Human-readable differences, empty when the grids agree within the geometry tolerance."""
    differences = []
    if shape is not None and reference_shape is not None and tuple(shape) != tuple(reference_shape):
        differences.append(f"shape {_zyx(shape)} vs {_zyx(reference_shape)} (z,y,x)")
    if geometry.is_close(reference_geometry):
        return differences
    # One part at a time through Geometry.is_close, so the tolerances stay those of volume.py (the
    # others the reference's: the origin's tolerance depends on the voxel size).
    for part in ("spacing", "origin", "direction"):
        own, reference = getattr(geometry, part), getattr(reference_geometry, part)
        if not replace(reference_geometry, **{part: own}).is_close(reference_geometry):
            differences.append(f"{part} {_values(own)} vs {_values(reference)}")
    if not differences:  # close part by part, not together: name them all rather than pass
        differences += [
            f"{part} {_values(getattr(geometry, part))} vs {_values(getattr(reference_geometry, part))}"
            for part in ("spacing", "origin")
        ]
    return differences


def _zyx(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def _values(values) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
