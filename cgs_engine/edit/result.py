"""What every edit tool returns: the new label map and the voxels it changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class EditResult:
    """``labels``: a new label map (the input is never modified); ``changed``: bool mask of the voxels
    whose label differs from the input (one undo step; the voxels to mark as reviewed)."""

    labels: np.ndarray
    changed: np.ndarray

    @property
    def changed_voxels(self) -> int:
        return int(np.count_nonzero(self.changed))

    def changed_ml(self, spacing_zyx: Sequence[float]) -> float:
        return self.changed_voxels * float(np.prod(spacing_zyx)) / 1000.0
