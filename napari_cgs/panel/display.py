"""How the panel's layers are drawn over the CT: labels filled or as outlines, the disagreement as an
outline, a heat map or not at all, and a whole-slice view that frames the body.

Radiotherapy users read structures as outlines on the CT; a heat map added over the CT brightens
exactly the anatomy in question. The disagreement outline is drawn where the heads disagree at
least as much as the review threshold (0.5), in lime, one voxel thin. The
specialists' version of a review region is always drawn the other way from the labels (filled
under outlines, outlined over filled labels), so the two never look alike.
"""

from __future__ import annotations

from itertools import permutations
from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtWidgets import QComboBox, QGridLayout, QLabel, QPushButton, QWidget

from cgs_engine.volume import Geometry
from napari_cgs._layers import GEOMETRY_KEY, KIND_KEY, display_rotation, labels_kwargs_like
from napari_cgs.panel.correct_section import alternative_layer_name
from napari_cgs.panel.prediction_layers import (
    LABELS_OPACITY,
    SEPARATOR,
    disagreement_layer_name,
    find_labels_layer,
    focus_layer_name,
)
from napari_cgs.panel.review_queue import frame_body

FILLED, OUTLINES = "Filled", "Outlines"
OUTLINE, HEAT_MAP, OFF = "Outline", "Heat map", "Off"
# Lime: not one of the 7 organs' colours nor the review box's magenta, and unlike white it stays
# visible on bone in a soft-tissue window; an outline of disagreement must not pass for an organ's.
OUTLINE_COLOUR = "#b4ff1e"
OUTLINE_OPACITY = 0.7  # a little quieter than the organs' outlines: it is a hint, not a structure
REVIEW_LEVEL = 128  # uint8 disagreement: 0.5, the review threshold
KEY_WHOLE_SLICE = "Alt-W"
SLICE_AXES = ("axial", "coronal", "sagittal")  # what moving each slider of a [z, y, x] volume steps through


def name_slice_axes(viewer: Any, image_layer: Any = None) -> None:
    """Sliders named after the slices they step through, instead of napari's "-3", "-2", "-1": for
    a scan stored sagittally or coronally, shown in its stored slices (``display_rotation``), the
    first slider steps through sagittal or coronal slices."""
    labels = tuple(viewer.dims.axis_labels)
    ours = {tuple(SLICE_AXES[i] for i in order) for order in permutations(range(3))}
    if viewer.dims.ndim != 3 or not (all(label.lstrip("-").isdigit() for label in labels) or labels in ours):
        return
    stored = None if image_layer is None else (image_layer.metadata or {}).get(GEOMETRY_KEY)
    turn = np.eye(3) if not stored else display_rotation(Geometry.from_dict(stored))
    viewer.dims.axis_labels = tuple(SLICE_AXES[int(np.argmax(np.abs(row)))] for row in turn)


def disagreement_outline_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}disagreement outline"


class DisplayControls(QWidget):
    """Two choices and a button; ``apply()`` draws the current image's layers accordingly."""

    def __init__(self, panel: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self.viewer = panel.viewer
        self.labels_style = QComboBox()
        self.labels_style.addItems([FILLED, OUTLINES])
        self.labels_style.setToolTip(
            "Draw the organs filled (easier to paint) or as outlines on the CT, as radiotherapy "
            "systems do. The specialists' version is drawn the other way."
        )
        self.disagreement_style = QComboBox()
        self.disagreement_style.addItems([OUTLINE, HEAT_MAP, OFF])
        self.disagreement_style.setToolTip(
            "Where the specialist heads disagree: a lime outline around disagreement of 0.5 or "
            "more (the CT stays readable), the heat map added over the CT, or nothing."
        )
        self.whole_button = QPushButton(f"Whole slice ({KEY_WHOLE_SLICE})")
        self.whole_button.setToolTip("Show the whole slice, the body filling the view.")
        self.whole_button.clicked.connect(lambda *_: self.whole_slice())
        for box in (self.labels_style, self.disagreement_style):
            box.currentTextChanged.connect(lambda *_: self.apply())
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for row, (text, box) in enumerate(
            (("Organs", self.labels_style), ("Disagreement", self.disagreement_style))
        ):
            label = QLabel(text)
            label.setToolTip(box.toolTip())
            layout.addWidget(label, row, 0)
            layout.addWidget(box, row, 1)
        layout.addWidget(self.whole_button, 2, 0, 1, 2)
        layout.setColumnStretch(1, 1)

    def bind_keys(self) -> None:
        self.viewer.bind_key(KEY_WHOLE_SLICE, lambda viewer: self.whole_slice(), overwrite=True)

    def unbind_keys(self) -> None:
        self.viewer.bind_key(KEY_WHOLE_SLICE, None, overwrite=True)

    def whole_slice(self) -> None:
        image = self.panel.image_layer
        if image is not None:
            frame_body(self.viewer, image)

    def apply(self) -> None:
        """Style the labels, disagreement and specialists' version layers of the panel's image."""
        image = self.panel.image_layer
        if image is None:
            return
        outlines = self.labels_style.currentText() == OUTLINES
        labels = find_labels_layer(self.viewer, image)
        if labels is not None:
            labels.contour = 1 if outlines else 0
            labels.opacity = 1.0 if outlines else LABELS_OPACITY
        self.style_alternative()
        self._show_disagreement(image)

    def style_alternative(self, *_: Any) -> None:
        """The specialists' version, drawn the other way from the labels (it follows the review queue)."""

        image = self.panel.image_layer
        name = None if image is None else alternative_layer_name(image)
        if name is not None and name in self.viewer.layers:
            outlines = self.labels_style.currentText() == OUTLINES
            alternative = self.viewer.layers[name]
            alternative.contour = 0 if outlines else 1
            alternative.opacity = 0.45 if outlines else 0.9

    def _show_disagreement(self, image: Any) -> None:
        style = self.disagreement_style.currentText()
        heat_name, outline_name = disagreement_layer_name(image), disagreement_outline_name(image)
        heat = self.viewer.layers[heat_name] if heat_name in self.viewer.layers else None  # noqa: SIM401
        if heat is not None:
            heat.visible = style == HEAT_MAP
        if style != OUTLINE or heat is None:
            if outline_name in self.viewer.layers:
                self.viewer.layers[outline_name].visible = False
            return
        data = (np.asarray(heat.data) >= REVIEW_LEVEL).astype(np.uint8)
        if outline_name in self.viewer.layers and self.viewer.layers[outline_name].data.shape == data.shape:
            outline = self.viewer.layers[outline_name]
            outline.data = data
            outline.visible = True
        else:
            outline = self._add_outline(image, outline_name, data)
        self._stack_below_labels(image, outline)

    def _add_outline(self, image: Any, name: str, data: np.ndarray) -> Any:
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        kwargs = labels_kwargs_like(image, name=name)
        kwargs["metadata"][KIND_KEY] = "disagreement"
        active = self.viewer.layers.selection.active
        layer = self.viewer.add_labels(data, opacity=OUTLINE_OPACITY, **kwargs)
        layer.colormap = DirectLabelColormap(
            color_dict={None: "transparent", 0: "transparent", 1: OUTLINE_COLOUR}
        )
        layer.contour = 1
        layer.editable = False
        if active is not None:
            self.viewer.layers.selection.active = active
        return layer

    def _stack_below_labels(self, image: Any, outline: Any) -> None:
        """Right under the labels (and the review focus), above the maps."""
        layers = self.viewer.layers
        labels = find_labels_layer(self.viewer, image)
        anchor = labels if labels is not None else None
        focus = focus_layer_name(image)
        if anchor is None and focus in layers:
            anchor = layers[focus]
        if anchor is not None and layers.index(outline) > layers.index(anchor):
            layers.move(layers.index(outline), layers.index(anchor))
