"""Label ids in the receiver's classes: a label map whose class table says which organ each value is.

A label map made by another model, another project or another tool may number the same organs
differently (its ``1`` the Mandible where the project's ``1`` is the Brainstem). Its class file
(``<stem>_classes.json`` beside it) says so; reading the ids as the receiver's own would store or
score every organ under another organ's name without a word. So the ids are mapped onto the
receiver's organ by organ, as an imported RTSTRUCT's ROIs are (:meth:`ClassTable.match`: the class
name, its TG-263 name or a known alias, else its SNOMED code), and a value the receiver has no class
for is refused in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import find_class_file, read_class_file
from cgs_engine.classes.organs import normalise_name
from cgs_engine.classes.table import ClassEntry, ClassTable, derive_class_table
from cgs_engine.io.validate import UINT16_MAX, slabs_of


@dataclass(frozen=True)
class Relabelled:
    labels: np.ndarray
    table: Path | None  # the class file that was followed, None when the map has none
    moved: tuple[tuple[int, int, str], ...] = ()  # (its id, the receiver's id, class name)

    def describe(self) -> str:
        """One line naming the ids that changed, or '' when none did."""
        if not self.moved:
            return ""
        moves = ", ".join(f"{name} {old} -> {new}" for old, new, name in self.moved)
        by = f"the class table {self.table.name} beside it" if self.table is not None else "organ"
        return f"ids renumbered by {by}: {moves}"


def in_receiver_classes(
    labels: np.ndarray, labels_path: str | os.PathLike, receiver: ClassTable, whose: str
) -> Relabelled:
    """``labels`` (read from ``labels_path``) with ids mapped onto ``receiver``'s when a class file
    sits beside the file; unchanged without one.

    ``whose`` names the receiver in messages ("the project"). A value present in the map that its
    class file does not name, or names as a class the receiver lacks, raises
    :class:`ClassTableError` naming the file.
    """
    record = find_class_file(labels_path)
    if record is None:
        return Relabelled(labels, None)
    where = f"{labels_path}: its class table {record.name}"
    moved = renumbered(labels, read_class_file(record).table, receiver, where, whose)
    return Relabelled(moved.labels, record, moved.moved)


def renumbered(
    labels: np.ndarray, source: ClassTable, receiver: ClassTable, where: str, whose: str
) -> Relabelled:
    """``labels``, whose ids ``source`` names, with each id mapped onto the ``receiver`` class that
    stands for the same organ. ``where`` starts each message (what names the ids);
    :class:`ClassTableError` for a value present that ``source`` lacks or ``receiver`` has no class for."""
    mapping: dict[int, int] = {}
    names: dict[int, str] = {}
    for value in values_present(labels, where):
        entry = source.by_id(value)
        if entry is None:
            raise ClassTableError(f"{where} does not name the value {value}, which the labels hold")
        target = same_organ(entry, receiver)
        if target is None:
            known = ", ".join(item.name for item in receiver.entries)
            raise ClassTableError(
                f"{where} calls value {value} {entry.name!r}, a class {whose} does not have ({known})"
            )
        twin = next((other for other, taken in mapping.items() if taken == target.id), None)
        if twin is not None:  # two organs of the map would become one
            raise ClassTableError(
                f"{where} calls values {twin} {names[twin]!r} and {value} {entry.name!r}, which both stand "
                f"for {target.name!r} of {whose}; give each organ one value"
            )
        mapping[value], names[value] = target.id, entry.name
    moved = tuple((value, target, names[value]) for value, target in mapping.items() if value != target)
    if not moved:
        return Relabelled(labels, None)
    array = np.asarray(labels)
    dtype = np.promote_types(array.dtype, np.min_scalar_type(max(mapping.values())))
    lookup = np.arange(max(max(mapping), max(mapping.values())) + 1, dtype=dtype)
    for value, target in mapping.items():
        lookup[value] = target
    return Relabelled(lookup[array], None, moved)


def same_organ(entry: ClassEntry, receiver: ClassTable) -> ClassEntry | None:
    """The receiver's class for ``entry``'s organ: the same class name (in any script), then by
    TG-263 name, known alias or SNOMED code (:meth:`ClassTable.match`; a name of separators only
    is matched by its exact name alone)."""
    exact = [item for item in receiver.entries if _key(item.name) == _key(entry.name)]
    if exact:
        return exact[0]
    named = [name for name in (entry.name, entry.structure_name) if normalise_name(name)]
    for name in named:
        found = receiver.match(name)
        if found is not None:
            return found
    return receiver.by_code(entry.code, entry.laterality)


def _key(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def values_present(labels: np.ndarray, where: str = "the labels") -> list[int]:
    """The foreground ids in ``labels``, counted a slab at a time."""
    array = np.asarray(labels)
    if array.size == 0:
        return []
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > UINT16_MAX:  # no label ids (check_label_map refuses them on reading)
        raise ClassTableError(f"{where}: label values must be 0..{UINT16_MAX}, found {low}..{high}")
    counts = np.zeros(high + 1, np.int64)
    for slab in slabs_of(array):
        counts += np.bincount(slab.ravel(), minlength=high + 1)
    return [int(value) for value in np.flatnonzero(counts) if value > 0]


def kept_in_new_classes(
    labels: np.ndarray, keep: np.ndarray, names_before: list[str], names_now: list[str], strict: bool = True
) -> np.ndarray:
    """``labels`` where ``keep`` (the voxels a re-run keeps: the user's strokes and accepts),
    renumbered from the classes they were drawn in (``names_before``, background first) onto those
    of the model that re-ran (``names_now``); 0 elsewhere. Kept with their ids, a stroke drawn as
    Mandible (7) became the other model's class 7, Brainstem. ``strict``: :class:`ClassTableError`
    when the new model has no class for an organ the kept voxels hold; else such voxels become 0
    (for what the program last wrote there, which only tells edits apart)."""
    kept = np.where(keep, np.asarray(labels), 0)
    if list(names_before) == list(names_now):
        return kept
    source = derive_class_table(list(names_before))
    receiver = derive_class_table(list(names_now))
    if strict:
        return renumbered(kept, source, receiver, "your kept labels", "the model that re-ran").labels
    lookup = np.zeros(max(len(names_before), int(kept.max()) + 1), dtype=np.int64)
    for entry in source.entries:
        target = same_organ(entry, receiver)
        if target is not None and entry.id < len(lookup):
            lookup[entry.id] = target.id
    return lookup[kept].astype(np.promote_types(kept.dtype, np.min_scalar_type(len(names_now))))
