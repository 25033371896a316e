"""Which class each imported ROI or segment stands for, one source per class.

A structure is matched by name first (as we write class names, the class name, its TG-263 name
or a known alias), else by its SNOMED code and laterality. Two structures may match one class:
a planning system often gives a PRV ("Parotid_L_PRV05") the organ's own code, and a structure
set may hold both "Mandible" and "Bone_Mandible". Their union would be a larger organ than any
of them, written without a word; so each class takes one structure (a name match before a code
match, then the first in the file) and the others are left out with a line naming both. A
structure whose name marks a margin ("_PRV03", "+3mm") is never taken for the organ by its code. Where the
structures kept overlap, the lower class id wins (as in the OpenKBP label maps) and the voxels
given away are counted, for one warning line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable
from cgs_engine.volume import Volume

from .names import StructureNames, shown_name


@dataclass(frozen=True)
class Match:
    key: int  # the ROI number or segment number
    name: str
    entry: ClassEntry
    by_name: bool


def match_structure(
    key: int,
    name: str,
    table: ClassTable,
    written: StructureNames,
    code: Code | None = None,
    laterality: Code | None = None,
) -> Match | None:
    """The class ``name`` (with ``code`` and ``laterality``) stands for, and how it was found."""
    entry = written.entry(name, table) or table.match(name)
    if entry is not None:
        return Match(key, name, entry, by_name=True)
    if grown_structure(name):
        return None  # its code is the organ's, its voxels are not
    entry = table.match(name, code, laterality)
    return None if entry is None else Match(key, name, entry, by_name=False)


# A planning risk volume or a margin: "Brainstem_PRV03", "PRV SpinalCord 5mm", "Parotid_L+3mm",
# "Mandible_03mm". Planning systems give them the organ's own SNOMED code, and alone in a set (no
# structure named as the organ) such a one was imported as the organ, millimetres too large, in silence.
_GROWN = re.compile(r"(?:^|[^a-z])prv(?:[^a-z]|$)|\+\s*\d|\d\s*[mc]m", re.IGNORECASE)
_GROWN_CAPITALS = re.compile(r"PRV")  # "BrainstemPRV03", "PRVBrainstem": one word in capitals


def grown_structure(name: str) -> bool:
    """Whether a structure's name marks it as an organ grown by a margin (a PRV), not the organ."""
    return bool(_GROWN.search(str(name)) or _GROWN_CAPITALS.search(str(name)))


def one_per_class(matches: list[Match], kind: str) -> tuple[list[Match], list[str]]:
    """The matches kept (in their order) and one warning line per structure left out.

    ``kind`` names the structures in the lines ("ROI", "segment")."""
    chosen: dict[int, Match] = {}
    for match in matches:  # file order: the first of equals wins
        held = chosen.get(match.entry.id)
        if held is None or (match.by_name and not held.by_name):
            chosen[match.entry.id] = match
    kept = [match for match in matches if chosen[match.entry.id] is match]
    warnings = [
        f"{kind} '{shown_name(match.name)}' left out: it stands for class {match.entry.id} "
        f"{shown_name(match.entry.name)} ({_how(match)}), which {kind} "
        f"'{shown_name(chosen[match.entry.id].name)}' gives ({_how(chosen[match.entry.id])})"
        for match in matches
        if chosen[match.entry.id] is not match
    ]
    return kept, warnings


def _how(match: Match) -> str:
    return "by name" if match.by_name else "by code"


def label_map(masks: Mapping[int, np.ndarray | Callable[[], np.ndarray]], grid: Volume) -> tuple[Volume, int]:
    """The label map on ``grid`` of one mask per class id (or a function making it, called once,
    so that only one mask is held at a time), the lower id winning where masks overlap, and the
    number of voxels that more than one mask claims."""
    top = max(masks, default=0)
    array = np.zeros(grid.shape, dtype=np.uint8 if top <= 255 else np.uint16)
    claimed = np.zeros(grid.shape, dtype=bool)
    shared = np.zeros(grid.shape, dtype=bool)
    for class_id in sorted(masks, reverse=True):  # lower ids painted last: they win on overlap
        mask = masks[class_id]
        mask = mask() if callable(mask) else mask
        shared |= claimed & mask
        claimed |= mask
        array[mask] = class_id
    return grid.like(array, "labels"), int(np.count_nonzero(shared))


def overlap_warning(voxels: int, kind: str) -> list[str]:
    """The warning line (if any) for ``voxels`` claimed by more than one ``kind`` ("ROI", "segment")."""
    return [f"{voxels} voxels lie in more than one {kind}; the lower class id got them"] if voxels else []
