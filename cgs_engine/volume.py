"""Geometry and Volume value objects.

Axis conventions (the same as SimpleITK and nnU-Net):

* ``Volume.array`` is indexed ``[z, y, x]`` (slowest to fastest).
* ``Geometry.spacing``, ``Geometry.origin`` and the columns of ``Geometry.direction`` are
  in ITK's ``(x, y, z)`` order and in LPS physical millimetres, exactly as SimpleITK reports
  them. A voxel at index ``(i, j, k)`` (x, y, z) sits at
  ``origin + direction @ (spacing * (i, j, k))``.

Derived volumes (labels, probability maps, disagreement) are made with ``Volume.like`` so
that the geometry travels unchanged from reader to writer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

GEOMETRY_RTOL = 1e-5  # NIfTI stores spacing/origin as float32
GEOMETRY_ATOL = 1e-4  # mm; origin may be 0
# The origin's float32 rounding is 6e-8 of its size: 1e-5 of it let a grid one voxel (1 mm) off
# pass as the same at an origin of 2e5 mm (a prediction scored Dice 1.0 against a shifted reference),
# so 1e-6 of it, and never more than a tenth of the smallest voxel edge.
ORIGIN_RTOL = 1e-6
ORIGIN_VOXEL_FRACTION = 0.1


@dataclass(frozen=True)
class Geometry:
    """Voxel-to-world mapping of a 3D image (ITK / LPS conventions, x-y-z order)."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(o) for o in self.origin)
        direction = tuple(float(d) for d in np.asarray(self.direction, dtype=float).ravel())
        if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
            raise ValueError("geometry needs 3 spacings, 3 origin values and a 3x3 direction")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing must be positive and finite, got {spacing}")
        if not all(np.isfinite(origin)) or not all(np.isfinite(direction)):
            raise ValueError("origin and direction must be finite")
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    @property
    def direction_matrix(self) -> np.ndarray:
        """3x3 matrix whose columns are the world directions of the x, y, z voxel axes."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping (x, y, z) voxel indices to LPS world mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    def zyx_transform(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scale, translate, linear) for arrays indexed [z, y, x] with world axes reversed.

        This is what napari needs: its axes follow the array, so world coordinates are
        reported as (z, y, x) too.  ``linear`` is the direction matrix in that order.
        """
        reverse = np.eye(3)[::-1]
        linear = reverse @ self.direction_matrix @ reverse
        return np.array(self.spacing[::-1]), np.array(self.origin[::-1]), linear

    @classmethod
    def from_zyx_transform(cls, scale, translate, linear) -> Geometry:
        """Inverse of :meth:`zyx_transform`."""
        reverse = np.eye(3)[::-1]
        direction = reverse @ np.asarray(linear, dtype=float) @ reverse
        return cls(
            spacing=tuple(np.asarray(scale, dtype=float)[::-1]),
            origin=tuple(np.asarray(translate, dtype=float)[::-1]),
            direction=tuple(direction.ravel()),
        )

    def is_close(self, other: Geometry, rtol: float = GEOMETRY_RTOL, atol: float = GEOMETRY_ATOL) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, rtol=rtol, atol=0)
            and self._origin_close(other, min(rtol, ORIGIN_RTOL), atol)
            and np.allclose(self.direction, other.direction, rtol=0, atol=1e-5)
        )

    def _origin_close(self, other: Geometry, rtol: float, atol: float) -> bool:
        here, there = np.asarray(self.origin, float), np.asarray(other.origin, float)
        allowed = atol + np.minimum(rtol * np.abs(there), ORIGIN_VOXEL_FRACTION * min(self.spacing))
        return bool(np.all(np.abs(here - there) <= allowed))

    def to_dict(self) -> dict[str, list[float]]:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(spacing=data["spacing"], origin=data["origin"], direction=data["direction"])

    def describe(self) -> str:
        spacing = " x ".join(f"{s:g}" for s in self.spacing)
        return f"spacing {spacing} mm, origin {tuple(round(o, 3) for o in self.origin)}"


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D array indexed [z, y, x] with its geometry.

    ``kind`` is ``"image"`` for intensities, ``"labels"`` for integer label maps and
    ``"map"`` for derived per-voxel maps (probabilities, disagreement).
    """

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    kind: str = "image"
    source: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "labels", "map"):
            raise ValueError(f"unknown volume kind {self.kind!r}")
        if np.ndim(self.array) != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {np.shape(self.array)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def like(self, array: np.ndarray, kind: str) -> Volume:
        """A derived volume on the same grid (same geometry, same shape)."""
        if np.shape(array) != self.shape:
            raise ValueError(f"derived array shape {np.shape(array)} differs from volume shape {self.shape}")
        return Volume(array=array, geometry=self.geometry, kind=kind, source=self.source)
