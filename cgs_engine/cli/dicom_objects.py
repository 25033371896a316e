"""What `cgs rtstruct` and `cgs seg` share: the export and import arguments, and reading the
labels, class table and series both verbs start from."""

from __future__ import annotations

from pathlib import Path

from cgs_engine.cli.paths import add_series_option
from cgs_engine.io.errors import VolumeIOError
from cgs_engine.io.formats import output_name_problem

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

CLASSES_HELP = (
    "class table: a checkpoint (.pt), a class table (.json) or 'openkbp' "
    "(default: LABELS' *_classes.json if there is one, else the OpenKBP organs)"
)


def add_export_parser(actions, help: str, output_help: str):
    """``export LABELS --dicom DIR -o FILE [--classes] [--overwrite] [--series]``; the caller adds
    its own options and ``run``."""
    export = actions.add_parser("export", help=help)
    export.add_argument("labels", help="label map on the series' grid (NIfTI/MHA/NRRD)")
    export.add_argument(
        "--dicom", required=True, help="folder of the DICOM image series the labels belong to"
    )
    export.add_argument("-o", "--output", required=True, help=output_help)
    export.add_argument(
        "--classes",
        help=CLASSES_HELP.replace("if there is one, else the OpenKBP organs", "; required without one"),
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(export)
    return export


def add_import_parser(actions, help: str, source: str, source_help: str, run) -> None:
    """``import SOURCE --dicom DIR -o LABELS [--classes] [--overwrite] [--series]``."""
    imported = actions.add_parser("import", help=help)
    imported.add_argument(source, help=source_help)
    imported.add_argument("--dicom", required=True, help="folder of the DICOM image series it was made on")
    imported.add_argument("-o", "--output", required=True, help="label map to write (NIfTI/MHA/NRRD)")
    imported.add_argument(
        "--classes", help=CLASSES_HELP.replace("LABELS' *_classes.json if there is one, else ", "")
    )
    imported.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(imported)
    imported.set_defaults(run=run)


def export_inputs(args):
    """The labels, the class table (and where it came from) and the series of an export, after
    refusing an output that exists without --overwrite or that would replace an input."""
    from cgs_engine.classes.checks import ClassTableError
    from cgs_engine.classes.files import class_file_for, find_class_file, read_class_file
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import read_series
    from cgs_engine.dicom.files import check_output
    from cgs_engine.errors import CGSError
    from cgs_engine.io import read_volume

    inputs = [args.labels, args.classes if args.classes and Path(args.classes).is_file() else None]
    check_output(args.output, args.overwrite, inputs, series_folder=args.dicom)
    if args.classes is None and find_class_file(args.labels) is None:
        # the ROI names and codes a planning system reads come from this table: never a guess
        raise CGSError(
            f"{args.labels}: no class table beside it ({class_file_for(args.labels).name}); pass --classes "
            "MODEL.pt, TABLE.json or openkbp to say which organ each label value is"
        )
    labels = read_volume(args.labels, kind="labels")
    table, origin = resolve_class_table(args.classes, args.labels)
    series = read_series(args.dicom, args.series)
    try:  # says which series the labels were made on, if one did
        record = find_class_file(args.labels)
    except ClassTableError:
        if args.classes is None:
            raise
        record = None  # a table written for another map: --classes names these labels' organs
    if record is not None:
        series.check_made_on(read_class_file(record).made_on, args.labels, record)
    return labels, table, origin, series


def import_inputs(args):
    """The class table (and where it came from) and the series of an import, after refusing an
    output that cannot be written."""
    from cgs_engine.classes.files import class_file_for
    from cgs_engine.cli.class_carry import refuse_existing_class_file
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import read_series
    from cgs_engine.errors import CGSError

    precheck_volume_output(args.output, args.overwrite)
    # the imported map's class file (its organs and this series) is written beside it
    target = class_file_for(args.output)
    if args.classes and Path(args.classes).is_file() and Path(args.classes).resolve() == target.resolve():
        raise CGSError(
            f"{args.output}: its class file would replace the --classes table {target.name}; name the "
            "output otherwise"
        )
    refuse_existing_class_file(target, args.overwrite, "the imported map's class table goes there")
    table, origin = resolve_class_table(args.classes)
    return table, origin, read_series(args.dicom, args.series)


def precheck_volume_output(path: str, overwrite: bool) -> None:
    """Refuse an existing output before any reading or rasterising (write_volume checks again)."""
    from cgs_engine.io.writers import OVERWRITE_HINT

    target = Path(path)
    problem = output_name_problem(target)
    if problem:
        raise VolumeIOError(path, problem)
    if target.exists() and not overwrite:
        raise VolumeIOError(path, f"already exists ({OVERWRITE_HINT})")
    if not target.parent.is_dir():
        raise VolumeIOError(path, f"output folder {target.parent} does not exist")
