"""`cgs rtstruct export|import`: label maps to DICOM RT Structure Sets and back, on a CT series."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.dicom_objects import add_export_parser, add_import_parser, export_inputs, import_inputs

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("rtstruct", help="DICOM RT Structure Set (RTSTRUCT) export and import")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = add_export_parser(
        actions, "a label map as an RTSTRUCT on its DICOM series", "RTSTRUCT file to write, e.g. RS.dcm"
    )
    export.add_argument("--label", default="CGS", help="structure set label (default CGS)")
    export.add_argument(
        "--generation",
        choices=["automatic", "semiautomatic", "manual"],
        default="semiautomatic",
        help="ROI generation algorithm written per ROI (default semiautomatic: model output, reviewed)",
    )
    export.set_defaults(run=run_export)
    add_import_parser(
        actions,
        "an RTSTRUCT's contours as a label map on the series' grid",
        "rtstruct",
        "RTSTRUCT file (RS*.dcm)",
        run_import,
    )


def run_export(args) -> int:
    from cgs_engine.dicom import export_rtstruct
    from cgs_engine.dicom.names import shown_name

    labels, table, origin, series = export_inputs(args)
    result = export_rtstruct(
        labels,
        series,
        table,
        args.output,
        overwrite=args.overwrite,
        label=args.label,
        generation=args.generation.upper(),
    )
    print(f"classes: {origin}")
    for roi in result.rois:
        print(
            f"  ROI {roi.name} (class {roi.entry.id} {shown_name(roi.entry.name)}): "
            f"{roi.contours} contours on {roi.slices} slices"
        )
    if result.empty:
        print(f"  no voxels, no ROI: {', '.join(shown_name(entry.structure_name) for entry in result.empty)}")
    for change in result.renamed:
        print(f"warning: {args.output}: {change}", file=sys.stderr)
    print(f"wrote {result.path} ({len(result.rois)} ROIs on {series.describe()})")
    return 0


def run_import(args) -> int:
    from cgs_engine.cli.class_carry import write_import_class_file
    from cgs_engine.dicom import import_rtstruct
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.errors import CGSError
    from cgs_engine.io import write_volume

    table, origin, series = import_inputs(args)
    result = import_rtstruct(args.rtstruct, series, table)
    if result.no_class_matched:  # an all-background map, exit 0: nothing seemed wrong
        names = ", ".join(map(shown_name, result.unmatched))
        raise CGSError(
            f"{args.rtstruct}: none of its ROIs ({names}) is a class of {origin}; pass --classes naming "
            "its organs (a model .pt or a class table .json); nothing written"
        )
    written = write_volume(result.labels, args.output, overwrite=args.overwrite, reference=series.volume)
    write_import_class_file(table, Path(written), series.identity())
    print(f"classes: {origin}")
    for roi in result.rois:
        print(
            f"  ROI {shown_name(roi.roi_name)} -> class {roi.entry.id} {shown_name(roi.entry.name)}: "
            f"{roi.contours} contours, {roi.voxels} voxels"
        )
    if result.unmatched:
        counts = result.dropped.counts.get("no class", {})
        listed = [f"{shown_name(roi)} ({counts.get(roi, 0)} contours)" for roi in result.unmatched]
        print(f"  left out (no class of the table): {', '.join(listed)}")
    for warning in result.warnings:
        print(f"warning: {args.rtstruct}: {warning}", file=sys.stderr)
    print(f"wrote {written} ({series.volume.geometry.describe()})")
    return 0
