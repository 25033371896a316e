"""Turn an engine Prediction into napari layers on the image's grid (no Qt here).

Layer stack, bottom to top: the CT, the specialist maps (hidden), the disagreement map, the
labels, the review focus outline. Maps blend additively from black, so where a map is 0 the
CT shows through untouched.

Writing labels goes through ``Labels.data_setitem`` in ONE call: napari records each call as
one undo history item, so Ctrl+Z removes a whole prediction at once. Our own writes also emit
``layer.events.paint``; callers mute their edit tracking with :func:`muted_edit_tracking`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import Colormap, DirectLabelColormap, label_colormap

from cgs_engine.classes.files import class_file_entries, class_file_for, write_class_file
from cgs_engine.errors import CGSError
from cgs_engine.io import series_identity, write_volume
from cgs_engine.volume import Geometry, Volume
from napari_cgs._layers import (
    CLASS_NAMES_KEY,
    KIND_KEY,
    SOURCE_KEY,
    labels_kwargs_like,
    layer_geometry,
    read_geometry,
    volume_to_layer_data,
)

TRANSFORM_KEYS = ("scale", "translate", "rotate", "shear", "affine", "units")
LABELS_OPACITY = 0.55
DISAGREEMENT_COLORMAP = "inferno"
DISAGREEMENT_OPACITY = 0.5
# Disagreement below 0.2 maps to black, which additive blending leaves out: the CT stays readable
# wherever the heads (nearly) agree, and the review threshold (0.5) sits mid-scale.
DISAGREEMENT_RANGE = (0.2 * 255.0, 255.0)
SPECIALIST_OPACITY = 0.8
MAP_RANGE = (0.0, 255.0)  # uint8 maps: 255 = probability 1, shown on that absolute scale
# Bright magenta: none of the OpenKBP organ colours (the Mandible is cyan) and brighter than any
# purple in inferno, so the outline stands out over labels, maps and bone alike.
FOCUS_COLOR = "#ff3cff"
# The outline runs one voxel outside the region's box, a third of a voxel wide: it marks the
# region without covering its edge voxels (napari draws shape edges in data units, voxels here).
FOCUS_GAP = 1.0
FOCUS_EDGE_WIDTH = 0.35
FOCUS_SLICES_KEY = "cgs_focus_slices"  # (start, stop) slice indices of the outlined region
FOCUS_BOX_KEY = "cgs_focus_box"  # its rectangle(s), drawn when the 2D view is on
FOCUS_DRAWN_KEY = "cgs_focus_drawn"  # whether the layer's shapes are those rectangles yet
FEATURE_CLASS = "class"
SEPARATOR = " · "


def labels_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name} labels"


def specialist_layer_name(image_layer: Any, class_name: str) -> str:
    return f"{image_layer.name}{SEPARATOR}specialist{SEPARATOR}{class_name}"


def disagreement_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}disagreement"


def focus_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}review focus"


# ------------------------------------------------------------------------------ colours
def class_rgba(class_colors: Sequence[Sequence[int]], count: int) -> list[np.ndarray]:
    """RGBA floats per class id; ids without a checkpoint colour get napari's label palette."""

    fallback = label_colormap(max(count, 2))
    colours = []
    for class_id in range(count):
        if class_id < len(class_colors) and len(class_colors[class_id]) >= 3:
            rgb = np.asarray(class_colors[class_id][:3], dtype=float) / 255.0
            colours.append(np.append(rgb, 1.0))
        else:
            colours.append(np.asarray(fallback.map(np.array([class_id]))[0], dtype=float))
    return colours


def labels_colormap(class_colors: Sequence[Sequence[int]], count: int):
    """A fixed class-id -> colour mapping; background and unknown ids are transparent."""

    colours: dict[int | None, Any] = {None: np.zeros(4), 0: np.zeros(4)}
    for class_id, rgba in enumerate(class_rgba(class_colors, count)):
        if class_id:
            colours[class_id] = rgba
    return DirectLabelColormap(color_dict=colours)


def class_features(class_names: Sequence[str]) -> dict[str, list]:
    """Features table: napari shows the ``class`` of the label under the cursor in the status bar."""
    return {"index": list(range(len(class_names))), FEATURE_CLASS: list(class_names)}


def map_colormap(class_name: str, rgba: np.ndarray):
    """Black -> class colour, so additive blending adds only the class colour where P(class) > 0."""

    return Colormap(
        colors=np.array([[0.0, 0.0, 0.0, 1.0], [*rgba[:3], 1.0]]),
        name=f"cgs-specialist-{class_name}",
        display_name=f"specialist {class_name}",
    )


# ------------------------------------------------------------------------------ labels layer
def style_labels_layer(layer: Any, class_names: Sequence[str], class_colors: Sequence[Sequence[int]]) -> None:
    layer.colormap = labels_colormap(class_colors, len(class_names))
    layer.features = class_features(class_names)
    layer.metadata[CLASS_NAMES_KEY] = list(class_names)


IMAGE_ID_KEY = "cgs_image_layer_id"  # the labels layer's image, by napari's layer id
# The labels layer's own layer id: napari's Duplicate Layer copies the metadata (and so the image's
# id) but not the id, so a backup copy is never taken for the labels being edited.
OWN_ID_KEY = "cgs_labels_layer_id"
CLOSED_IMAGE_KEY = "cgs_image_closed"  # a labels layer set aside when its image was closed


def find_labels_layer(viewer: Any, image_layer: Any) -> Any | None:
    """The panel's labels layer for ``image_layer``, if it is still there and on the same grid.

    Found by the image's layer id it records, so renaming either layer keeps them together (a
    re-run found no labels layer by name, made a new one, and the user's edits were lost to it);
    by name only for a labels layer that does not record one."""
    shape = image_layer.data.shape
    candidates = [
        layer
        for layer in viewer.layers
        if isinstance(layer, Labels)
        and layer.data.shape == shape
        and CLOSED_IMAGE_KEY not in (layer.metadata or {})  # set aside: kept for export only
    ]
    for layer in candidates:
        metadata = layer.metadata or {}
        copied = metadata.get(OWN_ID_KEY, layer.unique_id) != layer.unique_id
        if metadata.get(IMAGE_ID_KEY) == image_layer.unique_id and not copied:
            return layer
    name = labels_layer_name(image_layer)
    return next(
        (
            layer
            for layer in candidates
            if layer.name == name
            and IMAGE_ID_KEY not in (layer.metadata or {})
            and not opened_from_file(layer)
        ),
        None,
    )


def opened_from_file(layer: Any) -> bool:
    """Whether the user opened ``layer`` from a file (a labels file saved from the viewer earlier is
    named "<image> labels" too). Such a layer is never taken for one the panel made: adopted as the
    image's labels, it replaced the session's on screen, and the next autosave wrote its labels
    over the user's later strokes while still marking them as edited."""
    metadata = getattr(layer, "metadata", None) or {}
    if metadata.get(IMAGE_ID_KEY) is not None:  # the panel's own, placed on the image's grid
        return False
    return bool(metadata.get(SOURCE_KEY)) or getattr(getattr(layer, "source", None), "path", None) is not None


def layers_made_for(viewer: Any, image_layer: Any, name: str | None = None) -> list[Any]:
    """The layers the panel made for an image (labels, maps, outlines, review focus…), found under
    the image's name ``name`` (default: its current one) and, where they record it, its layer id."""
    name = image_layer.name if name is None else name
    prefixes = (f"{name}{SEPARATOR}", f"{name} labels")
    made = []
    for layer in list(viewer.layers):
        metadata = getattr(layer, "metadata", None) or {}
        owner = metadata.get(IMAGE_ID_KEY)
        made_by_panel = (KIND_KEY in metadata or owner is not None or isinstance(layer, Labels)) and not (
            opened_from_file(layer)  # an image named "<name> labels …" the user opened is not the panel's
        )
        if not made_by_panel or (owner is not None and owner != image_layer.unique_id):
            continue
        prefix = next((p for p in prefixes if layer.name.startswith(p)), None)
        if prefix is None or (prefix.endswith(" labels") and layer.name != prefix):
            continue
        made.append(layer)
    return made


def rename_derived_layers(viewer: Any, image_layer: Any, old_name: str) -> int:
    """Give the layers the panel made for an image its new name after it was renamed; returns how
    many. Left under the old name they stayed on screen beside the new ones a re-run made: two
    magenta review outlines, 24 layers instead of 13."""
    renamed = 0
    for _ in range(len(layers_made_for(viewer, image_layer, old_name))):
        # looked up again after each rename: a rename is an event the panel answers by renaming too
        pending = layers_made_for(viewer, image_layer, old_name)
        if not pending:
            break
        pending[0].name = image_layer.name + pending[0].name[len(old_name) :]
        renamed += 1
    return renamed


# The digest of what an opened RTSTRUCT filled into its layer: the layer is the user's clinical
# contours (not part of any review session), so it is never dropped once edited
IMPORTED_DIGEST_KEY = "cgs_imported_digest"


def labels_digest(data: Any) -> str:
    array = np.ascontiguousarray(np.asarray(data))
    return hashlib.sha256(f"{array.shape}{array.dtype}".encode() + array.tobytes()).hexdigest()


def imported_layer_edited(layer: Any) -> bool | None:
    """Whether a layer filled from a file (an opened RTSTRUCT) was edited since; None: not such a layer."""
    digest = (getattr(layer, "metadata", None) or {}).get(IMPORTED_DIGEST_KEY)
    if digest is None:
        return None
    return labels_digest(layer.data) != digest


def set_aside_labels(labels_layer: Any) -> None:
    """Keep a closed image's labels in view, read-only and renamed to say so (its review could not
    be saved, or the panel was not following it: the layer is what is left of it). Left editable,
    strokes there were never saved. No image takes it again (``find_labels_layer``): a session
    restored into it would overwrite what it holds."""
    labels_layer.metadata[CLOSED_IMAGE_KEY] = True
    labels_layer.editable = False
    labels_layer.name = f"{labels_layer.name} (image closed, read-only)"


def image_of_labels(viewer: Any, labels_layer: Any) -> Any | None:
    """The image layer a panel labels layer belongs to (by the layer id it records), if still open."""
    image_id = (getattr(labels_layer, "metadata", None) or {}).get(IMAGE_ID_KEY)
    if image_id is None:
        return None
    return next((layer for layer in viewer.layers if layer.unique_id == image_id), None)


def ensure_labels_layer(
    viewer: Any, image_layer: Any, class_names: Sequence[str], class_colors: Sequence[Sequence[int]]
) -> Any:
    """Reuse the image's labels layer or add an empty uint8 one with the image's transforms."""
    layer = find_labels_layer(viewer, image_layer)
    if layer is None:
        kwargs = labels_kwargs_like(image_layer, name=labels_layer_name(image_layer))
        kwargs["metadata"][IMAGE_ID_KEY] = image_layer.unique_id
        data = np.zeros(image_layer.data.shape, dtype=np.uint8)
        layer = viewer.add_labels(data, opacity=LABELS_OPACITY, **kwargs)
        layer.metadata = {**layer.metadata, OWN_ID_KEY: layer.unique_id}
    style_labels_layer(layer, class_names, class_colors)
    return layer


def write_labels_undoable(layer: Any, new_labels: np.ndarray, keep: np.ndarray | None = None) -> int:
    """Write ``new_labels`` (except where ``keep`` is True) as ONE undo step; return voxels changed."""
    current = np.asarray(layer.data)
    target = np.asarray(new_labels, dtype=current.dtype)
    if keep is not None:
        target = np.where(keep, current, target)
    changed = np.nonzero(current != target)
    if changed[0].size:
        try:
            layer.data_setitem(changed, target[changed])
        except IndexError:
            # napari (0.9) writes the data and its undo step, then fails updating the shown slice
            # of a layer sliced at an angle (an oblique scan): the write itself stands; redraw
            if not np.array_equal(np.asarray(layer.data)[changed], target[changed]):
                raise
            layer.refresh()
    return int(changed[0].size)


def unproxied(layer: Any) -> Any:
    """The layer behind napari's plugin proxy (which hides private members such as the history)."""
    return getattr(layer, "__wrapped__", layer)


STROKE_WAIT_MS = 100  # a result that arrives during a stroke is looked at again this often


def stroke_in_progress(layer: Any | None) -> bool:
    """Whether the mouse is still painting a stroke in ``layer`` (napari reports a stroke only when
    the button is released, and groups what is written meanwhile into that stroke's undo step)."""
    return bool(getattr(unproxied(layer), "_block_history", False))


def forget_history(layer: Any) -> None:
    """Start the labels layer's undo history afresh (napari has no public call for it).

    After a restored session: the restore was itself an undo step, so one Ctrl+Z too many emptied
    the layer and the autosave then wrote the empty labels over the saved review."""
    reset = getattr(unproxied(layer), "_reset_history", None)
    if callable(reset):
        reset()


def untracked_touched(layer: Any) -> np.ndarray | None:
    """For a labels layer whose edits we never tracked: every labelled voxel counts as the user's."""
    labelled = np.asarray(layer.data) != 0
    return labelled if labelled.any() else None


@contextlib.contextmanager
def muted_edit_tracking(flags: dict[str, bool]) -> Iterator[None]:
    """Mark the panel's own writes so that the paint-event handler does not count them as edits."""
    flags["writing"] = True
    try:
        yield
    finally:
        flags["writing"] = False


def painted_parts(history_item: Sequence[Any]) -> Iterator[tuple[tuple, np.ndarray | None]]:
    """``(where, values)`` pairs for ``ReviewState.mark_edited`` from one napari paint history item.

    An item holds atoms: ``_MaskedPaintAtom`` (slice_key = bounding box, mask = changed voxels in
    it, None = the whole box) from brush/fill/polygon, or ``(indices, old, new)`` tuples from
    ``data_setitem``.
    """
    for atom in history_item:
        slice_key = getattr(atom, "slice_key", None)
        if slice_key is not None:
            yield tuple(slice_key), atom.mask
        else:
            yield tuple(atom[0]), None


# ------------------------------------------------------------------------------ map layers
def _on_image_grid(volume: Volume, image_layer: Any, name: str) -> tuple[np.ndarray, dict[str, Any], str]:
    """volume_to_layer_data, with the image layer's own transforms so both overlay exactly."""
    data, kwargs, layer_type = volume_to_layer_data(volume, name=name)
    like = labels_kwargs_like(image_layer, name=name)
    kwargs.update({key: like[key] for key in TRANSFORM_KEYS if key in like})
    kwargs["metadata"][IMAGE_ID_KEY] = image_layer.unique_id  # whose map it is, whatever the names
    return data, kwargs, layer_type


def map_layer_data(
    image_layer: Any,
    specialist_maps: dict[str, Volume],
    disagreement: Volume | None,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]],
) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Layer data tuples: one hidden map per specialist, then the disagreement map (shown)."""
    colours = class_rgba(class_colors, len(class_names))
    layers = []
    for class_name, volume in specialist_maps.items():
        class_id = list(class_names).index(class_name)
        data, kwargs, layer_type = _on_image_grid(
            volume, image_layer, specialist_layer_name(image_layer, class_name)
        )
        kwargs.update(
            colormap=map_colormap(class_name, colours[class_id]),
            contrast_limits=MAP_RANGE,
            blending="additive",
            opacity=SPECIALIST_OPACITY,
            visible=False,
        )
        kwargs["metadata"][KIND_KEY] = "specialist"
        layers.append((data, kwargs, layer_type))
    if disagreement is not None:
        data, kwargs, layer_type = _on_image_grid(
            disagreement, image_layer, disagreement_layer_name(image_layer)
        )
        kwargs.update(
            colormap=DISAGREEMENT_COLORMAP,
            contrast_limits=DISAGREEMENT_RANGE,
            blending="additive",
            opacity=DISAGREEMENT_OPACITY,
        )
        kwargs["metadata"][KIND_KEY] = "disagreement"
        layers.append((data, kwargs, layer_type))
    return layers


def show_map_layers(viewer: Any, layer_data: list[tuple[np.ndarray, dict[str, Any], str]]) -> list[Any]:
    """Add (or refresh in place) the map layers, keeping each one's visibility as the user left it."""
    shown = []
    for data, kwargs, _ in layer_data:
        name = kwargs["name"]
        existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401
        # A layer of that name made for another image (two images' names swapped) stays its own:
        # refreshing it by name showed one scan's maps on the other.
        owner = (existing.metadata or {}).get(IMAGE_ID_KEY) if existing is not None else None
        ours = existing is not None and owner in (None, kwargs["metadata"].get(IMAGE_ID_KEY))
        if ours and existing.data.shape == data.shape:
            layer = existing
            layer.data = data
        else:
            if ours:
                viewer.layers.remove(existing)
            layer = viewer.add_image(data, **kwargs)
        shown.append(layer)
    return shown


def stack_in_reading_order(
    viewer: Any, image_layer: Any, map_layers: list[Any], top_layers: list[Any]
) -> None:
    """Maps right above the image, then labels and the focus outline on top of everything."""
    layers = viewer.layers
    for layer in map_layers:
        layers.move(layers.index(layer), layers.index(image_layer) + 1 + map_layers.index(layer))
    for layer in top_layers:
        if layer is not None and layer in layers:
            layers.move(layers.index(layer), len(layers))


# ------------------------------------------------------------------------------ review focus
def focus_rectangles(bbox: Sequence[slice]) -> list[np.ndarray]:
    """One rectangle per slice of a region's (z, y, x) bounding box, in data (index) coordinates."""
    z_range, y_range, x_range = bbox
    # voxel edges, then a gap: the outline encloses the region's voxels without covering any
    y0, y1 = y_range.start - 0.5 - FOCUS_GAP, y_range.stop - 0.5 + FOCUS_GAP
    x0, x1 = x_range.start - 0.5 - FOCUS_GAP, x_range.stop - 0.5 + FOCUS_GAP
    return [
        np.array([[z, y0, x0], [z, y0, x1], [z, y1, x1], [z, y1, x0]], dtype=float)
        for z in range(z_range.start, z_range.stop)
    ]


def slice_plane_affine(image_layer: Any) -> np.ndarray | None:
    """The image's (y, x) data-to-world affine (3 x 3) when its slices are not tilted, else None.

    Not tilted: world z depends on the slice index alone and world y, x on the in-plane indices
    alone, as for every axial CT; then a 2D layer with this affine lies exactly on each slice.
    """
    origin = np.asarray(image_layer.data_to_world((0.0, 0.0, 0.0)), dtype=float)
    columns = [
        np.asarray(image_layer.data_to_world(tuple(np.eye(3)[i])), dtype=float) - origin for i in range(3)
    ]
    linear = np.stack(columns, axis=1)
    if not (np.allclose(linear[0, 1:], 0, atol=1e-9) and np.allclose(linear[1:, 0], 0, atol=1e-9)):
        return None
    affine = np.eye(3)
    affine[:2, :2], affine[:2, 2] = linear[1:, 1:], origin[1:]
    return affine


def show_focus(viewer: Any, image_layer: Any, bbox: Sequence[slice] | None) -> Any:
    """Outline ``bbox`` in a Shapes layer on the image's grid; ``None`` clears the outline.

    One 2D rectangle, shown on the slices of the region only (:func:`follow_focus`), whenever the
    image's slices are not tilted: a 3D Shapes layer re-links two shader programs at every slice
    step (measured: 22-36 ms of the GUI thread per step of a 128-slice CT, the image alone 16 ms);
    a 2D one costs 3 ms. Tilted (oblique) images keep one rectangle per slice in 3D.
    """
    name = focus_layer_name(image_layer)
    plane = slice_plane_affine(image_layer)
    if bbox is None:
        rectangles = []
    elif plane is not None:
        rectangles = [focus_rectangles(bbox)[0][:, 1:]]
    else:
        rectangles = focus_rectangles(bbox)
    z_range = None if bbox is None else (int(bbox[0].start), int(bbox[0].stop))
    layer = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401
    if layer is not None and layer.ndim != (2 if plane is not None else 3):
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        layer = _add_focus_layer(viewer, image_layer, name, plane)
    layer.metadata[FOCUS_SLICES_KEY] = z_range
    layer.metadata[FOCUS_BOX_KEY] = rectangles
    layer.metadata[FOCUS_DRAWN_KEY] = False
    # A 2D layer's shapes are changed in the 2D view only: shapes set while the 3D view is on get
    # 3D vertices, and adding 2D rectangles to them later fails
    if layer.ndim == 3 or viewer.dims.ndisplay == 2:
        _draw_focus(layer)
    follow_focus(viewer, image_layer)
    return layer


def _draw_focus(layer: Any) -> None:
    if layer.metadata.get(FOCUS_DRAWN_KEY):
        return
    # marked first: the shapes changing the layer's extent moves the slider, which calls back here
    layer.metadata[FOCUS_DRAWN_KEY] = True
    layer.data = []
    rectangles = layer.metadata.get(FOCUS_BOX_KEY) or []
    if rectangles:
        layer.add_rectangles(
            rectangles, edge_color=FOCUS_COLOR, face_color="transparent", edge_width=FOCUS_EDGE_WIDTH
        )


def _add_focus_layer(viewer: Any, image_layer: Any, name: str, plane: np.ndarray | None) -> Any:
    if plane is not None:
        kwargs: dict[str, Any] = {"name": name, "ndim": 2, "affine": plane}
        if "units" in labels_kwargs_like(image_layer):
            kwargs["units"] = tuple(image_layer.units)[1:]
    else:
        kwargs = labels_kwargs_like(image_layer, name=name)
        kwargs.pop("metadata")
        kwargs["ndim"] = 3
    active = viewer.layers.selection.active
    layer = viewer.add_shapes(
        None,
        shape_type="rectangle",
        edge_color=FOCUS_COLOR,
        face_color="transparent",
        edge_width=FOCUS_EDGE_WIDTH,
        metadata={KIND_KEY: "focus"},
        **kwargs,
    )
    layer.editable = False
    if active is not None:
        viewer.layers.selection.active = active
    return layer


def follow_focus(viewer: Any, image_layer: Any) -> None:
    """Show the 2D review outline only on the slices of its region (the slider moved, say)."""
    name = focus_layer_name(image_layer)
    if name not in viewer.layers:
        return
    layer = viewer.layers[name]
    if layer.ndim != 2:
        return
    z_range = layer.metadata.get(FOCUS_SLICES_KEY)
    z_index = int(round(image_layer.world_to_data(viewer.dims.point)[0]))
    shown = z_range is not None and 0 in viewer.dims.not_displayed and z_range[0] <= z_index < z_range[1]
    if shown:
        _draw_focus(layer)  # a box chosen while the 3D view was on is drawn now
    if layer.visible != shown:
        layer.visible = shown


def image_volume(image_layer: Any) -> Volume:
    """The Volume the engine sees: the layer's 3D array on its geometry."""
    if getattr(image_layer, "rgb", False):
        raise ValueError(f"{image_layer.name}: pre-segmentation needs a single-channel image, not colour")
    array = np.asarray(image_layer.data)
    if array.ndim != 3:
        raise ValueError(f"{image_layer.name}: pre-segmentation needs a 3D image, this one is {array.ndim}D")
    source = (image_layer.metadata or {}).get(SOURCE_KEY)
    return Volume(array=array, geometry=read_geometry(image_layer), kind="image", source=source)


# ------------------------------------------------------------------------------ export
def export_targets(labels_path: str | Path) -> list[Path]:
    return [Path(labels_path), class_file_for(labels_path)]


def open_source_clash(targets: Sequence[Path], layers: Sequence[Any]) -> str | None:
    """Why writing ``targets`` would replace a file an open layer was read from (an image file, or
    a file inside a DICOM series folder), else None. Such a file is never replaced, even after
    the user confirmed a "replace?" question about its name: the CT itself would become a
    label map."""
    sources: dict[Path, str] = {}
    derived_last = sorted(layers, key=lambda layer: KIND_KEY in (getattr(layer, "metadata", None) or {}))
    for layer in derived_last:  # a map layer carries its image's source: name the image
        source = (getattr(layer, "metadata", None) or {}).get(SOURCE_KEY)
        if source:
            sources.setdefault(Path(source).resolve(), layer.name)
    for target in targets:
        resolved = Path(target).resolve()
        for source, name in sources.items():
            if resolved == source or source in resolved.parents:
                where = "is" if resolved == source else "lies in"
                return f"{target} {where} the file layer “{name}” was read from; choose another name"
    return None


def series_made_on(image_layer: Any) -> dict[str, str] | None:
    """The DICOM series an image layer was read from (see ``cgs_engine.io.series_identity``), or
    None for a file, an unsaved image, or a folder that no longer reads as one series."""
    source = (getattr(image_layer, "metadata", None) or {}).get(SOURCE_KEY)
    if not source or not Path(source).is_dir():
        return None
    try:
        return series_identity(source)
    except CGSError:
        return None


def labels_geometry(labels_layer: Any, image_layer: Any | None) -> Geometry:
    """Where a labels layer's voxels are written: on its image's grid as read from the image's file
    (whatever either layer was dragged to in the viewer) when it has one of the same shape, else
    where the layer is shown."""
    if image_layer is not None and np.shape(labels_layer.data) == np.shape(image_layer.data):
        return read_geometry(image_layer)
    return layer_geometry(labels_layer)


def moved_off_image(labels_layer: Any, image_layer: Any | None) -> str | None:
    """Which layer was moved (or rescaled, turned) in the viewer away from the image's grid as
    read from its file, and how far, in a few words; None while both lie on it (or the shapes
    differ). The image counts too: a dragged image layer was the labels' grid for the export."""
    if image_layer is None or np.shape(labels_layer.data) != np.shape(image_layer.data):
        return None
    grid = read_geometry(image_layer)
    moved = []
    for what, layer in (("image", image_layer), ("labels", labels_layer)):
        try:
            shown = layer_geometry(layer)
        except ValueError:  # sheared by napari's transform mode: no grid at all any more
            moved.append(f"the {what} layer had been sheared")
            continue
        how = _moved_by(shown, grid)
        if how:
            moved.append(f"the {what} layer had been {how}")
    return " and ".join(moved) or None


def _moved_by(shown: Geometry, grid: Geometry) -> str | None:
    if shown.is_close(grid):
        return None
    if np.allclose(shown.spacing, grid.spacing) and np.allclose(shown.direction, grid.direction, atol=1e-5):
        return f"moved by {float(np.linalg.norm(np.subtract(shown.origin, grid.origin))):.1f} mm"
    return "rescaled or turned"


def export_labels(
    labels_layer: Any,
    path: str | Path,
    class_names: Sequence[str],
    class_colors: Sequence[Sequence[int]],
    overwrite: bool = False,
    made_on: dict[str, str] | None = None,
    image_layer: Any | None = None,
) -> list[Path]:
    """Write the labels on the source image's exact geometry plus a class table; return both paths.

    With ``image_layer`` (the image the labels belong to, same shape) its grid is written even if
    the labels layer was moved in the viewer (napari's transform mode moves it by a drag): a label
    map off its CT's grid is refused by the DICOM exports and misread by tools that pair files by
    voxel index. ``made_on``: the DICOM series the image was read from, recorded in the class table."""

    geometry = labels_geometry(labels_layer, image_layer)
    volume = Volume(array=np.asarray(labels_layer.data), geometry=geometry, kind="labels")
    written = write_volume(volume, path, overwrite=overwrite)
    colours = class_rgba(class_colors, len(class_names))
    rgb = [[round(float(c) * 255) for c in colour[:3]] for colour in colours]
    table = write_class_file(class_file_for(written), class_file_entries(class_names, rgb), written, made_on)
    return [written, table]
