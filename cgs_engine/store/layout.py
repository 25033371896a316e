"""The slice store's file layout: its format, the records read from it, and reading its metadata.

Layout (format version 1)::

    /                       attrs: format, format_version, class_names (JSON list, index =
                                   class id, 0 = background), class_colors (JSON RGB lists),
                                   normalization (JSON), created (ISO 8601 UTC),
                                   training_scope (JSON, optional: what the raw images were
                                   before normalisation, cgs_engine.scope.TrainingScope)
    /volumes/<name>/image   float32 [z, y, x], already normalised, one chunk per z slice
    /volumes/<name>/label   uint8 class ids, same shape and chunks (labeled and val only)
    /volumes/<name>/review  uint8, 1 where the label is trusted; absent = fully trusted
                            attrs of <name>: split, geometry (JSON), spacing_known,
                                             original_dtype, source, sampling_weight
                                             (optional, default 1: how often training
                                             draws this volume's slices relative to others)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from cgs_engine.classes.checks import check_class_names, check_colors
from cgs_engine.errors import first_line
from cgs_engine.h5_durable import foreign_link
from cgs_engine.normalize import Normalization
from cgs_engine.orientation import Reorientation
from cgs_engine.store._checks import SliceStoreError
from cgs_engine.volume import Geometry

FORMAT_NAME = "napari-cgs-slice-store"
FORMAT_VERSION = 1
SCOPE_ATTRIBUTE = "training_scope"
SPLITS = ("labeled", "unlabeled", "val")

# Slices are deflate-compressed (gzip level 1), the standard HDF5 filter that every HDF5 tool
# reads (lzf is h5py-only). Measured per slice chunk, CPU time, on SegTHOR (256x256), ACDC
# (native 154-512 px) and windowed OpenKBP CT (128x128):
#   none   read 65 / 80 / 38 us,      size 100 %
#   lzf    read 941 / 903 / 166 us,   size 18 / 46 / 8 %
#   gzip1  read 554 / 955 / 132 us,   size 13 / 31 / 6 %
# The training loop reads each volume once into RAM, so decoding costs about 1-3 s per run
# (ACDC 331 MB, SegTHOR 820 MB of float32) and the files are 3-16x smaller than raw.
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 1


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of one stored volume (read without touching the voxel data), as it is read: in the
    canonical layout (``shape`` and ``geometry`` too)."""

    name: str
    shape: tuple[int, int, int]
    split: str
    geometry: Geometry
    spacing_known: bool
    original_dtype: str
    source: str
    has_label: bool
    has_review: bool
    sampling_weight: float = 1.0
    # Set for a volume that a store written before stores held canonical volumes keeps in its
    # file's own layout: what turns its arrays on reading.
    stored_turn: Reorientation | None = None
    # (row, column) pixel spacing in mm of its canonical slices, where known: from the geometry, or
    # recorded for slices cut out of a scan (a retrain's corrections), whose 3D spacing is no volume's
    in_plane_mm: tuple[float, float] | None = None


class StoredVolume(NamedTuple):
    image: np.ndarray
    label: np.ndarray | None
    review: np.ndarray | None
    geometry: Geometry
    split: str


class StoredSlice(NamedTuple):
    image: np.ndarray
    label: np.ndarray | None
    review: np.ndarray | None


@dataclass
class RootMetadata:
    """What the root of a store file records about the whole data set."""

    format_version: int
    class_names: list[str]
    class_colors: list[list[int]]
    normalization: Normalization
    created: str
    scope: dict = field(default_factory=dict)


def write_root_metadata(
    file: h5py.File,
    class_names: list[str],
    colors: list[list[int]],
    normalization: Normalization,
    created: str,
) -> None:
    file.attrs["format"] = FORMAT_NAME
    file.attrs["format_version"] = FORMAT_VERSION
    file.attrs["class_names"] = json.dumps(class_names)
    file.attrs["class_colors"] = json.dumps(colors)
    file.attrs["normalization"] = normalization.to_json()
    file.attrs["created"] = created
    file.create_group("volumes")


def read_root_metadata(file: h5py.File, path: Path) -> RootMetadata:
    attrs = file.attrs
    if as_str(attrs.get("format")) != FORMAT_NAME:
        raise SliceStoreError(f"{path}: HDF5 file is not a napari-cgs slice store")
    version = attrs.get("format_version")
    if not _is_int_equal(version, FORMAT_VERSION):
        raise SliceStoreError(
            f"{path}: slice store format version {version} is not supported "
            f"(this napari-cgs reads version {FORMAT_VERSION})"
        )
    try:
        class_names = check_class_names(json.loads(as_str(attrs["class_names"])))
        metadata = RootMetadata(
            format_version=int(version),  # type: ignore[arg-type]
            class_names=class_names,
            class_colors=check_colors(json.loads(as_str(attrs["class_colors"])), len(class_names)),
            normalization=Normalization.from_json(as_str(attrs["normalization"])),
            created=as_str(attrs.get("created", "")),
            scope=json.loads(as_str(attrs[SCOPE_ATTRIBUTE])) if SCOPE_ATTRIBUTE in attrs else {},
        )
        if not isinstance(metadata.scope, dict):
            raise ValueError(f"{SCOPE_ATTRIBUTE} is not a JSON object")
        if "volumes" not in file:
            raise KeyError("volumes")
    except (KeyError, ValueError, TypeError) as error:
        raise SliceStoreError(f"{path}: damaged slice store metadata ({first_line(error)})") from None
    linked = foreign_link(file)
    if linked:
        raise SliceStoreError(f"{path}: {linked}; a slice store holds its own data and no links")
    return metadata


def write_volume_attributes(
    group: h5py.Group,
    split: str,
    geometry: Geometry,
    spacing_known: bool,
    original_dtype: str,
    source: str | None,
    sampling_weight: float,
    in_plane_mm: tuple[float, float] | None = None,
) -> None:
    group.attrs["split"] = split
    group.attrs["geometry"] = json.dumps(geometry.to_dict())
    group.attrs["spacing_known"] = spacing_known
    group.attrs["original_dtype"] = str(original_dtype)
    group.attrs["source"] = "" if source is None else str(source)
    if sampling_weight != 1:
        group.attrs["sampling_weight"] = float(sampling_weight)
    if in_plane_mm is not None:
        group.attrs["in_plane_mm"] = [float(value) for value in in_plane_mm]


def _in_plane_mm(attrs, geometry: Geometry) -> tuple[float, float] | None:
    recorded = attrs.get("in_plane_mm")
    if recorded is not None:
        try:
            rows, columns = (float(value) for value in recorded)
        except (TypeError, ValueError):
            return None
        return (rows, columns) if rows > 0 and columns > 0 else None
    if not bool(attrs.get("spacing_known", True)):
        return None
    return geometry.spacing[1], geometry.spacing[0]  # canonical: rows run along y, columns along x


def read_volume_info(path: Path, name: str, group: h5py.Group) -> VolumeInfo:
    try:
        attrs = group.attrs
        shape = tuple(int(n) for n in group["image"].shape)
        geometry = Geometry.from_dict(json.loads(as_str(attrs["geometry"])))
        turn = Reorientation.of(geometry)
        if not turn.is_identity:
            geometry = turn.canonical_geometry(geometry, shape)  # type: ignore[arg-type]
            shape = tuple(shape[axis] for axis in turn.source_axes)
        return VolumeInfo(
            name=name,
            shape=shape,  # type: ignore[arg-type]
            split=as_str(attrs["split"]),
            geometry=geometry,
            spacing_known=bool(attrs.get("spacing_known", True)),
            original_dtype=as_str(attrs.get("original_dtype", "")),
            source=as_str(attrs.get("source", "")),
            has_label="label" in group,
            has_review="review" in group,
            sampling_weight=float(attrs.get("sampling_weight", 1.0)),
            in_plane_mm=_in_plane_mm(attrs, geometry),
            stored_turn=None if turn.is_identity else turn,
        )
    except (KeyError, ValueError, TypeError) as error:
        raise SliceStoreError(f"{path}: damaged volume {name!r} ({first_line(error)})") from None


def slice_layout(chunks: tuple[int, ...]) -> dict:
    # fletcher32: each chunk carries a checksum, so damage is reported instead of read as data
    return {
        "chunks": chunks,
        "compression": COMPRESSION,
        "compression_opts": COMPRESSION_LEVEL,
        "fletcher32": True,
    }


def check_split(split: str, context: str = "") -> None:
    if split not in SPLITS:
        raise SliceStoreError(f"{context}unknown split {split!r}; use one of {SPLITS}")


def _is_int_equal(value: object, expected: int) -> bool:
    try:
        return int(value) == expected  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def as_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
