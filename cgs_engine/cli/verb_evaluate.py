"""`cgs evaluate --pred DIR --gt DIR [--json FILE]`: Dice, Jaccard, HD95, ASD per class and volume."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.classes.files import CLASS_FILE_SUFFIX, read_class_file
from cgs_engine.cli.paths import check_json_target, same_file
from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("evaluate", help="compare predicted label maps with reference label maps")
    parser.add_argument("--pred", required=True, help="folder of predicted label maps")
    parser.add_argument("--gt", required=True, help="folder of reference label maps (paired by file name)")
    parser.add_argument(
        "--classes",
        help="comma-separated class names from id 1 on (default: from a "
        "*_classes.json in --pred, else class_N)",
    )
    parser.add_argument("--json", help="write the per-class summary and per-volume values here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.set_defaults(run=run)


def _class_names(receiver, where: str, present: set[int]) -> dict[int, str]:
    """The classes scored: those named (a table's ids may have gaps: 1, 2, 3, 5), each id the
    maps hold named; without names, class_N up to the largest id held."""
    if receiver is None:
        return {i: f"class_{i}" for i in range(1, max(present, default=0) + 1)}
    classes = {entry.id: entry.name for entry in receiver.entries}
    missing = sorted(i for i in present if i not in classes)
    if missing:
        raise CGSError(
            f"{where}: names {len(classes)} class(es), but the label maps hold ids it does not name "
            f"({', '.join(map(str, missing[:5]))}); name every class"
        )
    return classes


def _named_classes(args) -> list[str]:
    """The class names --classes gives, from id 1 on."""
    return [name.strip() for name in args.classes.split(",") if name.strip()]


def _scored_by_organ(args, pred_dir: Path, gt_paths: list[Path]):
    """(the classes every map with a class file of its own is renumbered onto, organ by organ, what
    names them): those --classes names, else the predictions' class table, else the references'
    (predictions without a table were compared by raw id under class_N names, in silence, while
    the references' table numbered the organs otherwise); (None, "") when none names them."""
    from cgs_engine.classes.files import find_class_file
    from cgs_engine.classes.table import derive_class_table

    if args.classes:
        return derive_class_table(["background", *_named_classes(args)]), "--classes"
    tables = sorted(pred_dir.glob(f"*{CLASS_FILE_SUFFIX}"))
    if tables:
        return read_class_file(tables[0]).table, str(tables[0])
    for gt_path in gt_paths:
        table = find_class_file(gt_path)
        if table is not None:
            print(
                f"note: the predictions have no class table: their ids are read as numbered by the "
                f"references' {table} (give --classes if they are numbered otherwise)",
                file=sys.stderr,
            )
            return read_class_file(table).table, str(table)
    return None, ""


def _in_classes(labels, path, receiver):
    from cgs_engine.classes.relabel import in_receiver_classes

    relabelled = in_receiver_classes(labels, path, receiver, "this evaluation")
    if relabelled.moved:
        print(f"{path}: {relabelled.describe()}")
    return relabelled.labels


def run(args) -> int:
    from cgs_engine.classes.relabel import values_present
    from cgs_engine.evaluate import evaluate_volume, format_table, summarise, to_json
    from cgs_engine.evaluate.pairing import pair_files
    from cgs_engine.io import check_same_grid, read_volume

    try:
        paired = pair_files(args.pred, args.gt)
    except ValueError as error:
        raise CGSError(str(error)) from None
    for _name, pred_path, gt_path in paired.pairs:  # (each map scored against itself: Dice 1.0, exit 0)
        if same_file(pred_path, gt_path):
            raise CGSError(f"{pred_path}: is both the prediction and the reference; give the two folders")
    if args.json:
        inputs = [path for folder in (args.pred, args.gt) for path in Path(folder).iterdir()]
        check_json_target(Path(args.json), args.overwrite, inputs)
    for name in paired.missing_pred:
        print(f"warning: {name}: reference without prediction, skipped", file=sys.stderr)
    for name in paired.missing_gt:
        print(f"warning: {name}: prediction without reference, skipped", file=sys.stderr)
    if paired.maps_ignored:
        print(
            f"{paired.maps_ignored} specialist/disagreement/likely-wrong maps beside the label maps "
            "not evaluated"
        )
    loaded = []
    receiver, named_by = _scored_by_organ(args, Path(args.pred), [gt for _, _, gt in paired.pairs])
    for name, pred_path, gt_path in paired.pairs:
        pred, gt = read_volume(pred_path, kind="labels"), read_volume(gt_path, kind="labels")
        check_same_grid(pred, gt, str(pred_path))
        pred_ids, gt_ids = pred.array, gt.array
        if receiver is not None:  # a map whose class file numbers the organs otherwise: by organ
            pred_ids, gt_ids = (
                _in_classes(pred_ids, pred_path, receiver),
                _in_classes(gt_ids, gt_path, receiver),
            )
        loaded.append((name, pred_ids, gt_ids, pred.geometry.spacing[::-1]))
    present = {value for _, p, g, _ in loaded for array in (p, g) for value in values_present(array)}
    classes = _class_names(receiver, named_by, present)
    per_volume = {
        name: evaluate_volume(pred_ids, gt_ids, classes, spacing_zyx=spacing)
        for name, pred_ids, gt_ids, spacing in loaded
    }
    summary = summarise(per_volume, classes)
    print(format_table(summary))
    if args.json:
        write_json_atomically(args.json, to_json(summary, per_volume), overwrite=args.overwrite)
        print(f"wrote {args.json}")
    return 0
