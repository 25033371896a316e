"""Which voxels the user has edited, robust to undo and redo.

A viewer reports each paint stroke (the voxels it touched) but not when a stroke is undone. So a
voxel counts as edited when a stroke touched it AND its label now differs from what the program
last wrote there (the baseline). Undoing a stroke restores the baseline value: the voxel drops
out of the edits by itself; redoing it brings it back. After each of its own writes (a
prediction, a restored session) the program starts a new tracker on the labels it wrote.

Edits of an earlier sitting (a restored session) are kept in the review state's own mask.
"""

from __future__ import annotations

import numpy as np

from cgs_engine.review.state import EDITED


class EditTracker:
    def __init__(self, labels: np.ndarray) -> None:
        self.baseline = np.array(labels, copy=True)
        self.touched = np.zeros(self.baseline.shape, dtype=bool)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.baseline.shape

    def touch(self, where: tuple, values: np.ndarray | None = None) -> None:
        """Record a stroke: ``where`` is 3 slices/plane indices (``values`` = which voxels of that
        box, None = all) or 3 index arrays, as napari's paint events report them."""
        if all(isinstance(part, (slice, int, np.integer)) for part in where):
            if values is None:
                self.touched[where] = True
            else:
                self.touched[where] |= np.asarray(values) != 0
            return
        self.touched[tuple(np.asarray(part) for part in where)] = True

    def continued(
        self, labels: np.ndarray, kept: np.ndarray, baseline: np.ndarray | None = None
    ) -> EditTracker:
        """The tracker after the program wrote ``labels`` everywhere except ``kept`` (a re-run that
        fills only untouched voxels): strokes on kept voxels stay the user's AND stay undoable.
        Frozen into the review state instead, a stroke undone after the re-run stayed 'edited by
        you' on voxels that were the model's again, and went into training as a correction.
        ``baseline``: this tracker's baseline in the ids of ``labels`` where the re-run renumbered
        the kept voxels (another model's classes); else the baseline as it is."""
        kept = np.asarray(kept, dtype=bool)
        earlier = self.baseline if baseline is None else np.asarray(baseline)
        following = EditTracker(labels)
        following.baseline[kept] = earlier[kept]  # the program's last write there is the older one
        following.touched = self.touched & kept
        return following

    def edited(self, labels: np.ndarray) -> np.ndarray:
        """Bool mask of the voxels the user has edited and not undone."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise ValueError(f"labels shape {labels.shape} differs from the tracked {self.shape}")
        changed = self.touched.copy()
        changed[changed] = labels[changed] != self.baseline[changed]
        return changed


def combined_review_mask(marks: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The review mask to save: EDITED where the user edited, else the review state's marks."""
    return np.where(edited, np.uint8(EDITED), np.asarray(marks, dtype=np.uint8))
