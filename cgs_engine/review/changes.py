"""What a new prediction changed in a label map: voxels per class and a map of the changes.

Used after a model switch to show what the new model does differently on the same image.
``change_map`` codes each voxel: 0 unchanged, 1 background became an organ ("added"),
2 an organ became background ("removed"), 3 one organ became another ("relabelled").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNCHANGED, ADDED, REMOVED, RELABELLED = 0, 1, 2, 3
CHANGE_NAMES = ("unchanged", "added", "removed", "relabelled")


@dataclass(frozen=True)
class ClassChange:
    name: str
    gained: int  # voxels that are this class now and were something else
    lost: int  # voxels that were this class and are something else now


@dataclass(frozen=True)
class LabelChanges:
    changed: int
    voxels: int
    per_class: list[ClassChange]  # classes with at least one change, in class-id order

    @property
    def share(self) -> float:
        return self.changed / self.voxels if self.voxels else 0.0

    def describe(self) -> str:
        """One line, e.g. ``1,204 voxels changed (0.4%): Brainstem +310/-12, background +12/-310``."""
        if not self.changed:
            return "no voxel changed"
        parts = ", ".join(f"{c.name} +{c.gained:,}/-{c.lost:,}" for c in self.per_class)
        return f"{self.changed:,} voxels changed ({100 * self.share:.1f}%): {parts}"


def _checked_pair(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape:
        raise ValueError(f"label maps differ in shape: {before.shape} and {after.shape}")
    for array in (before, after):
        if array.dtype.kind not in "iub":
            raise ValueError(f"label maps must hold integer class ids, got {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError("label maps must not hold negative class ids")
    return before, after


def count_label_changes(before: np.ndarray, after: np.ndarray, class_names: Sequence[str]) -> LabelChanges:
    """Voxels whose class differs between ``before`` and ``after``, gained and lost per class.

    Ids without a name in ``class_names`` are reported as ``class <id>``.
    """
    before, after = _checked_pair(before, after)
    changed = before != after
    old, new = before[changed].astype(np.int64), after[changed].astype(np.int64)
    count = max(len(class_names), int(old.max(initial=0)) + 1, int(new.max(initial=0)) + 1)
    gained = np.bincount(new, minlength=count)
    lost = np.bincount(old, minlength=count)
    per_class = [
        ClassChange(class_names[i] if i < len(class_names) else f"class {i}", int(gained[i]), int(lost[i]))
        for i in range(count)
        if gained[i] or lost[i]
    ]
    return LabelChanges(changed=int(old.size), voxels=int(before.size), per_class=per_class)


def change_map(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """uint8 map of the same shape: UNCHANGED, ADDED, REMOVED or RELABELLED per voxel."""
    before, after = _checked_pair(before, after)
    codes = np.zeros(before.shape, np.uint8)
    changed = before != after
    codes[changed & (before == 0)] = ADDED
    codes[changed & (after == 0)] = REMOVED
    codes[changed & (before != 0) & (after != 0)] = RELABELLED
    return codes
