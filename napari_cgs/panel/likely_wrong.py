"""Per organ, how much of the pre-segmentation is likely wrong: a line under the review queue.

The figures are the engine's (``cgs_engine.review.likely_wrong``); they are only shown for a model
whose error model is calibrated, since the fallback score orders voxels but measures nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import QLabel

from cgs_engine.review.likely_wrong import organ_lines

SHOWN_ORGANS = 4  # the worst few; the tooltip lists them all


class LikelyWrongSummary(QLabel):
    def __init__(self, parent: Any | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setVisible(False)

    def show_estimate(self, errors: Any | None, class_names: Sequence[str]) -> None:
        lines = [] if errors is None else organ_lines(errors, list(class_names))
        self.setVisible(bool(lines))
        if not lines:
            self.clear()
            return
        shown = lines[:SHOWN_ORGANS] + (
            [f"… {len(lines) - SHOWN_ORGANS} more (hover)"] if len(lines) > SHOWN_ORGANS else []
        )
        self.setText("Likely wrong, worst first:\n" + "\n".join(f"  {line}" for line in shown))
        self.setToolTip(
            "Expected volume of wrong labels at each organ (organ voxels that should not be, and missed "
            "voxels next to it), from the model's error model, calibrated on the labeled patients it was "
            "trained and validated on; the "
            "estimated Dice is what the organ would likely score against a careful correction.\n\n"
            + "\n".join(lines)
        )
