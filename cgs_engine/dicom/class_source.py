"""Which class table a command uses: given (a checkpoint, a JSON table, 'openkbp'), found beside the
label map (the ``*_classes.json`` of ``cgs predict`` and the panel), or the OpenKBP organs."""

from __future__ import annotations

import os
from pathlib import Path

from .class_table import (
    ClassTable,
    ClassTableError,
    checkpoint_class_table,
    derive_class_table,
    read_class_table,
)

LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def sidecar_candidates(labels_path: str | os.PathLike) -> list[Path]:
    """Class tables that may sit beside a label map: ``scan_classes.json`` beside
    ``scan_labels.nii.gz`` (cgs predict) and ``x_classes.json`` beside ``x.nii.gz`` (the panel)."""
    path = Path(labels_path)
    stem = path.name
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    names = [f"{stem}_classes.json"]
    if stem.endswith("_labels"):
        names.append(f"{stem[: -len('_labels')]}_classes.json")
    return [path.with_name(name) for name in names]


def resolve_class_table(
    spec: str | None, labels_path: str | os.PathLike | None = None
) -> tuple[ClassTable, str]:
    """The table and a few words on where it came from."""
    if spec is None:
        for candidate in sidecar_candidates(labels_path) if labels_path else []:
            if candidate.is_file():
                return read_class_table(candidate), f"class table {candidate}"
        return openkbp_table(), "the OpenKBP organs (no --classes given, no class table beside the labels)"
    if spec.strip().lower() == "openkbp":
        return openkbp_table(), "the OpenKBP organs"
    path = Path(spec)
    if path.suffix.lower() == ".pt":
        from cgs_engine.checkpoint import load_checkpoint

        table = checkpoint_class_table(load_checkpoint(path), str(path))
        origin = "derived from its class names" if table.derived else "stored in it"
        return table, f"the class table of {path} ({origin})"
    if path.suffix.lower() == ".json":
        return read_class_table(path), f"class table {path}"
    raise ClassTableError(f"{spec}: --classes takes a checkpoint (.pt), a class table (.json) or 'openkbp'")


def openkbp_table() -> ClassTable:
    from cgs_engine.store.importers import openkbp_class_names

    return derive_class_table(openkbp_class_names())
