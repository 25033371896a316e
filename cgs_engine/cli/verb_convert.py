"""`cgs convert INPUT OUTPUT`: rewrite a volume in another format with its geometry unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.paths import add_series_option
from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "convert", help="convert between NIfTI, MHA/MHD, NRRD (and read DICOM series) keeping geometry"
    )
    parser.add_argument("input", help="NIfTI/MHA/NRRD file or DICOM series folder")
    parser.add_argument("output", help="output file; the extension picks the format")
    parser.add_argument("--labels", action="store_true", help="treat as a label map (uint8/uint16 ids)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(parser)
    parser.add_argument(
        "--resample-tilt",
        action="store_true",
        help="a DICOM series from a tilted gantry (refused otherwise): resample it onto a regular grid",
    )
    parser.set_defaults(run=run)


def run(args) -> int:
    from cgs_engine.cli.class_carry import carry_class_file, output_class_file, refuse_stale_class_file
    from cgs_engine.io import read_volume, write_volume

    kind = "labels" if args.labels else "image"
    if args.resample_tilt:
        from cgs_engine.io.dicom_tilt import read_series_resampling_tilt

        if args.labels:
            raise CGSError(f"{args.input}: --resample-tilt reads images, not label maps")
        volume, tilt = read_series_resampling_tilt(args.input, args.series)
        if tilt is not None:
            print(f"note: {args.input}: resampled {tilt.describe()} onto a regular grid", file=sys.stderr)
    else:
        volume = read_volume(args.input, kind=kind, series_uid=args.series)
    # a label map keeps its class file: which organ each id is, and the series it was made on
    source = output_class_file(Path(args.input), Path(args.output), args.overwrite) if args.labels else None
    if not args.labels:  # a table beside the output would name the organs of what it now holds
        refuse_stale_class_file(Path(args.input), Path(args.output), "is converted as an image (no --labels)")
    written = write_volume(volume, args.output, overwrite=args.overwrite)
    carried = carry_class_file(source, Path(written))
    print(f"wrote {written} ({volume.geometry.describe()})" + (f" and {carried.name}" if carried else ""))
    return 0
