"""`cgs seg export|import`: label maps to DICOM Segmentations (highdicom) and back, on a series."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.dicom_objects import add_export_parser, add_import_parser, export_inputs, import_inputs

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("seg", help="DICOM Segmentation (SEG) export and import")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = add_export_parser(
        actions, "a label map as a DICOM SEG on its DICOM series", "SEG file to write, e.g. SEG.dcm"
    )
    export.add_argument(
        "--type",
        choices=["binary", "labelmap"],
        default="binary",
        help="BINARY (one bit plane per organ, read by most viewers; default) or LABELMAP (DICOM 2024)",
    )
    export.set_defaults(run=run_export)
    add_import_parser(
        actions, "a DICOM SEG as a label map on the series' grid", "seg", "DICOM SEG file", run_import
    )


def run_export(args) -> int:
    from cgs_engine.dicom import export_seg
    from cgs_engine.dicom.names import shown_name

    labels, table, origin, series = export_inputs(args)
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
    from cgs_engine.cli.class_carry import write_import_class_file
    from cgs_engine.dicom import import_seg
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.errors import CGSError
    from cgs_engine.io import write_volume

    table, origin, series = import_inputs(args)
    result = import_seg(args.seg, series, table)
    if not result.segments and result.unmatched:  # an all-background map, exit 0: nothing seemed wrong
        names = ", ".join(map(shown_name, result.unmatched))
        raise CGSError(
            f"{args.seg}: none of its segments ({names}) is a class of {origin}; pass --classes naming "
            "its organs (a model .pt or a class table .json); nothing written"
        )
    written = write_volume(result.labels, args.output, overwrite=args.overwrite, reference=series.volume)
    write_import_class_file(table, Path(written), series.identity())
    print(f"classes: {origin}")
    if result.rule.startswith("FRACTIONAL"):  # probabilities, not masks: say where the line was drawn
        print(f"  {result.rule}")
    for label, entry in result.segments:
        print(f"  segment {shown_name(label)} -> class {entry.id} {shown_name(entry.name)}")
    if result.unmatched:
        print(f"  left out (no class of the table): {', '.join(map(shown_name, result.unmatched))}")
    for warning in result.warnings:  # segments left out, overlaps resolved
        print(f"warning: {args.seg}: {warning}", file=sys.stderr)
    print(f"wrote {written} ({series.volume.geometry.describe()})")
    return 0
