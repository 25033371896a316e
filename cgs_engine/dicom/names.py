"""Names written into DICOM files: one line, no backslash, within the value's length, never empty.

ROI names, segment labels and their descriptions are LO values (at most 64 characters, no
control characters, no backslash, which separates values); a structure set label is an SH (16).
Class names come from checkpoints and class tables that know nothing of this, so each name is
made conformant here and every change is reported: a planning system that splits "Parotid\\R"
into two values, or shows a name cut at a line break, would otherwise show a name nobody chose.
Files are written as UTF-8 (ISO_IR 192), so names in any script survive as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.organs import Code
from cgs_engine.classes.table import ClassEntry, ClassTable

CHARACTER_SET = "ISO_IR 192"  # UTF-8
LONG_STRING = 64  # LO
SHORT_STRING = 16  # SH
_NOT_ALLOWED = re.compile(r"[\x00-\x1f\x7f\\]+")  # control characters and the value separator


def conformant(text: str, limit: int) -> str:
    """``text`` as a DICOM LO/SH value: separators and control characters become spaces, runs of
    spaces one, cut to ``limit`` characters."""
    cleaned = " ".join(_NOT_ALLOWED.sub(" ", str(text)).split())
    return cleaned[:limit].rstrip()


def shown_name(name: str) -> str:
    """A name read from a file or a table, as one short line to print."""
    return " ".join(str(name).split())[:LONG_STRING] or "(no name)"


@dataclass
class StructureNames:
    """The name written for each class, and a line for every name that had to change."""

    by_id: dict[int, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    def __getitem__(self, class_id: int) -> str:
        return self.by_id[class_id]

    def entry(self, written: str, table: ClassTable) -> ClassEntry | None:
        """The class whose name, as we write it, is ``written`` (so renamed classes read back)."""
        wanted = written.casefold()
        class_id = next((key for key, name in self.by_id.items() if name.casefold() == wanted), None)
        return None if class_id is None else table.by_id(class_id)


def structure_names(entries: Iterable[ClassEntry]) -> StructureNames:
    """Conformant, distinct ROI / segment names for ``entries`` (their TG-263 or class names)."""
    names = StructureNames()
    taken: set[str] = set()
    for entry in entries:
        wanted = entry.structure_name
        name = base = conformant(wanted, LONG_STRING) or f"Class {entry.id}"
        # two classes must not become one structure on import (planning systems compare names
        # case-blind); a name made distinct may meet another class's name too: "Organ (3)" beside
        # "organ" of id 3 wrote two ROIs named alike, and the re-import lost one organ
        attempt = 1
        while name.casefold() in taken:
            suffix = f" ({entry.id})" if attempt == 1 else f" ({entry.id}-{attempt})"
            name = base[: LONG_STRING - len(suffix)].rstrip() + suffix
            attempt += 1
        taken.add(name.casefold())
        names.by_id[entry.id] = name
        if name != wanted:
            names.changes.append(
                f"class {entry.id} is written as {name!r}, not {wanted!r} ({_why(wanted, name)})"
            )
    return names


def _why(wanted: str, name: str) -> str:
    if not conformant(wanted, LONG_STRING):
        return "an empty name"
    if _NOT_ALLOWED.search(wanted):
        return "DICOM names hold no line breaks, control characters or backslashes"
    if len(" ".join(wanted.split())) > LONG_STRING:
        return f"DICOM names hold at most {LONG_STRING} characters"
    return "another class has that name"


def checked_code(code: Code, entry: ClassEntry) -> Code:
    """``code`` with a conformant meaning; :class:`ClassTableError` for a value or scheme DICOM cannot
    hold (those identify the concept, so they are not rewritten)."""
    for part, value in (("value", code.value), ("scheme", code.scheme)):
        if not value or len(value) > SHORT_STRING or _NOT_ALLOWED.search(value):
            raise ClassTableError(
                f"class table: class {entry.id} ({conformant(entry.name, LONG_STRING)!r}) has the code "
                f"{part} {value!r}; DICOM needs 1 to {SHORT_STRING} characters without control characters"
            )
    meaning = conformant(code.meaning, LONG_STRING) or code.value
    return code if meaning == code.meaning else Code(code.value, code.scheme, meaning)
