"""npe2 writer: a Labels layer to NIfTI (or the format the file extension names).

Overwriting: this writer never replaces an existing file. napari's save dialog
(``QFileDialog.getSaveFileName``) asks the user before calling us, but napari passes no trace
of that confirmation to the writer, so the writer cannot tell it apart from a programmatic
``viewer.layers.save(path)``, nor from a name whose extension was appended after the dialog
(npe2 and this writer both add ``.nii.gz`` to a bare name). Refusing keeps source images and
earlier segmentations safe in every case; the message tells the user to pick another name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.io import VolumeIOError, write_volume
from cgs_engine.volume import Volume
from napari_cgs._layers import layer_geometry

DEFAULT_EXTENSION = ".nii.gz"


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Labels layer (as uint8/uint16) on its image's grid; return ``[written path]``."""
    target = _with_extension(path)
    if target.exists():
        raise VolumeIOError(target, "already exists; napari-cgs never overwrites, choose another name")
    array = np.asarray(data[0] if attributes.get("multiscale") else data)
    if array.ndim != 3:
        raise VolumeIOError(target, f"only 3D labels can be saved, the layer is {array.ndim}D")
    volume = Volume(array=array, geometry=layer_geometry(attributes), kind="labels")
    return [os.fspath(write_volume(volume, target))]


def _with_extension(path: str | os.PathLike) -> Path:
    # napari hands over the dialog's name as typed when the user picked our file filter.
    target = Path(path)
    return target if target.suffix else target.with_name(target.name + DEFAULT_EXTENSION)
