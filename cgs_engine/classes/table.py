"""The class table: per class its label id, name, display colour and DICOM identity.

Checkpoints carry the table (``ModelCheckpoint.class_table``); for older checkpoints, and for label
maps with only names, it is derived from the class names through the known organs
(:mod:`cgs_engine.classes.organs`). Its file beside a label map is :mod:`cgs_engine.classes.files`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cgs_engine.classes.checks import ClassTableError, default_colors
from cgs_engine.classes.organs import Code, anatomical_structure, known_organ, normalise_name

TABLE_FORMAT = "napari-cgs-class-table"


@dataclass(frozen=True)
class ClassEntry:
    """One foreground class: its label id, the model's name and its DICOM identity."""

    id: int
    name: str
    color: tuple[int, int, int]
    tg263: str | None = None
    code: Code | None = None
    laterality: Code | None = None
    category: Code = field(default_factory=anatomical_structure)

    @property
    def structure_name(self) -> str:
        """The ROI / segment name to write: the TG-263 name when the organ is known."""
        return self.tg263 or self.name

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name, "color": list(self.color)}
        data["tg263"] = self.tg263
        data["snomed"] = None if self.code is None else self.code.to_dict()
        data["laterality"] = None if self.laterality is None else self.laterality.to_dict()
        data["category"] = self.category.to_dict()
        return data


@dataclass(frozen=True)
class ClassTable:
    """Foreground classes by label id (background, id 0, is not an entry)."""

    entries: tuple[ClassEntry, ...]
    derived: bool = field(default=False, compare=False)

    def by_id(self, class_id: int) -> ClassEntry | None:
        return next((entry for entry in self.entries if entry.id == class_id), None)

    @property
    def ids(self) -> list[int]:
        return [entry.id for entry in self.entries]

    def match(self, structure_name: str, code: Code | None = None, laterality: Code | None = None):
        """The entry an imported ROI or segment stands for: by name (TG-263, class name or a
        known alias), else by SNOMED code and laterality; None when nothing fits."""
        wanted = normalise_name(structure_name)
        organ = known_organ(structure_name)
        for entry in self.entries:
            names = {normalise_name(entry.name), normalise_name(entry.structure_name)} - {""}
            if wanted in names or (organ is not None and entry.tg263 == organ.tg263):
                return entry
        return self.by_code(code, laterality)

    def by_code(self, code: Code | None, laterality: Code | None = None) -> ClassEntry | None:
        """The entry of this SNOMED code and side; None without a code or when none has it."""
        if code is None:
            return None
        identity = (_key(code), _key(laterality))
        return next(
            (
                entry
                for entry in self.entries
                if (_key(entry.code), _key(entry.laterality)) == identity and entry.code is not None
            ),
            None,
        )

    def to_list(self) -> list[dict[str, Any]]:
        return [entry.to_dict() for entry in self.entries]

    def to_json(self) -> str:
        return json.dumps({"format": TABLE_FORMAT, "classes": self.to_list()}, indent=2)


def derive_class_table(
    class_names: Sequence[str], class_colors: Sequence[Sequence[int]] | None = None
) -> ClassTable:
    """The table for a model that has only names (id 0 is background and gets no entry)."""
    colors = list(class_colors or [])
    fallback = default_colors(len(class_names))
    entries = []
    for class_id, name in enumerate(class_names):
        if class_id == 0:
            continue
        usable = class_id < len(colors) and len(colors[class_id]) >= 3
        entries.append(derived_entry(class_id, str(name), colors[class_id] if usable else fallback[class_id]))
    return ClassTable(tuple(entries), derived=True)


def derived_entry(class_id: int, name: str, color: Sequence[int]) -> ClassEntry:
    """The entry of one class from its name alone, through :func:`~cgs_engine.classes.organs.known_organs`."""
    organ = known_organ(name)
    return ClassEntry(
        id=class_id,
        name=name,
        color=_rgb(color),
        tg263=None if organ is None else organ.tg263,
        code=None if organ is None else organ.code,
        laterality=None if organ is None else organ.laterality,
    )


# What id 0 may be called: the background by any of its usual names (ITK-SNAP "Clear Label",
# 3D Slicer, other languages), never an organ.
BACKGROUND_NAMES = frozenset(
    normalise_name(name)
    for name in (
        "background",
        "bg",
        "clear label",
        "clear",
        "unlabeled",
        "unlabelled",
        "none",
        "exterior",
        "outside",
        "void",
        "empty",
        "nothing",
        "hintergrund",
        "fond",
        "fondo",
        "sfondo",
        "achtergrond",
        "unknown",
        "_background_",
        "background 0",
        "label 0",
        "0",
        "other",
        "unassigned",
        "undefined",
        "null",
        "fundo",
        "arrière-plan",
        "tło",
        "배경",
        "фон",
        "背景",
    )
)
MAX_ENTRIES = 1000  # more classes than any segmentation model here; bounds the work per export
MAX_LABEL_ID = 65535  # label maps are uint8 or uint16


def class_table_from_list(items: Sequence[dict[str, Any]], where: str = "class table") -> ClassTable:
    """A table from its stored form. Entries with only ``id``, ``name`` and ``color`` (as in
    ``*_classes.json`` files written before they held the identity) get their TG-263 name and code
    from the name; the background entry (id 0) is dropped. Every field is checked for its type,
    so a hand-edited table is refused here in one line."""
    if len(items) > MAX_ENTRIES + 1:
        raise ClassTableError(f"{where}: {len(items):,} classes; a class table holds at most {MAX_ENTRIES:,}")
    entries: dict[int, ClassEntry] = {}
    for item in items:
        try:
            entry = _entry_from_item(item)
        except (KeyError, TypeError, ValueError) as error:
            shown = repr(item) if len(repr(item)) <= 120 else repr(item)[:117] + "..."
            raise ClassTableError(f"{where}: malformed class entry {shown} ({error})") from None
        if entry is None:
            continue
        if entry.id in entries:
            raise ClassTableError(f"{where}: class id {entry.id} is listed twice")
        entries[entry.id] = entry
    if not entries:
        raise ClassTableError(f"{where}: no foreground classes (ids from 1 on) in this table")
    return ClassTable(tuple(entries[class_id] for class_id in sorted(entries)))


def _entry_from_item(item: dict[str, Any]) -> ClassEntry | None:
    if not isinstance(item, dict):
        raise TypeError("an entry must be a table with id and name")
    class_id, name = item["id"], item["name"]
    if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id <= MAX_LABEL_ID:
        raise ValueError(f"id {class_id!r} is not a whole number from 0 to {MAX_LABEL_ID}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name {name!r} is not a non-empty text")
    if class_id == 0:
        if normalise_name(name) not in BACKGROUND_NAMES:
            # a table numbered from 0 (enumerate(names)) would put every organ one id off in silence
            raise ValueError(
                f"id 0 is the background, but the table calls it {name!r}: organ ids start at 1 "
                "(numbered from 0?)"
            )
        return None
    color = _rgb(item["color"]) if item.get("color") else _rgb(default_colors(class_id + 1)[class_id])
    if "tg263" not in item:  # names only: derive the identity
        return derived_entry(class_id, name, color)
    tg263 = item["tg263"]
    if tg263 is not None and not isinstance(tg263, str):
        raise ValueError(f"tg263 {tg263!r} is not a text")
    codes = {key: _code(item.get(key), key) for key in ("snomed", "laterality", "category")}
    return ClassEntry(
        id=class_id,
        name=name,
        color=color,
        tg263=tg263 or None,
        code=codes["snomed"],
        laterality=codes["laterality"],
        category=codes["category"] or anatomical_structure(),
    )


def _code(value: Any, key: str) -> Code | None:
    if not value:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(value.get(k), str) for k in ("value", "scheme", "meaning")
    ):
        raise ValueError(f"{key} {value!r} is not a code with value, scheme and meaning texts")
    return Code.from_dict(value)


def _key(code: Code | None) -> tuple[str, str] | None:
    return None if code is None else (code.value, code.scheme)


def _rgb(color: Sequence[Any]) -> tuple[int, int, int]:
    values = tuple(int(channel) for channel in list(color)[:3])
    if len(values) != 3 or not all(0 <= value <= 255 for value in values):
        raise ValueError(f"colour {list(color)} is not three values 0..255")
    return values  # type: ignore[return-value]


def checkpoint_class_table(checkpoint: Any, where: str = "checkpoint") -> ClassTable:
    """The class table a checkpoint carries, or (``derived=True``) the one its class names give."""
    if not checkpoint.class_table:
        return derive_class_table(checkpoint.class_names, checkpoint.class_colors)
    table = class_table_from_list(checkpoint.class_table, where)
    beyond = [class_id for class_id in table.ids if class_id >= len(checkpoint.class_names)]
    if beyond:
        raise ClassTableError(f"{where}: class table names ids {beyond} beyond the model's classes")
    return table
