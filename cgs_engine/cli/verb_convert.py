"""`cgs convert INPUT OUTPUT`: rewrite a volume in another format with its geometry unchanged."""

from __future__ import annotations

from cgs_engine.cli.paths import add_series_option


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "convert", help="convert between NIfTI, MHA/MHD, NRRD (and read DICOM series) keeping geometry"
    )
    parser.add_argument("input", help="NIfTI/MHA/NRRD file or DICOM series folder")
    parser.add_argument("output", help="output file; the extension picks the format")
    parser.add_argument("--labels", action="store_true", help="treat as a label map (uint8/uint16 ids)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    add_series_option(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from cgs_engine.io import read_volume, write_volume

    kind = "labels" if args.labels else "image"
    volume = read_volume(args.input, kind=kind, series_uid=args.series)
    written = write_volume(volume, args.output, overwrite=args.overwrite)
    print(f"wrote {written} ({volume.geometry.describe()})")
    return 0
