"""The class file a command's output label map gets: carried from its input, or made for an import.

Every label map a command writes goes out with a class file (``<stem>_classes.json``, see
:mod:`cgs_engine.classes.files`) that says which organ each id is and, where the labels belong to a
DICOM series, which one (``made_on``). Without it an export names the organs from the OpenKBP table
and cannot refuse another patient's series, and a folder of scans takes the map for a scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cgs_engine.classes.files import (
    class_file_for,
    find_class_file,
    labels_named_by,
    read_class_file,
    same_map_name,
    write_class_file,
)
from cgs_engine.classes.table import ClassTable
from cgs_engine.errors import CGSError


def output_class_file(labels: Path, output: Path, overwrite: bool) -> Path | None:
    """The input's class file, when it has one, read and checked before any work: an existing class
    file beside the output is replaced only with ``overwrite``."""
    source = find_class_file(labels)
    if source is None:
        refuse_stale_class_file(labels, output, "has no class table to replace it with")
        return None
    read_class_file(source)  # a damaged one is refused now, not after the output is written
    target = class_file_for(output)
    if output.resolve() == labels.resolve():
        # edited in place: the table that describes the input describes the output (a copy under
        # the output's own name, scan_labels_classes.json beside cgs predict's scan_classes.json,
        # would be found first ever after and hide the table of the next prediction there)
        return None
    if target.resolve() != source.resolve():
        refuse_existing_class_file(target, overwrite, "the new map's class table goes there")
        return source
    named = labels_named_by(source)
    if named is not None and not same_map_name(named, output.name):
        # scan_labels.nii.gz -> scan.nii.gz: both maps' table is scan_classes.json, which must stay
        # scan_labels'; the output would have had none that names it, and been refused ever after
        raise CGSError(
            f"{output}: its class table would be {target.name}, which is {named}'s; name the output otherwise"
        )
    return source


def refuse_stale_class_file(labels: Path, output: Path, why: str) -> None:
    """A class file that would describe the output, when the input has none to replace it with.

    It names the organs of the map the output replaces (or of another map under that name), and
    would be taken for the new map's: its names read for ``--class``, sent out by the DICOM exports.
    Removing a file the user did not name is not ours to do, so the command stops before any work.
    """
    if output.resolve() == labels.resolve():
        return
    try:
        stale = find_class_file(output)
    except CGSError:  # only other maps' tables there: they are not taken for the output's
        return
    if stale is not None:
        raise CGSError(
            f"{output}: {stale.name} beside it names the organs of an earlier map, and {labels.name} {why}; "
            f"move {stale.name} away or write the output elsewhere"
        )


def refuse_existing_class_file(target: Path, overwrite: bool, why: str) -> None:
    if target.exists() and not overwrite:
        raise CGSError(f"{target}: already exists ({why}; pass --overwrite)")


def carry_class_file(source: Path | None, written: Path) -> Path | None:
    """Write ``source`` (the input's class file) for the map ``written``; its series record
    (``made_on``) goes along. Map file names stay only when the map stays in the same folder."""
    if source is None:
        return None
    target = class_file_for(written)
    if target.resolve() == source.resolve():
        return None
    carried = read_class_file(source)
    items = [dict(item) for item in carried.items]
    if source.parent.resolve() != written.parent.resolve():  # map files are named relative to it
        for item in items:
            item.pop("map", None)
    return write_class_file(target, items, written, carried.made_on)


def write_import_class_file(table: ClassTable, written: Path, made_on: Mapping[str, str]) -> Path:
    """The class file of a label map read from a DICOM object onto ``made_on``'s series: the table
    the ROIs or segments were matched to, and that series."""
    items = [{"id": 0, "name": "background", "color": [0, 0, 0]}, *table.to_list()]
    return write_class_file(class_file_for(written), items, written, made_on)
