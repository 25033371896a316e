"""The hidden "changes" Labels layer a re-predict leaves: what the new model changed, on the image's grid.

Codes come from ``cgs_engine.review.changes.change_map``: 1 added (green), 2 removed (red),
3 relabelled (yellow); the status bar names the change under the cursor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from cgs_engine.review.changes import ADDED, CHANGE_NAMES, RELABELLED, REMOVED
from napari_cgs._layers import KIND_KEY, labels_kwargs_like
from napari_cgs.panel.prediction_layers import SEPARATOR

CHANGE_COLOURS = {ADDED: "#4ec95b", REMOVED: "#e8473f", RELABELLED: "#f2c230"}


def changes_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}changes"


def show_changes_layer(viewer: Any, image_layer: Any, codes: np.ndarray) -> Any:
    """Add (or refresh) the hidden changes layer of ``image_layer`` with the change codes."""

    name = changes_layer_name(image_layer)
    if name in viewer.layers and viewer.layers[name].data.shape == codes.shape:
        layer = viewer.layers[name]
        layer.data = codes
    else:
        if name in viewer.layers:
            viewer.layers.remove(name)
        kwargs = labels_kwargs_like(image_layer, name=name)
        kwargs["metadata"][KIND_KEY] = "changes"
        layer = viewer.add_labels(codes, visible=False, **kwargs)
    colours: dict[int | None, Any] = {None: "transparent", 0: "transparent", **CHANGE_COLOURS}
    layer.colormap = DirectLabelColormap(color_dict=colours)
    layer.features = {"index": list(range(len(CHANGE_NAMES))), "change": list(CHANGE_NAMES)}
    return layer
