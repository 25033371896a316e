"""Reading the ``*_classes.json`` tables that `cgs predict` and the panel write beside label maps."""

from __future__ import annotations

import json
from pathlib import Path

from cgs_engine.errors import CGSError


def read_class_names(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """(class id -> name, class id -> map file name) for ids > 0; one-line error if unreadable.

    Every entry is checked as ``cgs_engine.dicom.class_table`` checks class tables (types, id
    range, at most ``MAX_ENTRIES``), so a hand-edited table is refused here, not later.
    """
    from cgs_engine.dicom.class_table import class_table_from_list

    try:
        if not path.is_file():
            raise OSError("not a regular file")
        classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
        if not isinstance(classes, list):
            raise TypeError("'classes' is not a list")
        table = class_table_from_list(classes, str(path))
        names = {entry.id: entry.name for entry in table.entries}
        maps = {int(c["id"]): c["map"] for c in classes if c.get("map") and int(c["id"]) > 0}
        if not all(isinstance(name, str) for name in maps.values()):
            raise TypeError("a map file name is not a text")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CGSError(f"{path}: not a readable class table ({' '.join(str(error).split())})") from None
    if any("/" in name or "\\" in name or name.startswith(".") for name in maps.values()):
        raise CGSError(f"{path}: a map file name in this class table is not a plain file name")
    return names, maps
