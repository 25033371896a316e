"""`cgs seg export|import`: label maps to DICOM Segmentations (highdicom) and back, on a series."""

from __future__ import annotations

import sys

from cgs_engine.cli.paths import add_series_option
from cgs_engine.cli.verb_rtstruct import CLASSES_HELP, precheck_volume_output

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("seg", help="DICOM Segmentation (SEG) export and import")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="a label map as a DICOM SEG on its DICOM series")
    export.add_argument("labels", help="label map on the series' grid (NIfTI/MHA/NRRD)")
    export.add_argument(
        "--dicom", required=True, help="folder of the DICOM image series the labels belong to"
    )
    export.add_argument("-o", "--output", required=True, help="SEG file to write, e.g. SEG.dcm")
    export.add_argument("--classes", help=CLASSES_HELP)
    export.add_argument(
        "--type",
        choices=["binary", "labelmap"],
        default="binary",
        help="BINARY (one bit plane per organ, read by most viewers; default) or LABELMAP (DICOM 2024)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(export)
    export.set_defaults(run=run_export)
    imported = actions.add_parser("import", help="a DICOM SEG as a label map on the series' grid")
    imported.add_argument("seg", help="DICOM SEG file")
    imported.add_argument("--dicom", required=True, help="folder of the DICOM image series it was made on")
    imported.add_argument("-o", "--output", required=True, help="label map to write (NIfTI/MHA/NRRD)")
    imported.add_argument(
        "--classes", help=CLASSES_HELP.replace("LABELS' *_classes.json if there is one, else ", "")
    )
    imported.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(imported)
    imported.set_defaults(run=run_import)


def run_export(args) -> int:
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import export_seg, read_series
    from cgs_engine.dicom.files import check_output
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.io import read_volume

    check_output(args.output, args.overwrite)
    labels = read_volume(args.labels, kind="labels")
    table, origin = resolve_class_table(args.classes, args.labels)
    series = read_series(args.dicom, args.series)
    result = export_seg(labels, series, table, args.output, args.type.upper(), overwrite=args.overwrite)
    print(f"classes: {origin}")
    for number, entry in enumerate(result.segments, start=1):
        side = f", {entry.laterality.meaning}" if entry.laterality else ""
        code = f"SCT {entry.code.value} {entry.code.meaning}{side}" if entry.code else "no specific code"
        label, name = result.labels[entry.id], shown_name(entry.name)
        print(f"  segment {number} {label} (class {entry.id} {name}): {code}")
    if result.empty:
        names = ", ".join(shown_name(entry.structure_name) for entry in result.empty)
        print(f"  no voxels, no segment: {names}")
    for change in result.renamed:
        print(f"warning: {args.output}: {change}", file=sys.stderr)
    print(
        f"wrote {result.path} ({args.type.upper()}, {len(result.segments)} segments on {series.describe()})"
    )
    return 0


def run_import(args) -> int:
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import import_seg, read_series
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.io import write_volume

    precheck_volume_output(args.output, args.overwrite)
    table, origin = resolve_class_table(args.classes)
    series = read_series(args.dicom, args.series)
    result = import_seg(args.seg, series, table)
    written = write_volume(result.labels, args.output, overwrite=args.overwrite, reference=series.volume)
    print(f"classes: {origin}")
    for label, entry in result.segments:
        print(f"  segment {shown_name(label)} -> class {entry.id} {shown_name(entry.name)}")
    if result.unmatched:
        print(f"  left out (no class of the table): {', '.join(map(shown_name, result.unmatched))}")
    print(f"wrote {written} ({series.volume.geometry.describe()})")
    return 0
