"""The class file beside a label map: ``<stem>_classes.json``, written by ``cgs predict`` and the
panel's export, read by the commands that take a label map (edit, evaluate, review, DICOM export).

One format::

    {"format": "napari-cgs-class-table",
     "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                 {"id": 3, "name": "RightParotid", "color": [...], "tg263": "Parotid_R",
                  "snomed": {...}, "laterality": {...}, "category": {...},
                  "map": "scan_map_RightParotid.nii.gz"}, ...],
     "labels": "scan_labels.nii.gz",
     "map_scale": "uint8, 255 = probability 1",
     "made_on": {"dicom_series": "1.2.826...", "patient_id": "HN-017"}}

``map`` and ``map_scale`` only where specialist maps were written; ``made_on`` only where the
labels were made on an image read from a DICOM series (the DICOM exports refuse another series).
Older files (no ``format``, no ``labels``, entries with only ``id``, ``name`` and ``color``, or a
bare list of entries) read the same: a missing identity is derived from the class name.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.table import TABLE_FORMAT, ClassTable, class_table_from_list, derive_class_table
from cgs_engine.durable import write_json_atomically
from cgs_engine.io.formats import SUPPORTED_EXTENSIONS, strip_image_suffix
from cgs_engine.io.validate import label_map_problem

CLASS_FILE_SUFFIX = "_classes.json"
LABELS_PART = "_labels"  # cgs predict writes <stem>_labels.nii.gz beside <stem>_classes.json
LIKELY_WRONG_SUFFIX = "_likely_wrong"  # <stem>_likely_wrong.nii.gz (the map) and .json (per organ)
# Every volume a prediction writes under a fixed name (the maps are <stem>_map_<class>): predict on a
# folder leaves them out as inputs, so a new output there must be named here too.
FIXED_OUTPUT_PARTS = (LABELS_PART, "_disagreement", LIKELY_WRONG_SUFFIX)
MAP_SCALE = "uint8, 255 = probability 1"


def class_file_stem(path: str | os.PathLike) -> str:
    """``scan`` for ``scan_classes.json``."""
    name = Path(path).name
    return name[: -len(CLASS_FILE_SUFFIX)] if name.endswith(CLASS_FILE_SUFFIX) else name


def class_file_candidates(labels_path: str | os.PathLike) -> list[Path]:
    """Class files that may sit beside a label map: ``x_classes.json`` beside ``x.nii.gz`` (the
    panel), then ``scan_classes.json`` beside ``scan_labels.nii.gz`` (cgs predict)."""
    path = Path(labels_path)
    stem = strip_image_suffix(path.name)
    names = [f"{stem}{CLASS_FILE_SUFFIX}"]
    if stem.endswith(LABELS_PART):
        names.append(f"{stem[: -len(LABELS_PART)]}{CLASS_FILE_SUFFIX}")
    return [path.with_name(name) for name in names]


def class_file_for(labels_path: str | os.PathLike) -> Path:
    """Where a label map's own class file goes: ``x_classes.json`` beside ``x.nii.gz``."""
    return class_file_candidates(labels_path)[0]


class ForeignClassFileError(ClassTableError):
    """The only class files beside a label map are other maps' (their ``"labels"`` name another)."""


def find_class_file(labels_path: str | os.PathLike) -> Path | None:
    """The class file beside a label map, or None.

    A class file that names another label map (its ``"labels"``, other than this map's name in
    any image format) is not this map's: one left from an earlier prediction beside a map written
    under its name by a tool that writes no table gave that map the earlier model's organ names,
    and the DICOM exports sent the user's spleen out as Brainstem. The next candidate is tried
    (``scan_classes.json`` names ``scan_labels.nii.gz``); when only others' tables are there, it
    is refused in one line."""
    name = Path(labels_path).name
    others = []
    for candidate in class_file_candidates(labels_path):
        if not candidate.is_file():
            continue
        named = labels_named_by(candidate)
        if named is None or same_map_name(named, name):
            return candidate
        others.append((candidate, named))
    if not others:
        return None
    found, named = others[0]
    raise ForeignClassFileError(
        f"{found}: this class table is {named}'s (its \"labels\"), not {name}'s, so its organ names "
        f"need not be those of {name}; move it away, or name the organs with --classes where the "
        "command takes it"
    )


def label_map_given_as_map(path: str | os.PathLike, values: np.ndarray) -> str | None:
    """Why the file at ``path`` (voxels ``values``), given as a probability or disagreement map, is a
    label map, or None: its voxels are a few whole numbers, each an id of the class table beside it
    (``x_classes.json`` beside ``x``, or a prediction's table naming it). The ids of a label map
    taken for a map were read as probabilities (Mandible, id 7, as 7/255): a click removed another
    set of voxels, exit 0. Values alone cannot tell (an absent organ's map holds a few small whole
    numbers too), nor a table alone (``scan_classes.json`` of an older prediction sits beside
    ``scan.nii.gz``, the CT)."""
    if label_map_problem(values) is None:
        return None
    try:
        found = find_class_file(path)
        table = read_class_table(found) if found is not None else None
    except ClassTableError:
        return None
    if table is None:
        return None
    ids = {0, *(entry.id for entry in table.entries)}
    if not set(np.unique(values).astype(np.int64).tolist()) <= ids:
        return None
    return (
        f"is a label map (its voxels are the ids of the class table {found.name} beside it), not a "
        "map as cgs predict --maps writes them (*_map_<organ>, *_disagreement)"
    )


def same_map_name(first: str, second: str) -> bool:
    """Whether two file names are one label map's, in any image format (``x.nii.gz``, ``x.nrrd``
    share ``x_classes.json``), letter case aside."""
    return strip_image_suffix(first).casefold() == strip_image_suffix(second).casefold()


@dataclass(frozen=True)
class ClassFile:
    """A class file as read: its table (foreground classes) and its entries as stored."""

    path: Path
    table: ClassTable
    items: tuple[dict[str, Any], ...]
    made_on: dict[str, str] | None = None  # the DICOM series (and patient) the labels were made on

    @property
    def names(self) -> dict[int, str]:
        """Class id -> name, for ids from 1 on."""
        return {entry.id: entry.name for entry in self.table.entries}

    def map_files(self) -> dict[int, str]:
        """Class id -> the file name of its specialist map, for the classes that name one."""
        maps = {item["id"]: item["map"] for item in self.items if item.get("map") and item["id"] > 0}
        if not all(isinstance(name, str) for name in maps.values()):
            raise ClassTableError(f"{self.path}: not a readable class table (a map file name is not a text)")
        if any("/" in name or "\\" in name or name.startswith(".") for name in maps.values()):
            raise ClassTableError(
                f"{self.path}: a map file name in this class table is not a plain file name"
            )
        return maps


def read_class_file(path: str | os.PathLike) -> ClassFile:
    """A class file (or a table saved by :meth:`ClassTable.to_json`); every entry is checked as
    :func:`class_table_from_list` checks them, so a hand-edited file is refused here in one line."""
    path = Path(path)
    if not path.is_file():
        raise ClassTableError(f"{path}: no such class table file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ClassTableError(
            f"{path}: not a readable class table ({' '.join(str(error).split())})"
        ) from None
    items = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ClassTableError(f"{path}: no 'classes' list in this file")
    made_on = data.get("made_on") if isinstance(data, dict) else None
    if made_on is not None and not (
        isinstance(made_on, dict) and all(isinstance(value, str) for value in made_on.values())
    ):
        raise ClassTableError(f"{path}: not a readable class table ('made_on' is not a set of texts)")
    return ClassFile(path, class_table_from_list(items, str(path)), tuple(items), made_on)


def read_class_table(path: str | os.PathLike) -> ClassTable:
    """The table of a class file (see :func:`read_class_file`)."""
    return read_class_file(path).table


def class_file_entries(
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]] | None = None,
    table: ClassTable | None = None,
    maps: Mapping[int, str] | None = None,
) -> list[dict[str, Any]]:
    """The entries of a class file: every class from background on, with its colour, its identity
    (from ``table``, else derived from its name) and the file name of its map where ``maps`` has one."""
    colors = list(colors or [])
    identities = table if table is not None else derive_class_table(class_names, colors)
    entries = []
    for class_id, name in enumerate(class_names):
        known = identities.by_id(class_id)
        # id 0 is written as what it is, whatever a model calls it ("Unknown", "Other"): readers
        # refuse an id 0 named like an organ (a table numbered from 0)
        shown = "background" if class_id == 0 else str(name)
        entry = {**(known.to_dict() if known is not None else {}), "id": class_id, "name": shown}
        if class_id < len(colors):
            entry["color"] = [int(channel) for channel in colors[class_id]]
        if maps and class_id in maps:
            entry["map"] = maps[class_id]
        entries.append(entry)
    return entries


def write_class_file(
    path: str | os.PathLike,
    entries: Sequence[Mapping[str, Any]],
    labels: Path,
    made_on: Mapping[str, str] | None = None,
) -> Path:
    """Write the class file of the label map ``labels`` (read back before it replaces anything);
    ``made_on``: the DICOM series the labels were made on (:func:`cgs_engine.io.series_identity`)."""
    data: dict[str, Any] = {"format": TABLE_FORMAT, "classes": [dict(entry) for entry in entries]}
    data["labels"] = labels.name
    if any("map" in entry for entry in entries):
        data["map_scale"] = MAP_SCALE
    if made_on:
        data["made_on"] = dict(made_on)
    return write_json_atomically(path, data)


def prediction_outputs_in(folder: Path) -> set[Path]:
    """The files an earlier prediction, edit or export wrote in ``folder`` (resolved): for each
    ``<stem>_classes.json`` every volume :func:`prediction_paths` names (labels, disagreement,
    likely-wrong map, in any image format), its specialist maps (``<stem>_map_*``) and the label
    map the table itself names (``"labels"``: what `cgs edit`, `cgs convert --labels` and the
    panel's export write, under any name)."""
    outputs: set[Path] = set()
    for table in folder.glob(f"*{CLASS_FILE_SUFFIX}"):
        outputs |= outputs_of_prediction(folder, class_file_stem(table))
        named = labels_named_by(table)
        if named is not None:
            outputs.add((folder / named).resolve())
    return outputs


def labels_named_by(table: Path) -> str | None:
    """The plain file name a class file's ``"labels"`` gives, or None (none given, or unreadable:
    an unreadable table names nothing here; the commands that read it say why)."""
    try:
        data = json.loads(table.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    named = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(named, str) or not named or "/" in named or "\\" in named or named.startswith("."):
        return None
    return named


def outputs_of_prediction(folder: Path, stem: str) -> set[Path]:
    """Every file name a prediction of ``stem`` may have written in ``folder`` (resolved)."""
    outputs = {(folder / f"{stem}{CLASS_FILE_SUFFIX}").resolve()}
    outputs.add((folder / f"{stem}{LIKELY_WRONG_SUFFIX}.json").resolve())
    for suffix in SUPPORTED_EXTENSIONS:
        for part in FIXED_OUTPUT_PARTS:
            outputs.add((folder / f"{stem}{part}{suffix}").resolve())
        outputs.update(path.resolve() for path in folder.glob(f"{glob.escape(stem)}_map_*{suffix}"))
    return outputs
