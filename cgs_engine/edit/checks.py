"""Input checks shared by the edit tools; each failure is an :class:`EditError` of one line."""

from __future__ import annotations

import math

import numpy as np

from cgs_engine.errors import CGSError

AXES = (0, 1, 2)


class EditError(CGSError):
    """A segment-editor tool was given something it cannot work on."""


def check_labels(labels) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 3:
        raise EditError(f"labels must be a 3D [z, y, x] array, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise EditError(f"labels must hold integer class ids, got {array.dtype} voxels")
    return array


def check_class_id(class_id, labels: np.ndarray) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)):
        raise EditError(f"class id must be a whole number, got {class_id!r}")
    highest = int(np.iinfo(labels.dtype).max)
    if not 1 <= int(class_id) <= highest:
        raise EditError(f"class id {int(class_id)} is out of range 1..{highest} (0 is background)")
    return int(class_id)


def check_amount(name: str, value) -> float:
    """A margin, sigma or island size: a finite number >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EditError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise EditError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def check_spacing(spacing_zyx) -> tuple[float, float, float]:
    try:
        spacing = tuple(float(s) for s in spacing_zyx)
    except (TypeError, ValueError):
        raise EditError(f"spacing_zyx must be 3 numbers (mm), got {spacing_zyx!r}") from None
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise EditError(f"spacing_zyx must be 3 positive numbers (mm, z, y, x order), got {spacing_zyx!r}")
    return spacing  # type: ignore[return-value]


def check_within_volume(name: str, amounts_mm, shape, spacing_zyx) -> None:
    """A distance (margin, sigma) no longer than the volume's diagonal: anything beyond changes
    nothing more, and a blur that wide would allocate a kernel of that many voxels (1e9 mm: 30 GB)."""
    diagonal = math.sqrt(sum((n * d) ** 2 for n, d in zip(shape, spacing_zyx, strict=True)))
    largest = max(np.ravel(amounts_mm))
    if largest > diagonal:
        raise EditError(
            f"{name} {largest:g} mm is larger than the whole volume (its diagonal is {diagonal:.1f} mm)"
        )


def check_sigma(sigma_mm) -> tuple[float, float, float]:
    """One sigma for every axis, or one per axis (z, y, x)."""
    if np.ndim(sigma_mm) > 0:
        sigmas = tuple(check_amount("sigma_mm", s) for s in sigma_mm)
        if len(sigmas) != 3:
            raise EditError(f"sigma_mm must be one number or 3 (z, y, x), got {len(sigmas)}")
        return sigmas  # type: ignore[return-value]
    sigma = check_amount("sigma_mm", sigma_mm)
    return (sigma, sigma, sigma)


def check_axis(axis) -> int:
    if isinstance(axis, bool) or axis not in AXES:
        raise EditError(f"axis must be 0 (z), 1 (y) or 2 (x), got {axis!r}")
    return int(axis)
