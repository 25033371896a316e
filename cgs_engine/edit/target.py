"""The organ a tool edits and where it may change voxels; turns a proposed organ mask into a result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgs_engine.edit.boxes import Box, bounding_box, intersect, within
from cgs_engine.edit.checks import EditError, check_class_id, check_labels
from cgs_engine.edit.result import EditResult


@dataclass(frozen=True, eq=False)
class EditTarget:
    labels: np.ndarray
    class_id: int
    organ: np.ndarray  # bool, labels == class_id
    organ_box: Box | None  # None: the organ has no voxel
    region: np.ndarray | None  # bool mask of where voxels may change; None: anywhere in region_box
    region_box: Box | None  # None: the region is empty

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape  # type: ignore[return-value]

    @property
    def nothing_to_do(self) -> bool:
        return self.organ_box is None or self.region_box is None

    def unchanged(self) -> EditResult:
        return EditResult(self.labels.copy(), np.zeros(self.shape, dtype=bool))

    def apply(self, proposed: np.ndarray, box: Box) -> EditResult:
        """The organ becomes ``proposed`` (its mask over ``box``) where the region allows; outside
        ``box`` it stays. Only voxels of this organ are removed and only background voxels added."""
        inner = None if self.region_box is None else intersect(box, self.region_box)
        if inner is None:
            return self.unchanged()
        proposed = proposed[within(inner, box)]
        current = self.labels[inner]
        organ = current == self.class_id
        removed = organ & ~proposed
        added = proposed & ~organ & (current == 0)
        if self.region is not None:
            allowed = self.region[inner]
            removed &= allowed
            added &= allowed
        labels = self.labels.copy()
        view = labels[inner]
        view[removed] = 0
        view[added] = self.class_id
        changed = np.zeros(self.shape, dtype=bool)
        changed[inner] = removed | added
        return EditResult(labels, changed)


def edit_target(labels, class_id, region=None) -> EditTarget:
    array = check_labels(labels)
    class_id = check_class_id(class_id, array)
    mask, region_box = _region(region, array.shape)
    organ = array == class_id
    return EditTarget(array, class_id, organ, bounding_box(organ), mask, region_box)


def region_mask(region, shape: tuple[int, ...]) -> np.ndarray | None:
    """``region`` (3 slices or a bool mask, checked as every tool checks it) as a bool mask; None
    for the whole volume."""
    if region is None:
        return None
    mask, box = _region(region, shape)
    if mask is not None:
        return mask
    mask = np.zeros(shape, bool)
    if box is not None:
        mask[box] = True
    return mask


def _region(region, shape: tuple[int, ...]) -> tuple[np.ndarray | None, Box | None]:
    if region is None:
        return None, tuple(slice(0, size) for size in shape)  # type: ignore[return-value]
    if isinstance(region, (tuple, list)):
        if len(region) != 3 or not all(isinstance(part, slice) for part in region):
            raise EditError("region must be 3 slices (z, y, x) or a boolean mask of the labels' shape")
        parts = []
        for part, size in zip(region, shape, strict=True):
            start, stop, step = part.indices(size)
            if step != 1:
                raise EditError(f"region slices must have step 1, got {part}")
            if start >= stop:
                return None, None
            parts.append(slice(start, stop))
        return None, tuple(parts)  # type: ignore[return-value]
    mask = np.asarray(region)
    if mask.shape != tuple(shape):
        raise EditError(f"region mask shape {mask.shape} differs from the labels' shape {tuple(shape)}")
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "iu":
            raise EditError(f"region mask must be boolean, got {mask.dtype} voxels")
        mask = mask != 0
    return mask, bounding_box(mask)
