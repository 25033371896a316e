"""The prompts of `cgs edit`: ``click`` and ``box`` on one organ, ``adapt`` the model to the scan.

click  --point z,y,x (repeat for a scribble) [--negative] [--image CT] [--locked MASK] [--reach-mm]
box    --box z0:z1,y0:y1,x0:x1 (the organ lies in it) [--locked MASK]
adapt  --model CKPT --image CT --reviewed MASK [--seconds]

The organ's specialist map is ``--map``, else the one `cgs predict --maps` named in the
``*_classes.json`` beside LABELS. Masks (review masks of the panel's session, or any label map)
count every non-zero voxel; they and the map must lie on the labels' grid.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cgs_engine.cli.progress import ProgressBar
from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

PROMPTS = ("click", "box", "adapt")
OPTIONS = {  # option -> the prompts that take it
    "point": ("click",),
    "negative": ("click",),
    "map": ("click", "box"),
    "image": ("click", "adapt"),
    "locked": ("click", "box"),
    "reach_mm": ("click",),
    "model": ("adapt",),
    "reviewed": ("adapt",),
    "seconds": ("adapt",),
}


def add_prompt_options(parser) -> None:
    parser.add_argument(
        "--point", action="append", metavar="z,y,x", help="click: the voxel clicked (repeat for a scribble)"
    )
    parser.add_argument("--negative", action="store_true", help="click: remove from the organ (default: add)")
    parser.add_argument(
        "--map", metavar="FILE", help="click, box: the organ's specialist map (cgs predict --maps)"
    )
    parser.add_argument("--image", metavar="FILE", help="click: image support; adapt: the scan (required)")
    parser.add_argument("--locked", metavar="MASK", help="click, box: voxels that must not change (non-zero)")
    parser.add_argument(
        "--reach-mm", type=float, help="click: how far along the organ a click acts (sigma, 15)"
    )
    parser.add_argument("--model", metavar="CKPT", help="adapt: the model checkpoint to adapt (a copy)")
    parser.add_argument(
        "--reviewed",
        metavar="MASK",
        help="adapt: the review mask of the voxels you checked (1 accepted, 2 drawn by you)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="adapt: time budget (60): training stops at 85 %% of it, the re-prediction after it "
        "is not cut short",
    )


def prompt_options(args) -> None:
    """Refuse an option given to the wrong tool, and a prompt without what it needs."""
    for option, tools in OPTIONS.items():
        value = getattr(args, option)
        if value not in (None, False) and args.tool not in tools:
            flag = "--" + option.replace("_", "-")
            raise CGSError(f"{flag} does not apply to {args.tool} (only to {', '.join(tools)})")
    needs = {"click": ("point",), "box": ("box",), "adapt": ("model", "image", "reviewed")}
    for option in needs.get(args.tool, ()):
        if getattr(args, option) is None:
            raise CGSError(f"{args.tool} needs --{option}")
    if args.tool in PROMPTS and args.box is not None and args.tool != "box":
        raise CGSError(f"--box does not apply to {args.tool}")
    if args.seconds is not None and not args.seconds > 0:
        raise CGSError(f"--seconds must be more than 0, got {args.seconds}")


def run_prompt(args, volume, class_id: int, name: str, box, map_path: Path | None):
    from cgs_engine import edit

    labels = volume.array
    spacing_zyx = volume.geometry.spacing[::-1]
    if args.tool == "adapt":
        return _adapt(args, volume)
    probability = _read_on_grid(args.map or map_path, volume, "map", f"the specialist map of {name}")
    locked = (
        None if args.locked is None else _read_on_grid(args.locked, volume, "labels", "the locked mask") != 0
    )
    if args.tool == "box":
        return edit.box_prompt(labels, class_id, box, probability, locked=locked)
    image = None if args.image is None else _read_on_grid(args.image, volume, "image", "the image")
    points = [_parse_point(text) for text in args.point]
    names = _class_names(args.labels, class_id, name)
    inside = [p for p in points if all(0 <= i < n for i, n in zip(p, labels.shape, strict=True))]
    reasons = [edit.why_click_does_nothing(labels, class_id, p, not args.negative, names) for p in inside]
    if reasons and all(reasons):  # the file is written unchanged: say why
        print(f"note: {args.labels}: nothing to change: {reasons[0]}", file=sys.stderr)
    return edit.click(
        labels,
        class_id,
        points,
        not args.negative,
        probability,
        spacing_zyx,
        image=image,
        locked=locked,
        reach_mm=15.0 if args.reach_mm is None else args.reach_mm,
    )


def _class_names(labels_path, class_id: int, name: str) -> dict[int, str]:
    """The organs' names by id from the labels' class file (the clicked one's as given without it)."""
    from cgs_engine.classes.files import find_class_file, read_class_file

    try:
        table = find_class_file(labels_path)
        names = read_class_file(table).names if table is not None else {}
    except CGSError:  # a damaged or foreign table: the organ's own name is enough for a note
        names = {}
    return {class_id: name, **names}


def _adapt(args, volume):
    from cgs_engine.classes.files import find_class_file, read_class_file
    from cgs_engine.edit.adapt import ADAPT_DEFAULTS, adapt_to_scan, trusted_voxels

    image = _read_on_grid(args.image, volume, "image", "the image")
    from cgs_engine.review.state import review_mask_problem

    review = _read_on_grid(args.reviewed, volume, "labels", "the review mask")
    problem = review_mask_problem(review)
    if problem is not None:  # the same mask `cgs project add-correction --review` takes
        raise CGSError(f"{args.reviewed}: {problem}")
    reviewed = review != 0
    with _naming(args.labels):
        trusted = trusted_voxels(volume.array, reviewed, geometry=volume.geometry)
    record = find_class_file(args.labels)
    class_table = read_class_file(record).table if record is not None else None
    seconds = ADAPT_DEFAULTS["seconds"] if args.seconds is None else args.seconds
    with ProgressBar("adapting", unit="step") as bar, _naming(args.labels):
        result = adapt_to_scan(
            args.model,
            image,
            volume.array,
            trusted,
            keep=reviewed,
            seconds=seconds,
            progress=lambda stage, done, total: bar(done, total),
            geometry=volume.geometry,
            class_table=class_table,
        )
    print(
        f"adapted for {result.steps} steps on {result.trained_slices} corrected slices "
        f"in {result.seconds:.0f} s"
    )
    return result


def _read_on_grid(path, volume, kind: str, what: str) -> np.ndarray:
    from cgs_engine.classes.files import label_map_given_as_map
    from cgs_engine.edit.checks import EditError
    from cgs_engine.edit.prompts import check_probability_map
    from cgs_engine.io import read_volume
    from cgs_engine.io.validate import grid_differences

    if path is None:
        raise CGSError(
            f"no file for {what}: pass --map (or run cgs predict --maps, which names it in *_classes.json)"
        )
    other = read_volume(path, kind=kind)
    differences = grid_differences(other.shape, other.geometry, volume.shape, volume.geometry)
    if differences:
        raise CGSError(f"{path}: {what} is not on the labels' grid ({'; '.join(differences)})")
    if kind == "map":
        try:
            check_probability_map(other.array)
        except EditError as error:
            raise CGSError(f"{path}: {error}") from None
        problem = label_map_given_as_map(path, other.array)
        if problem is not None:
            raise CGSError(f"{path}: {problem}")
    return other.array


def _parse_point(text: str) -> tuple[int, int, int]:
    try:
        point = tuple(int(part) for part in text.split(","))
        if len(point) != 3 or min(point) < 0:
            raise ValueError
    except ValueError:
        raise CGSError(f"--point {text!r}: expected z,y,x (three whole numbers >= 0)") from None
    return point  # type: ignore[return-value]


@contextmanager
def _naming(path):
    """An edit refused for what the labels hold names the labels file."""
    from cgs_engine.edit.checks import EditError

    try:
        yield
    except EditError as error:
        raise CGSError(f"{path}: {error}") from None
