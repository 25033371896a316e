"""`cgs review DISAGREEMENT [--labels F] [--maps-dir DIR]`: the ranked queue of uncertain regions.

Reads the maps `cgs predict --maps` writes (``<stem>_disagreement.nii.gz``, ``<stem>_map_<class>.nii.gz``
and ``<stem>_classes.json``, uint8 with 255 = 1.0) and prints the regions a person should look at
first, with the busiest slices of the disagreement profile. Where `cgs predict` also wrote a
calibrated ``<stem>_likely_wrong.nii.gz`` (and its ``.json``), the regions are where the labels are
likely wrong, ranked by the expected wrong volume, and each organ's likely wrong volume is printed.

Two more modes (``review_worklist``): ``cgs review --worklist DIR --model PT`` scores every scan of
a folder (which to correct first) and ``cgs review --fit-error-model PT`` calibrates a model's
error model on the labeled data it was trained on.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

from cgs_engine.classes.files import CLASS_FILE_SUFFIX, class_file_stem, read_class_file
from cgs_engine.cli import review_worklist
from cgs_engine.cli.paths import check_json_target
from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

DISAGREEMENT_SUFFIX = re.compile(r"_disagreement\.(nii\.gz|nii|mha|mhd|nrrd|nhdr)$", re.IGNORECASE)
BUSIEST_SLICES = 5


def add_parser(verbs) -> None:
    parser = verbs.add_parser("review", help="rank the regions where the model is least sure")
    parser.add_argument(
        "disagreement",
        metavar="DISAGREEMENT_FILE",
        nargs="?",
        help="<stem>_disagreement.nii.gz from `cgs predict --maps` (or use --worklist / --fit-error-model)",
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
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="disagreement in (0, 1] that makes a region (default 0.5); where a likely-wrong map lies "
        "beside the disagreement map, regions are where it is above 0.1",
    )
    parser.add_argument("--min-voxels", type=int, default=5, help="drop smaller regions (default 5)")
    parser.add_argument("--top", type=int, default=20, help="keep the N highest-ranked regions (default 20)")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the queue and the slice profile to this JSON file"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    review_worklist.add_arguments(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    mode = review_worklist.chosen_mode(args)
    if mode is not None:
        return mode(args)
    return _queue(args)


def _queue(args) -> int:
    from cgs_engine.classes.files import label_map_given_as_map
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
            inputs += list(Path(args.disagreement).parent.glob(f"*{CLASS_FILE_SUFFIX}"))
        check_json_target(Path(args.json), args.overwrite, inputs)
    disagreement = read_volume(args.disagreement, kind="map")
    _check_map_type(disagreement.array, args.disagreement)
    problem = label_map_given_as_map(args.disagreement, disagreement.array)
    if problem is not None:
        raise CGSError(f"{args.disagreement}: {problem}")
    labels = None
    if args.labels:
        labels = read_volume(args.labels, kind="labels")
        _check_grid(labels, disagreement, args.labels)
    class_names, map_paths = _class_table(Path(args.disagreement), args.maps_dir)
    if labels is not None:
        labels = labels.like(_in_prediction_ids(labels.array, args.labels, class_names), "labels")
    specialist_maps = {}
    for class_id, path in map_paths.items():
        volume = read_volume(path, kind="map")
        _check_map_type(volume.array, str(path))
        _check_grid(volume, disagreement, str(path))
        specialist_maps[class_id] = volume.array
    likely_wrong, estimate = _likely_wrong(Path(args.disagreement), disagreement)
    regions = find_regions(
        disagreement.array,
        labels=None if labels is None else labels.array,
        specialist_maps=specialist_maps or None,
        spacing_zyx=disagreement.geometry.spacing[::-1],
        threshold=args.threshold,
        min_voxels=args.min_voxels,
        max_regions=args.top,
        likely_wrong=likely_wrong,
    )
    profile = slice_profile(disagreement.array)
    busiest = busiest_slices(profile, BUSIEST_SLICES)
    rows = [_row(region, disagreement.geometry, class_names) for region in regions]
    _print_queue(args.disagreement, rows, profile, busiest)
    changed = [] if estimate is None or labels is None else _organs_changed(estimate, labels, class_names)
    if estimate is not None:
        _print_organs(estimate, changed, args.labels)
    if args.json:
        report = {
            "disagreement": args.disagreement,
            "threshold": args.threshold,
            "geometry": disagreement.geometry.to_dict(),
            "class_names": {str(k): v for k, v in class_names.items()},
            "regions": rows,
            "slice_profile": [float(v) for v in profile],
            "busiest_slices": busiest,
            "ranked_by": "likely wrong volume" if likely_wrong is not None else "disagreement mass",
            "organs": None if estimate is None else estimate["organs"],
            # the per-organ figures are the prediction's; these organs differ in the --labels given
            "organs_changed_in_labels": changed,
        }
        write_json_atomically(args.json, report, overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0


def _likely_wrong(disagreement_path: Path, disagreement) -> tuple[np.ndarray | None, dict | None]:
    """The calibrated likely-wrong map and its per-organ figures `cgs predict` wrote beside the
    disagreement map (``<stem>_likely_wrong.*``), or (None, None): then the queue is the disagreement's."""
    from cgs_engine.classes.files import LIKELY_WRONG_SUFFIX
    from cgs_engine.io import read_volume

    match = DISAGREEMENT_SUFFIX.search(disagreement_path.name)
    if match is None:
        return None, None
    stem = disagreement_path.name[: match.start()]
    table = disagreement_path.with_name(f"{stem}{LIKELY_WRONG_SUFFIX}.json")
    volume_path = disagreement_path.with_name(f"{stem}{LIKELY_WRONG_SUFFIX}.{match.group(1)}")
    if not (table.is_file() and volume_path.is_file()):
        return None, None
    try:
        estimate = json.loads(table.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CGSError(f"{table}: not readable JSON ({type(error).__name__})") from None
    if not isinstance(estimate, dict) or not estimate.get("calibrated"):
        return None, None  # the fallback score ranks voxels, but its "mL" would mean nothing
    volume = read_volume(volume_path, kind="map")
    _check_map_type(volume.array, str(volume_path))
    _check_grid(volume, disagreement, str(volume_path))
    return volume.array, estimate


def _organs_changed(estimate: dict, labels, class_names: dict[int, str]) -> list[str]:
    """The organs whose volume in ``labels`` is not the one the prediction's figures were made for.

    The likely-wrong figures were computed by `cgs predict` for the labels it wrote; given edited
    labels, "likely wrong 1.6 mL of 1.1 mL" was printed for an organ erased from them."""
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    counts = np.bincount(np.asarray(labels.array).ravel().astype(np.int64))
    changed = []
    for class_id, name in class_names.items():
        row = (estimate.get("organs") or {}).get(name)
        if class_id == 0 or not isinstance(row, dict):
            continue
        now = int(counts[class_id]) if class_id < counts.size else 0
        # compared in voxels: millilitres of a float32-rounded spacing drift on a large organ
        if now != round(float(row.get("predicted_ml") or 0.0) / voxel_ml):
            changed.append(name)
    return changed


def _print_organs(estimate: dict, changed: list[str], labels_path: str | None) -> None:
    organs = estimate.get("organs") or {}
    print("likely wrong per organ (expected volume of wrong labels; estimated Dice):")
    if changed:
        print(
            f"  (of the labels cgs predict wrote; {Path(labels_path).name} differs from them in "
            f"{', '.join(changed)}, whose figures do not describe it: marked *)"
        )
    for name, row in sorted(organs.items(), key=lambda item: -(item[1].get("likely_wrong_ml") or 0)):
        dice = row.get("estimated_dice")
        shown = "-" if dice is None else f"{dice:.2f}"
        wrong, predicted = row.get("likely_wrong_ml", 0), row.get("predicted_ml", 0)
        mark = " *" if name in changed else ""
        print(f"  {name:<20} {wrong:7.1f} mL of {predicted:7.1f} mL; {shown}{mark}")


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
    from cgs_engine.infer.export import file_safe

    match = DISAGREEMENT_SUFFIX.search(disagreement_path.name)
    stem = disagreement_path.name[: match.start()] if match else None
    if maps_dir is None:
        beside = disagreement_path.with_name(f"{stem}{CLASS_FILE_SUFFIX}") if stem else None
        return (read_class_file(beside).names if beside and beside.is_file() else {}), {}
    folder = Path(maps_dir)
    if not folder.is_dir():
        raise CGSError(f"{folder}: no such folder (--maps-dir)")
    table = folder / f"{stem}{CLASS_FILE_SUFFIX}" if stem else None
    if table is None or not table.is_file():
        tables = sorted(folder.glob(f"*{CLASS_FILE_SUFFIX}"))
        if len(tables) != 1:
            found = (
                "none"
                if not tables
                else f"{len(tables)}; name the disagreement file <stem>_disagreement.nii.gz"
            )
            raise CGSError(f"{folder}: cannot tell which *_classes.json class table to use ({found})")
        table = tables[0]
    class_file = read_class_file(table)
    names, map_names = class_file.names, class_file.map_files()
    table_stem = class_file_stem(table)
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


def _in_prediction_ids(labels: np.ndarray, labels_path: str, class_names: dict[int, str]) -> np.ndarray:
    """The --labels map in the prediction's ids, organ by organ, when its class file numbers them
    otherwise: read by id, a map numbered Mandible = 1 ... Brainstem = 7 named its regions and
    marked its changed organs by the prediction's Brainstem ... Mandible, exit 0."""
    from cgs_engine.classes.relabel import in_receiver_classes
    from cgs_engine.classes.table import class_table_from_list

    if not class_names:
        return labels
    receiver = class_table_from_list([{"id": i, "name": name} for i, name in class_names.items()])
    relabelled = in_receiver_classes(labels, labels_path, receiver, "the prediction")
    if relabelled.moved:
        print(f"{labels_path}: {relabelled.describe()}")
    return relabelled.labels


def _check_map_type(array: np.ndarray, name: str) -> None:
    from cgs_engine.io.validate import probability_map_problem

    problem = probability_map_problem(array)
    if problem is not None:
        raise CGSError(f"{name}: {problem}")


def _check_grid(volume, reference, name: str) -> None:
    from cgs_engine.io.validate import grid_differences

    differences = grid_differences(volume.shape, volume.geometry, reference.shape, reference.geometry)
    if differences:
        raise CGSError(f"{name}: not on the grid of the disagreement map ({'; '.join(differences)})")
