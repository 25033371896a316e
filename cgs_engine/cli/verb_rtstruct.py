"""`cgs rtstruct export|import`: label maps to DICOM RT Structure Sets and back, on a CT series."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.paths import add_series_option
from cgs_engine.io.errors import VolumeIOError
from cgs_engine.io.formats import extension_of

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

CLASSES_HELP = (
    "class table: a checkpoint (.pt), a class table (.json) or 'openkbp' "
    "(default: LABELS' *_classes.json if there is one, else the OpenKBP organs)"
)


def add_parser(verbs) -> None:
    parser = verbs.add_parser("rtstruct", help="DICOM RT Structure Set (RTSTRUCT) export and import")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="a label map as an RTSTRUCT on its DICOM series")
    export.add_argument("labels", help="label map on the series' grid (NIfTI/MHA/NRRD)")
    export.add_argument(
        "--dicom", required=True, help="folder of the DICOM image series the labels belong to"
    )
    export.add_argument("-o", "--output", required=True, help="RTSTRUCT file to write, e.g. RS.dcm")
    export.add_argument("--classes", help=CLASSES_HELP)
    export.add_argument("--label", default="CGS", help="structure set label (default CGS)")
    export.add_argument(
        "--generation",
        choices=["automatic", "semiautomatic", "manual"],
        default="semiautomatic",
        help="ROI generation algorithm written per ROI (default semiautomatic: model output, reviewed)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(export)
    export.set_defaults(run=run_export)
    imported = actions.add_parser("import", help="an RTSTRUCT's contours as a label map on the series' grid")
    imported.add_argument("rtstruct", help="RTSTRUCT file (RS*.dcm)")
    imported.add_argument("--dicom", required=True, help="folder of the DICOM image series it was drawn on")
    imported.add_argument("-o", "--output", required=True, help="label map to write (NIfTI/MHA/NRRD)")
    imported.add_argument(
        "--classes", help=CLASSES_HELP.replace("LABELS' *_classes.json if there is one, else ", "")
    )
    imported.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(imported)
    imported.set_defaults(run=run_import)


def run_export(args) -> int:
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import export_rtstruct, read_series
    from cgs_engine.dicom.files import check_output
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.io import read_volume

    check_output(args.output, args.overwrite)
    labels = read_volume(args.labels, kind="labels")
    table, origin = resolve_class_table(args.classes, args.labels)
    series = read_series(args.dicom, args.series)
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
    from cgs_engine.cli.class_source import resolve_class_table
    from cgs_engine.dicom import import_rtstruct, read_series
    from cgs_engine.dicom.names import shown_name
    from cgs_engine.io import write_volume

    precheck_volume_output(args.output, args.overwrite)
    table, origin = resolve_class_table(args.classes)
    series = read_series(args.dicom, args.series)
    result = import_rtstruct(args.rtstruct, series, table)
    written = write_volume(result.labels, args.output, overwrite=args.overwrite, reference=series.volume)
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


def precheck_volume_output(path: str, overwrite: bool) -> None:
    """Refuse an existing output before any reading or rasterising (write_volume checks again)."""
    from cgs_engine.io.writers import OVERWRITE_HINT

    target = Path(path)
    if extension_of(target) is None:
        raise VolumeIOError(path, "unsupported output type (use .nii.gz, .nii, .mha, .mhd, .nrrd or .nhdr)")
    if target.exists() and not overwrite:
        raise VolumeIOError(path, f"already exists ({OVERWRITE_HINT})")
    if not target.parent.is_dir():
        raise VolumeIOError(path, f"output folder {target.parent} does not exist")
