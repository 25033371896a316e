"""A correction that deletes whole pieces of an organ is shown before it is written.

*Keep largest island* and *Remove islands* can take away a good part of an organ in one click
(a right parotid that the prediction split in two: Dice 0.575 -> 0.411). Their result is first
drawn in a preview layer, the voxels that would go filled in white, with the slice holding most
of them on screen; *Apply* writes it (one undo step), *Discard* leaves the labels as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from cgs_engine.edit.summary import less_than_a_voxel, removed_voxels, summarise_edit
from napari_cgs._layers import KIND_KEY, labels_kwargs_like, same_layer, shown_as
from napari_cgs.panel.fit import breakable
from napari_cgs.panel.prediction_layers import SEPARATOR

PREVIEWED_TOOLS = ("keep-largest", "remove-islands")
REMOVED_COLOUR = "#ffffff"
PREVIEW_OPACITY = 0.8


def preview_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}preview"


class ToolPreview(QWidget):
    """One pending edit: its description, Apply and Discard. Hidden while nothing is pending."""

    def __init__(
        self, viewer: Any, on_closed: Callable[[], Any] | None = None, parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.viewer = viewer
        self._on_closed = on_closed  # called after Apply or Discard
        self._apply: Callable[[], Any] | None = None
        self._layer_name: str | None = None
        self._layer: Any | None = None  # the preview layer, followed as an object: renamed with its image
        self._image: Any | None = None
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setStyleSheet("color: #ffd27f;")
        self.text.setToolTip("What the correction would remove, drawn in white in the viewer.")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Write this correction to the labels (Ctrl+Z undoes it).")
        self.apply_button.clicked.connect(lambda *_: self.apply())
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Leave the labels as they are.")
        self.discard_button.clicked.connect(lambda *_: self.discard())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text)
        row = QHBoxLayout()
        row.addWidget(self.apply_button)
        row.addWidget(self.discard_button)
        layout.addLayout(row)
        self.setVisible(False)

    @property
    def pending(self) -> bool:
        return self._apply is not None

    def offer(self, image_layer: Any, text: str, removed: np.ndarray, apply: Callable[[], Any]) -> None:
        """Show ``removed`` (bool, the image's shape) in the preview layer and wait for Apply or Discard."""
        self.discard()
        self._apply = apply
        self._layer_name = preview_layer_name(image_layer)
        layer = self._layer = self._show_layer(image_layer, removed.astype(np.uint8))
        self._image = image_layer
        slices = np.count_nonzero(removed, axis=(1, 2))
        if slices.any():  # the slice that loses most, on screen
            z = int(np.argmax(slices))
            _, height, width = removed.shape
            world = image_layer.data_to_world((z, (height - 1) / 2, (width - 1) / 2))
            self.viewer.dims.set_point(0, world[0])
        self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))
        self.text.setText(breakable(text))
        self.setVisible(True)

    def is_for(self, image_layer: Any) -> bool:
        """Whether the change waiting for Apply was computed on ``image_layer``'s labels."""
        return image_layer is not None and self._image is not None and same_layer(self._image, image_layer)

    def apply(self) -> Any:
        apply, self._apply = self._apply, None
        self._clear()
        return None if apply is None else apply()

    def discard(self) -> None:
        self._apply = None
        self._clear()

    def _clear(self) -> None:
        # looked up as an object: the panel renames it when its image is renamed
        shown = None if self._layer is None else shown_as(self.viewer, self._layer)
        if shown is not None:
            self.viewer.layers.remove(shown)
        self._layer_name = self._layer = self._image = None
        was_shown = self.isVisibleTo(self.parentWidget()) if self.parentWidget() else self.isVisible()
        self.setVisible(False)
        if was_shown and self._on_closed is not None:
            self._on_closed()

    def _show_layer(self, image_layer: Any, data: np.ndarray) -> Any:
        kwargs = labels_kwargs_like(image_layer, name=self._layer_name)
        kwargs["metadata"][KIND_KEY] = "preview"
        active = self.viewer.layers.selection.active  # the labels layer: the brush stays on it
        layer = self.viewer.add_labels(data, opacity=PREVIEW_OPACITY, **kwargs)
        if active is not None:
            self.viewer.layers.selection.active = active
        layer.colormap = DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", 1: REMOVED_COLOUR}
        )
        layer.editable = False
        return layer


# ------------------------------------------------------------------ what the worker runs and what it says
def run_and_summarise(run_tool: Callable, tool: str, labels: np.ndarray, class_id: int, spacing_zyx, *args):
    """``run_tool`` on the worker thread, with the summary a person checks (and the preview's mask)."""

    result = run_tool(tool, labels, class_id, spacing_zyx, *args)
    summary = summarise_edit(labels, result, class_id, spacing_zyx)
    removed = (
        removed_voxels(labels, result, class_id) if tool in PREVIEWED_TOOLS and summary.removed else None
    )
    return result, summary, removed


def nothing_changed_text(what: str, amount_mm: float | None, spacing_zyx) -> str:
    """Why a tool changed nothing, and that Ctrl+Z would undo something else."""

    reason = ""
    if amount_mm is not None and less_than_a_voxel(amount_mm, spacing_zyx):
        in_plane = max(float(s) for s in spacing_zyx[1:])
        reason = f": {amount_mm:g} mm is less than one voxel here ({in_plane:.1f} mm)"
    return f"{what} changed nothing{reason}. Nothing to undo (Ctrl+Z would undo your previous edit)."
