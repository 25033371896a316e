"""npe2 reader: NIfTI, MetaImage, NRRD files and DICOM series directories as Image layers.

Engine errors (``VolumeIOError``, a one-line message naming the file) propagate unchanged:
napari reports a reader's exception to the user as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cgs_engine.io import is_supported_path, read_volume
from napari_cgs._layers import volume_to_layer_data

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Sequence[str]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader function if every given path is a volume we can open, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    return read_image_layers


def read_image_layers(path: PathOrPaths) -> list[LayerData]:
    """One gray Image layer per path, placed in LPS millimetres (z, y, x)."""
    paths = [path] if isinstance(path, str) else list(path)
    return [volume_to_layer_data(read_volume(p, kind="image")) for p in paths]
