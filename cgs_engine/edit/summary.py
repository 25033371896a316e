"""What an edit would do to its organ, in the words a person checks before saying yes: voxels, mL, share.

Tools that delete whole pieces (keep the largest island, remove small islands) can take away a
good part of an organ at once (a right parotid split in two by the prediction lost a third of
its true voxels to *keep largest island*): the panel shows this summary with a preview first.
The same numbers say why a margin or smoothing changed nothing (less than one voxel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cgs_engine.edit.result import EditResult

CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class EditSummary:
    added: int  # voxels that became the organ
    removed: int  # voxels the organ lost
    removed_pieces: int  # connected pieces (26-connectivity) among the removed voxels
    organ_before: int  # the organ's voxels before the edit
    voxel_ml: float

    @property
    def removed_ml(self) -> float:
        return self.removed * self.voxel_ml

    @property
    def added_ml(self) -> float:
        return self.added * self.voxel_ml

    @property
    def removed_share(self) -> float:
        """Share of the organ's voxels the edit removes (0 for an empty organ)."""
        return self.removed / self.organ_before if self.organ_before else 0.0

    def removal_text(self, organ: str) -> str:
        """``"1,234 voxels (5.4 mL, 28 % of RightParotid) in 2 pieces"``."""
        pieces = f" in {self.removed_pieces} pieces" if self.removed_pieces > 1 else " in 1 piece"
        return (
            f"{self.removed:,} voxels ({self.removed_ml:.1f} mL, {100 * self.removed_share:.0f} % of {organ})"
            f"{pieces if self.removed else ''}"
        )


def summarise_edit(
    labels_before: np.ndarray, result: EditResult, class_id: int, spacing_zyx: Sequence[float]
) -> EditSummary:
    """Count what ``result`` adds to and removes from ``class_id`` compared with ``labels_before``."""
    before = np.asarray(labels_before)
    changed = np.asarray(result.changed, dtype=bool)
    was_organ = before[changed] == class_id
    removed_mask = np.zeros(before.shape, dtype=bool)
    removed_mask[changed] = was_organ
    pieces = 0
    if was_organ.any():
        box = ndimage.find_objects(removed_mask.astype(np.uint8))[0]
        _, pieces = ndimage.label(removed_mask[box], structure=CONNECTIVITY_26)
    return EditSummary(
        added=int(np.count_nonzero(~was_organ)),
        removed=int(np.count_nonzero(was_organ)),
        removed_pieces=int(pieces),
        organ_before=int(np.count_nonzero(before == class_id)),
        voxel_ml=float(np.prod(spacing_zyx)) / 1000.0,
    )


def removed_voxels(labels_before: np.ndarray, result: EditResult, class_id: int) -> np.ndarray:
    """Bool mask of the organ voxels the edit takes away (what a preview shows)."""
    before = np.asarray(labels_before)
    return np.asarray(result.changed, dtype=bool) & (before == class_id)


def less_than_a_voxel(amount_mm: float, spacing_zyx: Sequence[float]) -> bool:
    """Whether a margin or smoothing of ``amount_mm`` is below the in-plane voxel size (changes ~nothing)."""
    return amount_mm < max(float(s) for s in spacing_zyx[1:])
