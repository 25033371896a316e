"""napari plugin for multi-organ CT/MRI segmentation built on the Qt-free ``cgs_engine``."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-cgs")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from napari_cgs._layers import (
    GEOMETRY_KEY,
    image_contrast_limits,
    labels_kwargs_like,
    layer_geometry,
    volume_to_layer_data,
)
from napari_cgs._reader import get_reader
from napari_cgs._writer import write_labels

__all__ = [
    "GEOMETRY_KEY",
    "__version__",
    "get_reader",
    "image_contrast_limits",
    "labels_kwargs_like",
    "layer_geometry",
    "volume_to_layer_data",
    "write_labels",
]
