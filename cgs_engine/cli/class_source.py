"""Which class table a command uses: given (a checkpoint, a JSON table, 'openkbp'), found beside the
label map (its class file, see :mod:`cgs_engine.classes.files`), or the OpenKBP organs."""

from __future__ import annotations

import os
from pathlib import Path

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import find_class_file, read_class_table
from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import ClassTable, checkpoint_class_table, derive_class_table

# This module loads torch (checkpoint): the verbs import it inside their run functions, never at the top.


def resolve_class_table(
    spec: str | None, labels_path: str | os.PathLike | None = None
) -> tuple[ClassTable, str]:
    """The table and a few words on where it came from."""
    if spec is None:
        found = find_class_file(labels_path) if labels_path else None
        if found is not None:
            return read_class_table(found), f"class table {found}"
        return openkbp_table(), "the OpenKBP organs (no --classes given, no class table beside the labels)"
    if spec.strip().lower() == "openkbp":
        return openkbp_table(), "the OpenKBP organs"
    path = Path(spec)
    if path.suffix.lower() == ".pt":
        table = checkpoint_class_table(load_checkpoint(path), str(path))
        origin = "derived from its class names" if table.derived else "stored in it"
        return table, f"the class table of {path} ({origin})"
    if path.suffix.lower() == ".json":
        return read_class_table(path), f"class table {path}"
    raise ClassTableError(f"{spec}: --classes takes a checkpoint (.pt), a class table (.json) or 'openkbp'")


def openkbp_table() -> ClassTable:
    return derive_class_table(openkbp_class_names())
