"""What the retrain section needs from the CGS panel, read at the moment of use.

The section never holds panel state of its own: the selected image, its labels layer, the
review mask and the predictor are always the panel's current ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cgs.panel.prediction_layers import find_labels_layer


@dataclass
class PanelLink:
    """What the section needs from the CGS panel, as callables read at the moment of use."""

    viewer: Any
    image_layer: Callable[[], Any | None]
    labels_layer: Callable[[], Any | None]
    review_mask: Callable[[], np.ndarray | None]  # 2 = edited, 1 = accepted, for the selected image
    class_names: Callable[[], list[str]]  # what each id of those labels is (the model that made them)
    model_path: Callable[[], str | None]
    model_label: Callable[[], str]  # how the model selector names the current model
    use_model: Callable[[Path, str], None]  # select a checkpoint and swap it into the predictor
    presegment_untouched: Callable[[], Any | None]  # a fill-untouched pre-segmentation; its job
    prediction_finished: Any  # the panel's Signal(object)
    prediction_failed: Any  # the panel's Signal(str)


def link_to_panel(panel: Any) -> PanelLink:
    def review_mask() -> np.ndarray | None:
        image = panel.image_layer
        if image is None or not panel.tracks_image(image):
            return None
        return panel.review_mask()

    def labels_layer() -> Any | None:
        image = panel.image_layer
        return None if image is None else find_labels_layer(panel.viewer, image)

    def use_model(path: Path, label: str) -> None:
        panel.load_checkpoint(path, label=label)
        running = panel.running()
        predictor, checkpoint = panel.predictor, panel.checkpoint
        if (
            predictor is not None
            and checkpoint is not None
            and predictor.checkpoint is not checkpoint
            and not running
        ):
            predictor.swap(checkpoint)  # hot swap: same device, nothing rebuilt
        # while a pre-segmentation runs, the panel swaps it in at the start of the next one

    def presegment_untouched() -> Any | None:
        if panel.running():
            return None
        panel.fill_untouched_button.setChecked(True)
        return panel.presegment()

    return PanelLink(
        viewer=panel.viewer,
        image_layer=lambda: panel.image_layer,
        labels_layer=labels_layer,
        review_mask=review_mask,
        class_names=lambda: list(panel.class_names),
        model_path=lambda: panel.model_choice.value,
        model_label=lambda: panel.model_choice.current_choice or "the current model",
        use_model=use_model,
        presegment_untouched=presegment_untouched,
        prediction_finished=panel.prediction_finished,
        prediction_failed=panel.prediction_failed,
    )
