"""Label ids in the receiver's classes: a label map whose class file says which organ each value is.

A label map made by another model, another project or another tool may number the same organs
differently (its ``1`` the Mandible where the project's ``1`` is the Brainstem). Its class file
(``<stem>_classes.json`` beside it) says so; reading the ids as the receiver's own would store or
score every organ under another organ's name without a word. So the ids are mapped by class name
onto the receiver's, and a value the receiver has no class for is refused in one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import find_class_file, read_class_file


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
        return f"ids renumbered by the class table {self.table.name} beside it: {moves}"


def in_receiver_classes(
    labels: np.ndarray,
    labels_path: str | os.PathLike,
    receiver: Mapping[int, str],
    whose: str,
) -> Relabelled:
    """``labels`` (read from ``labels_path``) with ids mapped by name onto ``receiver`` (id -> class
    name, foreground ids) when a class file sits beside the file; unchanged without one.

    ``whose`` names the receiver in messages ("the project", "the predictions"). A value present in
    the map that its class file does not name, or names as a class the receiver lacks, raises
    :class:`ClassTableError` naming the file.
    """
    record = find_class_file(labels_path)
    if record is None:
        return Relabelled(labels, None)
    names = read_class_file(record).names
    by_name = {_key(name): class_id for class_id, name in receiver.items() if class_id > 0}
    present = [int(value) for value in np.flatnonzero(np.bincount(np.asarray(labels).ravel())) if value > 0]
    mapping: dict[int, int] = {}
    for value in present:
        name = names.get(value)
        if name is None:
            raise ClassTableError(
                f"{labels_path}: holds the value {value}, which its class table {record.name} does not name"
            )
        target = by_name.get(_key(name))
        if target is None:
            known = ", ".join(receiver[i] for i in sorted(receiver) if i > 0)
            raise ClassTableError(
                f"{labels_path}: its class table {record.name} calls value {value} {name!r}, a class "
                f"{whose} does not have ({known})"
            )
        mapping[value] = target
    moved = tuple((value, target, names[value]) for value, target in mapping.items() if value != target)
    if not moved:
        return Relabelled(labels, record)
    lookup = np.arange(max(max(mapping), max(mapping.values())) + 1, dtype=np.asarray(labels).dtype)
    for value, target in mapping.items():
        lookup[value] = target
    return Relabelled(lookup[np.asarray(labels)], record, moved)


def _key(name: str) -> str:
    return str(name).strip().casefold()
