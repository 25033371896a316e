"""`cgs info VOLUME...`: shape, voxel type, geometry and intensity range of volumes."""

from __future__ import annotations

import json

import numpy as np

from cgs_engine.cli.paths import add_series_option

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("info", help="show shape, spacing, origin and direction of volumes")
    parser.add_argument("paths", nargs="+", metavar="VOLUME", help="NIfTI/MHA/NRRD file or DICOM folder")
    parser.add_argument("--labels", action="store_true", help="read as label maps (validates integer ids)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per volume")
    add_series_option(parser)
    parser.set_defaults(run=run)


def describe(path: str, labels: bool, series_uid: str | None = None) -> dict:
    from cgs_engine.io import read_volume

    volume = read_volume(path, kind="labels" if labels else "image", series_uid=series_uid)
    array = volume.array
    info = {
        "path": path,
        "shape_zyx": list(array.shape),
        "dtype": str(array.dtype),
        **volume.geometry.to_dict(),
        "min": float(array.min()),
        "max": float(array.max()),
    }
    if labels:
        ids, counts = np.unique(array, return_counts=True)
        info["label_voxels"] = {int(i): int(c) for i, c in zip(ids, counts, strict=True)}
    return info


def run(args) -> int:
    for path in args.paths:
        info = describe(path, args.labels, args.series)
        if args.json:
            print(json.dumps(info))
            continue
        spacing = " x ".join(f"{s:g}" for s in info["spacing"])
        print(f"{path}: {info['shape_zyx']} (z, y, x) {info['dtype']}, spacing {spacing} mm (x, y, z)")
        print(f"  origin {info['origin']}  direction {info['direction']}")
        print(f"  values {info['min']:g} .. {info['max']:g}")
        if args.labels:
            print(f"  label voxels {info['label_voxels']}")
    return 0
