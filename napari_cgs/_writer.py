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
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import class_file_entries, class_file_for, find_class_file, write_class_file
from cgs_engine.io import VolumeIOError, write_volume
from cgs_engine.volume import Geometry, Volume
from napari_cgs._layers import (
    CLASS_FILE_KEY,
    CLASS_NAMES_KEY,
    GEOMETRY_KEY,
    KIND_KEY,
    as_matrix,
    layer_geometry,
)

DEFAULT_EXTENSION = ".nii.gz"


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write one Labels layer (as uint8/uint16) on its image's grid; return ``[written path]``."""
    target = _with_extension(path)
    if target.exists():
        raise VolumeIOError(target, "already exists; napari-cgs never overwrites, choose another name")
    array = np.asarray(data[0] if attributes.get("multiscale") else data)
    if array.ndim != 3:
        raise VolumeIOError(target, f"only 3D labels can be saved, the layer is {array.ndim}D")
    metadata = attributes.get("metadata") or {}
    names = metadata.get(CLASS_NAMES_KEY)
    class_file = class_file_for(target) if names else None
    if class_file is not None and class_file.exists():
        raise VolumeIOError(class_file, "already exists; napari-cgs never overwrites, choose another name")
    if not names:
        _refuse_stale_class_file(target)
    volume = Volume(array=array, geometry=_file_grid(attributes, array.shape, target), kind="labels")
    if class_file is None:
        return [os.fspath(write_volume(volume, target))]
    entries, made_on = _class_entries(list(names), metadata.get(CLASS_FILE_KEY), array, target)
    written = write_volume(volume, target)
    # the organ names travel with the map, as the panel's export and the CLI write them; a table
    # read with the map goes out as read (colours, codes, the DICOM series it was made on)
    write_class_file(class_file, entries, written, made_on)
    return [os.fspath(written), os.fspath(class_file)]


def _refuse_stale_class_file(target: Path) -> None:
    """Labels without organ names saved where a class table would be taken for theirs (an earlier
    map's ``x_classes.json`` beside ``x.nrrd``): reopened, they showed that map's organs."""
    try:
        stale = find_class_file(target)
    except ClassTableError:  # only other maps' tables: the reader takes none of them
        return
    if stale is not None:
        raise VolumeIOError(
            target,
            f"{stale.name} beside it names the organs of an earlier map and would be read as this "
            "layer's, which has no organ names; choose another name or folder",
        )


def _class_entries(names: list[str], carried: Any, array: np.ndarray, target: Path):
    """The class file's entries and ``made_on``: as read with the map where its names are still
    the layer's, else made from the names; ids painted beyond them get an entry (and a warning)."""
    entries, made_on = None, None
    if isinstance(carried, dict) and isinstance(carried.get("classes"), list):
        by_id = {item.get("id"): item.get("name") for item in carried["classes"] if isinstance(item, dict)}
        largest = max((key for key in by_id if isinstance(key, int)), default=0)
        if [by_id.get(i, f"class_{i}") for i in range(1, largest + 1)] == names[1:]:
            entries = [dict(item) for item in carried["classes"]]
            made_on = carried.get("made_on") or None
    if entries is None:
        entries = class_file_entries(names)
    named = {entry["id"] for entry in entries}
    beyond = [int(v) for v in np.unique(array) if int(v) not in named]
    if beyond:
        warnings.warn(
            f"{target.name}: label ids {', '.join(map(str, beyond))} have no organ name; saved as "
            + ", ".join(f"class_{v}" for v in beyond),
            stacklevel=3,
        )
        entries += [{"id": value, "name": f"class_{value}"} for value in beyond]
    return entries, made_on


def _file_grid(attributes: dict[str, Any], shape: tuple[int, ...], target: Path) -> Geometry:
    """The grid the labels are written on: the one they were read or made with (their image's
    file grid), even where the layer was moved in the viewer since (said in a warning, as the
    panel's export says it); for a layer without one, the grid of the image napari shows it on."""
    stored = (attributes.get("metadata") or {}).get(GEOMETRY_KEY)
    if stored:
        geometry = Geometry.from_dict(stored)
        if _moved(attributes, geometry):
            _say_moved(target)
        return geometry
    image = _image_shown_alike(attributes, shape)
    if image is not None:  # napari's "New labels" copies the image's transforms, not its metadata
        geometry = Geometry.from_dict(image.metadata[GEOMETRY_KEY])
        if _moved(attributes, geometry):  # moved in transform mode (its affine) since
            _say_moved(target)
        return geometry
    if _untransformed(attributes):
        raise VolumeIOError(
            target,
            "the layer carries no scan geometry (1 mm voxels at the origin would be written): open "
            "the scan with the napari-cgs reader and draw on labels made for it, or export from the "
            "CGS panel",
        )
    return layer_geometry(attributes)


def _moved(attributes: dict[str, Any], geometry: Geometry) -> bool:
    """Whether the layer is shown off ``geometry`` (moved, turned, rescaled or sheared in napari)."""
    try:
        return not layer_geometry({**attributes, "metadata": {}}).is_close(geometry)
    except ValueError:  # sheared: no grid at all
        return True


def _say_moved(target: Path) -> None:
    warnings.warn(
        f"{target.name}: the labels layer was moved in the viewer; written on the grid it was read or "
        "made with (its image's), where it pairs with the scan voxel by voxel",
        stacklevel=3,
    )


def _image_shown_alike(attributes: dict[str, Any], shape: tuple[int, ...]) -> Any | None:
    """An image read by napari-cgs in the current viewer with this shape and these transforms."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 (no viewer, or no Qt: a headless save)
        return None
    if viewer is None:
        return None
    for layer in viewer.layers:
        metadata = getattr(layer, "metadata", None) or {}
        image = metadata.get(GEOMETRY_KEY) and metadata.get(KIND_KEY) == "image"
        if not image or tuple(layer.data.shape) != tuple(shape):  # a points, shapes or 2D layer too
            continue
        # scale, translate and rotate: what New labels copies and transform mode leaves (it moves
        # a layer through its affine, which is compared afterwards, as a move)
        mine = {key: getattr(layer, key) for key in ("scale", "translate", "rotate")}
        shown_alike = all(
            attributes.get(key) is not None
            and np.shape(as_matrix(value)) == np.shape(as_matrix(attributes[key]))
            and np.allclose(as_matrix(value), as_matrix(attributes[key]))
            for key, value in mine.items()
        )
        if shown_alike:
            return layer
    return None


def _untransformed(attributes: dict[str, Any]) -> bool:
    scale, translate = attributes.get("scale"), attributes.get("translate")
    rotate, affine = attributes.get("rotate"), attributes.get("affine")
    return (
        (scale is None or np.allclose(scale, 1))
        and (translate is None or np.allclose(translate, 0))
        and (rotate is None or np.allclose(rotate, np.eye(len(rotate))))
        and (affine is None or np.allclose(as_matrix(affine), np.eye(len(as_matrix(affine)))))
    )


def _with_extension(path: str | os.PathLike) -> Path:
    # napari hands over the dialog's name as typed when the user picked our file filter.
    target = Path(path)
    return target if target.suffix else target.with_name(target.name + DEFAULT_EXTENSION)
