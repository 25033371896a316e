"""`cgs review DISAGREEMENT [--labels F] [--maps-dir DIR]`: the ranked queue of uncertain regions.

Reads the maps `cgs predict --maps` writes (``<stem>_disagreement.nii.gz``, ``<stem>_map_<class>.nii.gz``
and ``<stem>_classes.json``, uint8 with 255 = 1.0) and prints the regions a person should look at
first, with the busiest slices of the disagreement profile.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from cgs_engine.cli.class_files import read_class_names
from cgs_engine.cli.paths import check_json_target
from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError
from cgs_engine.infer.export import file_safe

DISAGREEMENT_SUFFIX = re.compile(r"_disagreement\.(nii\.gz|nii|mha|mhd|nrrd|nhdr)$", re.IGNORECASE)
BUSIEST_SLICES = 5


def add_parser(verbs) -> None:
    parser = verbs.add_parser("review", help="rank the regions where the model is least sure")
    parser.add_argument(
        "disagreement",
        metavar="DISAGREEMENT_FILE",
        help="<stem>_disagreement.nii.gz from `cgs predict --maps`",
    )
    parser.add_argument(
        "--labels",
        metavar="LABELS_FILE",
        help="label map of the same image (names likely classes without maps)",
    )
    parser.add_argument(
        "--maps-dir",
        metavar="DIR",
        help="folder with the <stem>_map_<class>.nii.gz and <stem>_classes.json of `cgs predict`",
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="disagreement in (0, 1] (default 0.5)")
    parser.add_argument("--min-voxels", type=int, default=5, help="drop smaller regions (default 5)")
    parser.add_argument("--top", type=int, default=20, help="keep the N highest-ranked regions (default 20)")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the queue and the slice profile to this JSON file"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(run=run)


def run(args) -> int:
    from cgs_engine.io import read_volume
    from cgs_engine.review import busiest_slices, find_regions, slice_profile

    if not 0 < args.threshold <= 1:
        raise CGSError(f"--threshold must be in (0, 1], got {args.threshold:g}")
    if args.top < 1 or args.min_voxels < 1:
        raise CGSError("--top and --min-voxels must be at least 1")
    if args.json:
        inputs = [Path(args.disagreement), *([Path(args.labels)] if args.labels else [])]
        if args.maps_dir and Path(args.maps_dir).is_dir():
            inputs += list(Path(args.maps_dir).iterdir())
        else:
            inputs += list(Path(args.disagreement).parent.glob("*_classes.json"))
        check_json_target(Path(args.json), args.overwrite, inputs)
    disagreement = read_volume(args.disagreement, kind="map")
    _check_map_type(disagreement.array, args.disagreement)
    labels = None
    if args.labels:
        labels = read_volume(args.labels, kind="labels")
        _check_grid(labels, disagreement, args.labels)
    class_names, map_paths = _class_table(Path(args.disagreement), args.maps_dir)
    specialist_maps = {}
    for class_id, path in map_paths.items():
        volume = read_volume(path, kind="map")
        _check_map_type(volume.array, str(path))
        _check_grid(volume, disagreement, str(path))
        specialist_maps[class_id] = volume.array
    regions = find_regions(
        disagreement.array,
        labels=None if labels is None else labels.array,
        specialist_maps=specialist_maps or None,
        spacing_zyx=disagreement.geometry.spacing[::-1],
        threshold=args.threshold,
        min_voxels=args.min_voxels,
        max_regions=args.top,
    )
    profile = slice_profile(disagreement.array)
    busiest = busiest_slices(profile, BUSIEST_SLICES)
    rows = [_row(region, disagreement.geometry, class_names) for region in regions]
    _print_queue(args.disagreement, rows, profile, busiest)
    if args.json:
        report = {
            "disagreement": args.disagreement,
            "threshold": args.threshold,
            "geometry": disagreement.geometry.to_dict(),
            "class_names": {str(k): v for k, v in class_names.items()},
            "regions": rows,
            "slice_profile": [float(v) for v in profile],
            "busiest_slices": busiest,
        }
        write_json_atomically(args.json, report, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0


def _row(region, geometry, class_names: dict[int, str]) -> dict:
    z, y, x = region.centroid
    world = geometry.index_to_world() @ np.array([x, y, z, 1.0])
    return {
        "rank": region.id,
        **region.to_dict(),
        "centroid_mm": [round(float(v), 2) for v in world[:3]],
        "likely_class_names": [class_names.get(c, f"class_{c}") for c in region.likely_classes],
    }


def _print_queue(name: str, rows: list[dict], profile: np.ndarray, busiest: list[int]) -> None:
    print(f"{name}: {len(rows)} region(s) to review, most uncertain first")
    if rows:
        header = f"{'rank':>4} {'voxels':>8} {'mL':>8} {'mass':>9} {'source':<14}"
        print(f"{header} {'centroid mm (x, y, z)':<28} likely")
    for row in rows:
        centroid = "(" + ", ".join(f"{v:.1f}" for v in row["centroid_mm"]) + ")"
        likely = ", ".join(row["likely_class_names"]) or "-"
        print(
            f"{row['rank']:>4} {row['voxels']:>8} {row['volume_ml']:>8.2f} {row['mass']:>9.2f} "
            f"{row['source']:<14} {centroid:<28} {likely}"
        )
    if busiest:
        slices = ", ".join(f"{z} ({profile[z]:.1f})" for z in busiest)
        print(f"busiest slices (z index, disagreement mass): {slices}")
    else:
        print("no disagreement anywhere in the volume")


def _class_table(disagreement_path: Path, maps_dir: str | None) -> tuple[dict[int, str], dict[int, Path]]:
    """Class names (id > 0) and the specialist map file of each class found in ``maps_dir``."""
    match = DISAGREEMENT_SUFFIX.search(disagreement_path.name)
    stem = disagreement_path.name[: match.start()] if match else None
    if maps_dir is None:
        beside = disagreement_path.with_name(f"{stem}_classes.json") if stem else None
        return (read_class_names(beside)[0] if beside and beside.is_file() else {}), {}
    folder = Path(maps_dir)
    if not folder.is_dir():
        raise CGSError(f"{folder}: no such folder (--maps-dir)")
    table = folder / f"{stem}_classes.json" if stem else None
    if table is None or not table.is_file():
        tables = sorted(folder.glob("*_classes.json"))
        if len(tables) != 1:
            found = (
                "none"
                if not tables
                else f"{len(tables)}; name the disagreement file <stem>_disagreement.nii.gz"
            )
            raise CGSError(f"{folder}: cannot tell which *_classes.json class table to use ({found})")
        table = tables[0]
    names, map_names = read_class_names(table)
    table_stem = table.name[: -len("_classes.json")]
    paths = {}
    for class_id, name in names.items():
        recorded = map_names.get(class_id)  # the class table names the map file (newer predictions)
        path = folder / (recorded or f"{table_stem}_map_{file_safe(name)}.nii.gz")
        if path.is_file():
            paths[class_id] = path
        else:
            print(f"warning: {path}: no specialist map for class {name!r}", file=sys.stderr)
    if not paths:
        raise CGSError(f"{folder}: no specialist maps ({table_stem}_map_<class>.nii.gz) found")
    return names, paths


def _check_map_type(array: np.ndarray, name: str) -> None:
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise CGSError(f"{name}: expected a uint8 (255 = 1.0) or float map, got {array.dtype} voxels")
    if array.dtype.kind == "f" and array.size:
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise CGSError(
                f"{name}: values {low:g}..{high:g} lie outside 0..1, so this is not a probability or "
                "disagreement map (an image?)"
            )


def _check_grid(volume, reference, name: str) -> None:
    from cgs_engine.io.validate import grid_differences

    differences = grid_differences(volume.shape, volume.geometry, reference.shape, reference.geometry)
    if differences:
        raise CGSError(f"{name}: not on the grid of the disagreement map ({'; '.join(differences)})")
