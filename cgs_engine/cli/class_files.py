"""Reading the ``*_classes.json`` tables that `cgs predict` and the panel write beside label maps."""

from __future__ import annotations

import json
from pathlib import Path

from cgs_engine.errors import CGSError


def read_class_names(path: Path) -> tuple[dict[int, str], dict[int, str]]:
    """(class id -> name, class id -> map file name) for ids > 0; one-line error if unreadable."""
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
        names = {int(c["id"]): str(c["name"]) for c in classes if int(c["id"]) > 0}
        maps = {int(c["id"]): str(c["map"]) for c in classes if int(c["id"]) > 0 and c.get("map")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CGSError(f"{path}: not a readable class table ({' '.join(str(error).split())})") from None
    if any("/" in name or "\\" in name or name.startswith(".") for name in maps.values()):
        raise CGSError(f"{path}: a map file name in this class table is not a plain file name")
    return names, maps
