"""npe2 reader: NIfTI, MetaImage, NRRD files and DICOM series directories as Image layers.

Engine errors (``VolumeIOError``, a one-line message naming the file) propagate unchanged:
napari reports a reader's exception to the user as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import find_class_file, read_class_file
from cgs_engine.io import VolumeIOError, is_supported_path, read_volume
from cgs_engine.io.dicom_folder import SERIES_HINT
from cgs_engine.io.validate import label_map_problem
from napari_cgs._layers import CLASS_FILE_KEY, CLASS_NAMES_KEY, volume_to_layer_data

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | Sequence[str]


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader function if every given path is a volume we can open, else None."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(is_supported_path(p) for p in paths):
        return None
    return read_image_layers


def read_image_layers(path: PathOrPaths) -> list[LayerData]:
    """One layer per path, placed in LPS millimetres (z, y, x): a gray Image layer for a scan, a
    Labels layer (with the organ names of the class file beside it) for a label map."""
    paths = [path] if isinstance(path, str) else list(path)
    return [_layer_of(p) for p in paths]


def _layer_of(path: str) -> LayerData:
    try:
        volume = read_volume(path, kind="image")
    except VolumeIOError as error:
        if SERIES_HINT not in str(error):
            raise
        # napari's Open has no way to choose a series: say what works here
        raise VolumeIOError(
            path, f"{error.problem.replace(SERIES_HINT, '')}open each series from a folder of its own"
        ) from None
    if label_map_problem(volume.array) is None:
        return volume_to_layer_data(volume)
    # A label map (a few small whole numbers) came in as a gray image that could be neither painted
    # nor saved back: read as labels, its ids checked as such.
    labels = read_volume(path, kind="labels")
    data, kwargs, layer_type = volume_to_layer_data(labels)
    try:
        record = find_class_file(path)
    except ClassTableError:  # another map's table: the ids come without names
        record = None
    if record is not None:
        carried = read_class_file(record)
        kwargs["metadata"][CLASS_NAMES_KEY] = ["background", *_names_by_id(carried.table)]
        # map file names are relative to the table's folder: not carried to wherever it is saved
        items = [{key: value for key, value in item.items() if key != "map"} for item in carried.items]
        kwargs["metadata"][CLASS_FILE_KEY] = {"classes": items, "made_on": carried.made_on}
    return data, kwargs, layer_type


def _names_by_id(table) -> list[str]:
    """Names for ids 1..max (a gap gets class_N: the layer's names are indexed by id)."""
    named = {entry.id: entry.name for entry in table.entries}
    return [named.get(i, f"class_{i}") for i in range(1, max(named, default=0) + 1)]
