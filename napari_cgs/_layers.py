"""Conversions between engine Volumes and napari layers.

napari's axes follow the array, so a Volume indexed ``[z, y, x]`` gets its transform in
``(z, y, x)`` order from :meth:`Geometry.zyx_transform`: ``scale`` = spacing, ``translate`` =
origin and ``rotate`` = the direction matrix. napari's world coordinates are then the LPS
millimetres of the image, reversed to ``(z, y, x)``.

Improper direction matrices (det = -1, e.g. a flipped slice order) are passed to ``rotate``
unchanged: napari uses the matrix as given (rotate @ shear @ diag(scale)) and its data-to-world
mapping stays exact; vispy renders without face culling, so the reflection does not hide
anything. See ``tests/plugin/test_roundtrip_viewer.py``.

The exact geometry is also stored in the layer metadata under :data:`GEOMETRY_KEY`, so that a
label layer written back to disk gets the image's spacing/origin/direction without any
float drift through napari's transform objects.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.volume import Geometry, Volume

GEOMETRY_KEY = "cgs_geometry"
SOURCE_KEY = "cgs_source"
KIND_KEY = "cgs_kind"
CLASS_NAMES_KEY = "cgs_class_names"  # a labels layer's organ names, background first
# the class file a labels layer was read with, as read ({"classes": [...], "made_on": {...}}): saved
# again, the map keeps its colours, codes and DICOM series, not a table rebuilt from the names
CLASS_FILE_KEY = "cgs_class_file"

CT_SOFT_TISSUE_WINDOW = (-160.0, 240.0)  # level 40 HU, width 400 HU
# Air is about -1000 HU; no MR or PET intensity scale goes this far below zero.
HU_AIR_THRESHOLD = -500.0
PERCENTILES = (0.5, 99.5)
CONTRAST_SAMPLE_SIZE = 1_000_000  # voxels looked at to choose contrast limits
MAP_COLORMAP = "inferno"
LAYER_UNITS = ("mm", "mm", "mm")


@functools.cache
def same_layer(first: Any, second: Any) -> bool:
    """Whether two references name one napari layer.

    A dock widget opened from the Plugins menu receives the viewer through napari's
    PublicOnlyProxy, which hands out a new proxy object at every access, so ``is`` fails between
    two references to one layer: compare the layers' ids instead.
    """
    if first is None or second is None:
        return False
    return first.unique_id == second.unique_id


def shown_as(viewer: Any, layer: Any) -> Any | None:
    """The viewer's own layer that is ``layer`` (compared with ``same_layer``: the panel gets napari's
    proxies), or None once it was removed."""
    return next((shown for shown in viewer.layers if same_layer(shown, layer)), None)


def layers_support_units() -> bool:
    """Whether this napari accepts ``units=`` for layers (napari >= 0.6)."""
    from napari.layers import Image  # lazy: 1.2 s; `import napari_cgs` and the headless demo need no napari

    return "units" in inspect.signature(Image.__init__).parameters


def layer_name_for(source: str | Path | None, default: str = "volume") -> str:
    """File name without its (possibly double, like ``.nii.gz``) extension; a directory's name."""
    if not source:
        return default
    path = Path(source)
    name = path.name
    if path.is_dir():
        return name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem if Path(name).suffix else name


def display_rotation(geometry: Geometry) -> np.ndarray:
    """The rotation M (zyx) from the world of the file to the world napari shows it in.

    napari slices along world axes that must each be one axis of the array: a scan stored
    sagittally or coronally (its array axes along x or y first) has a direction matrix that
    permutes axes, and napari could not draw it (vispy: "Singular matrix", the viewer left
    broken). Such a volume is shown in a world turned so that its array axes are the displayed
    axes again: the slider steps through its stored slices, the head is up and anterior left on a
    sagittal slice, the patient's right on the left of a coronal one. M is a proper rotation (a
    turn, never a mirror image); identity for an axial scan, whose world is the LPS millimetres.
    The file's geometry stays in the layer metadata; what is written goes back to it.
    """
    _, _, linear = geometry.zyx_transform()
    world_of = [int(np.argmax(np.abs(linear[:, axis]))) for axis in range(3)]  # zyx world axis per array axis
    if sorted(world_of) != [0, 1, 2] or world_of == [0, 1, 2]:
        return np.eye(3)
    # preferred sign of each world axis (z, y, x) on the screen's rows (axis 1) and columns (axis 2):
    # superior up, anterior up or left, the patient's right on the left
    preferred = {1: (-1.0, 1.0, 1.0), 2: (-1.0, 1.0, 1.0)}
    rotation = np.zeros((3, 3))
    for axis, world in enumerate(world_of):
        rotation[axis, world] = 1.0 if axis == 0 else preferred[axis][world]
    if np.linalg.det(rotation) < 0:
        rotation[0] *= -1.0  # the slider's direction, never a mirror of the slice on screen
    return rotation


def as_matrix(value: Any) -> np.ndarray:
    """A transform as napari hands it over (an ``Affine``) or as stored (an array), as an array."""
    return np.asarray(value.affine_matrix if hasattr(value, "affine_matrix") else value, dtype=float)


def _homogeneous(linear: np.ndarray) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    return matrix


def transform_kwargs(geometry: Geometry) -> dict[str, Any]:
    """napari layer kwargs (scale, translate, rotate[, units]) for a volume's geometry (in the
    world of :func:`display_rotation`)."""
    scale, translate, linear = geometry.zyx_transform()
    kwargs: dict[str, Any] = {"scale": scale, "translate": translate, "rotate": linear}
    turn = display_rotation(geometry)
    if not np.array_equal(turn, np.eye(3)):
        # in napari's extra affine, apart from the file's own transform: layers napari makes from
        # the image ("New labels") copy it, and a writer can tell it from the file's geometry
        kwargs["affine"] = _homogeneous(turn)
    if layers_support_units():
        kwargs["units"] = LAYER_UNITS
    return kwargs


def image_contrast_limits(array: np.ndarray) -> tuple[float, float]:
    """CT soft-tissue window for Hounsfield data, else the 0.5-99.5 percentiles.

    Both are decided on a strided subsample, which is plenty for a display range and keeps
    opening a 512x512x600 CT fast.
    """
    sample = _strided_sample(np.asarray(array))
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    if sample.min() <= HU_AIR_THRESHOLD:
        return CT_SOFT_TISSUE_WINDOW
    lo, hi = (float(v) for v in np.percentile(sample, PERCENTILES))
    if hi <= lo:  # constant image (or nearly so): napari needs a non-empty range
        hi = lo + 1.0
    return lo, hi


def _strided_sample(array: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil((array.size / CONTRAST_SAMPLE_SIZE) ** (1 / max(array.ndim, 1)))))
    sample = array[(slice(None, None, step),) * array.ndim] if array.ndim else array
    return np.asarray(sample, dtype=np.float64).ravel()


def _map_contrast_limits(array: np.ndarray) -> tuple[float, float]:
    sample = _strided_sample(np.asarray(array))
    if sample.size and sample.min() >= 0 and sample.max() <= 1:
        return 0.0, 1.0  # probabilities and agreement fractions keep their absolute scale
    return image_contrast_limits(array)


def volume_to_layer_data(
    volume: Volume, name: str | None = None, colormap: str = MAP_COLORMAP
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari layer data tuple ``(data, kwargs, layer_type)`` for a Volume.

    ``image`` -> gray Image layer, ``labels`` -> Labels layer, ``map`` -> Image layer with
    ``colormap`` blended additively over the image.
    """
    kwargs: dict[str, Any] = {
        "name": name or layer_name_for(volume.source, default=volume.kind),
        **transform_kwargs(volume.geometry),
        "metadata": {
            GEOMETRY_KEY: volume.geometry.to_dict(),
            SOURCE_KEY: None if volume.source is None else str(volume.source),
            KIND_KEY: volume.kind,
        },
    }
    if volume.kind == "labels":
        return volume.array, kwargs, "labels"
    if volume.kind == "map":
        kwargs.update(
            colormap=colormap, contrast_limits=_map_contrast_limits(volume.array), blending="additive"
        )
        return volume.array, kwargs, "image"
    kwargs.update(colormap="gray", contrast_limits=image_contrast_limits(volume.array))
    return volume.array, kwargs, "image"


def layer_geometry(layer_or_attributes: Any) -> Geometry:
    """The Geometry of a napari layer, or of the ``attributes`` dict a writer receives.

    The metadata copy is preferred because it is exact; it is used only while it still agrees
    with the layer's transforms, so a layer that was moved or rescaled in napari is saved
    where it is shown.
    """
    attributes = _as_attributes(layer_or_attributes)
    stored = (attributes.get("metadata") or {}).get(GEOMETRY_KEY)
    geometry = Geometry.from_dict(stored) if stored else None
    from_transforms = _geometry_from_transforms(attributes)
    if geometry is not None and (from_transforms is None or geometry.is_close(from_transforms)):
        return geometry
    if from_transforms is None:
        return Geometry()
    return from_transforms


def read_geometry(layer: Any) -> Geometry:
    """The geometry a layer was read with (its file's grid), wherever it was moved in the viewer
    since (napari's transform mode moves a layer by a drag); the shown one for a layer made
    without it. What is written or stored for an image goes on this grid: the file did not move."""
    stored = (layer.metadata or {}).get(GEOMETRY_KEY)
    return Geometry.from_dict(stored) if stored else layer_geometry(layer)


def _as_attributes(layer_or_attributes: Any) -> Mapping[str, Any]:
    if isinstance(layer_or_attributes, Mapping):
        return layer_or_attributes
    layer = layer_or_attributes
    return {
        "metadata": layer.metadata,
        "scale": layer.scale,
        "translate": layer.translate,
        "rotate": layer.rotate,
        "shear": layer.shear,
        "affine": layer.affine.affine_matrix,
    }


def _geometry_from_transforms(attributes: Mapping[str, Any]) -> Geometry | None:
    """Fold napari's scale/translate/rotate/shear/affine into spacing, origin and direction. For a
    sagittally or coronally stored scan the affine holds the :func:`display_rotation` of the rest
    (how it is shown, not where it lies), which is turned back."""
    from napari.utils.transforms import Affine  # lazy, as above: only layers from napari need it

    if attributes.get("scale") is None:
        return None
    parts = {key: attributes.get(key) for key in ("scale", "translate", "rotate", "shear")}
    data_to_physical = Affine(**{k: v for k, v in parts.items() if v is not None}).affine_matrix
    if data_to_physical.shape != (4, 4):
        raise ValueError(f"a 3D layer is needed to save a volume, got {data_to_physical.shape[0] - 1}D")
    extra = attributes.get("affine")
    if extra is not None:
        extra = as_matrix(extra)
        # the world a turned scan is shown in, turned back: the affine is the turn, or a move made
        # in napari's transform mode after it (move x turn), whose shift is then in the file's world
        turn = _display_turn_of(data_to_physical)
        if not np.array_equal(turn, np.eye(3)) and np.allclose(extra[:3, :3], turn, atol=1e-9):
            data_to_physical = _homogeneous(turn).T @ extra @ data_to_physical
        else:  # no turn in it (an axial scan, or a layer placed in the file's world by another plugin)
            data_to_physical = extra @ data_to_physical
    linear = data_to_physical[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    # Negative scales (napari flips) end up in the direction, where NIfTI/ITK keep them.
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("the layer is sheared; a sheared grid cannot be saved as a medical volume")
    return Geometry.from_zyx_transform(spacing, data_to_physical[:3, 3], direction)


def _display_turn_of(inner: np.ndarray) -> np.ndarray:
    """The :func:`display_rotation` of the file grid the transform ``inner`` (scale, translate,
    rotate) describes; identity where that is no grid."""
    linear = inner[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(spacing > 0):
        return np.eye(3)
    return display_rotation(Geometry.from_zyx_transform(spacing, inner[:3, 3], linear / spacing))


def labels_kwargs_like(image_layer: Any, name: str | None = None) -> dict[str, Any]:
    """Labels layer kwargs on the image's grid, carrying its exact geometry for the writer: the grid
    of its file (an image moved in the viewer shows its labels moved with it; they are written on
    the file's grid, where they pair with the scan voxel by voxel)."""
    geometry = read_geometry(image_layer)
    metadata = {GEOMETRY_KEY: geometry.to_dict(), KIND_KEY: "labels"}
    source = (image_layer.metadata or {}).get(SOURCE_KEY)
    if source:
        metadata["cgs_reference"] = source
    kwargs: dict[str, Any] = {
        "name": name or f"{image_layer.name} labels",
        "scale": np.array(image_layer.scale),
        "translate": np.array(image_layer.translate),
        "rotate": np.array(image_layer.rotate),
        "shear": np.array(image_layer.shear),
        "affine": np.array(image_layer.affine.affine_matrix),
        "metadata": metadata,
    }
    if layers_support_units():
        kwargs["units"] = tuple(image_layer.units)
    return kwargs
