"""`cgs edit TOOL LABELS -o OUT`: a segment-editor tool on one organ of a label map file.

The output keeps the input's geometry exactly; only voxels of the chosen organ and background change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cgs_engine.classes.files import class_file_for, find_class_file, read_class_file
from cgs_engine.cli.edit_prompts import PROMPTS, add_prompt_options, prompt_options, run_prompt
from cgs_engine.errors import CGSError

TOOLS = (
    "fill-between-slices",
    "keep-largest",
    "remove-islands",
    "fill-holes",
    "smooth",
    "grow",
    "shrink",
    *PROMPTS,
)
MM_TOOLS = ("smooth", "grow", "shrink")  # --mm: the sigma of smooth, the margin of grow and shrink
ML_TOOLS = ("remove-islands",)
AXES = {"z": 0, "y": 1, "x": 2}
MODES = ("slice", "3d")


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "edit",
        help="correct one organ of a label map: fill between slices, islands, holes, smooth, grow, shrink, "
        "click, box, or adapt the model to the scan",
    )
    parser.add_argument("tool", metavar="TOOL", help=f"one of {', '.join(TOOLS)}")
    parser.add_argument("labels", metavar="LABELS", help="label map file (NIfTI/MHA/NRRD)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="label map file to write")
    parser.add_argument(
        "--class",
        dest="organ",
        metavar="NAME_OR_ID",
        help="the organ: a class id, or a name from the <stem>_classes.json beside LABELS "
        "(default: the only organ in LABELS)",
    )
    parser.add_argument("--mm", type=float, help="smooth: Gaussian sigma; grow, shrink: margin (millimetres)")
    parser.add_argument(
        "--ml", type=float, help="remove-islands: remove islands smaller than this (millilitres)"
    )
    parser.add_argument(
        "--axis", help="fill-between-slices: the axis the drawn slices cut, z (default), y or x"
    )
    parser.add_argument("--mode", help="fill-holes: 'slice' (each axial slice, default) or '3d'")
    parser.add_argument(
        "--box", metavar="z0:z1,y0:y1,x0:x1", help="change voxels only in this index box (end excluded)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_prompt_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from cgs_engine.edit.checks import EditError
    from cgs_engine.io import read_volume, write_volume

    options = _tool_options(args)
    box = _parse_box(args.box) if args.box else None
    _check_output(Path(args.output), args.overwrite)
    volume = read_volume(args.labels, kind="labels")
    if args.tool == "adapt":
        class_id, name = 0, "every organ"
    else:
        class_id, name = _organ(args.organ, volume.array, Path(args.labels), args.tool == "click")
    if box is not None:
        _check_box(box, args.box, volume.shape)
    spacing_zyx = volume.geometry.spacing[::-1]
    if args.tool in PROMPTS:
        table = find_class_file(args.labels)
        maps = read_class_file(table).map_files() if table is not None else {}
        map_path = None if class_id not in maps else table.with_name(maps[class_id])
        result = run_prompt(args, volume, class_id, name, box, map_path)
    else:
        try:
            result = _apply(args.tool, volume.array, class_id, spacing_zyx, box, options)
        except EditError as error:  # a setting that does not fit this volume: say which volume
            raise CGSError(f"{args.labels}: {error}") from None
    written = write_volume(volume.like(result.labels, "labels"), args.output, overwrite=args.overwrite)
    print(
        f"{args.tool} {name}: {result.changed_voxels} voxels changed "
        f"({result.changed_ml(spacing_zyx):.2f} mL), wrote {written}"
    )
    return 0


def _tool_options(args) -> dict:
    """The options ``args.tool`` takes, checked; an option meant for another tool is refused."""
    tool = args.tool
    if tool not in TOOLS:
        raise CGSError(f"unknown tool {tool!r} (one of {', '.join(TOOLS)})")
    if tool in MM_TOOLS and args.mm is None:
        raise CGSError(
            f"{tool} needs --mm ({'the sigma' if tool == 'smooth' else 'the margin'} in millimetres)"
        )
    if tool in ML_TOOLS and args.ml is None:
        raise CGSError(f"{tool} needs --ml (the smallest island to keep, in millilitres)")
    for option, value, tools in (
        ("--mm", args.mm, MM_TOOLS),
        ("--ml", args.ml, ML_TOOLS),
        ("--axis", args.axis, ("fill-between-slices",)),
        ("--mode", args.mode, ("fill-holes",)),
    ):
        if value is not None and tool not in tools:
            raise CGSError(f"{option} does not apply to {tool} (only to {', '.join(tools)})")
    if args.axis is not None and args.axis not in AXES:
        raise CGSError(f"--axis must be z, y or x, got {args.axis!r}")
    if args.mode is not None and args.mode not in MODES:
        raise CGSError(f"--mode must be slice or 3d, got {args.mode!r}")
    prompt_options(args)
    return {"mm": args.mm, "ml": args.ml, "axis": AXES[args.axis or "z"], "mode": args.mode or "slice"}


def _apply(tool: str, labels: np.ndarray, class_id: int, spacing_zyx, region, options: dict):
    from cgs_engine import edit

    if tool == "fill-between-slices":
        return edit.fill_between_slices(labels, class_id, axis=options["axis"], region=region)
    if tool == "keep-largest":
        return edit.keep_largest_island(labels, class_id, region=region)
    if tool == "remove-islands":
        return edit.remove_small_islands(labels, class_id, options["ml"], spacing_zyx, region=region)
    if tool == "fill-holes":
        return edit.fill_holes(labels, class_id, region=region, mode=options["mode"])
    tools = {"smooth": edit.smooth, "grow": edit.grow, "shrink": edit.shrink}
    return tools[tool](labels, class_id, options["mm"], spacing_zyx, region=region)


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output that cannot be written before reading or computing anything."""
    from cgs_engine.io.formats import SUPPORTED_EXTENSIONS, extension_of

    if extension_of(path) is None:
        raise CGSError(f"{path}: unsupported output type (use one of {', '.join(SUPPORTED_EXTENSIONS)})")
    if path.is_dir():
        raise CGSError(f"{path}: is a folder; give a file name such as labels.nii.gz")
    if path.exists() and not overwrite:
        raise CGSError(f"{path}: already exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise CGSError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CGSError(f"{path}: no permission to write in {path.parent}")


def _parse_box(text: str) -> tuple[slice, slice, slice]:
    parts = [part.split(":") for part in text.split(",")]
    try:
        if len(parts) != 3 or any(len(ends) != 2 for ends in parts):
            raise ValueError
        box = tuple(slice(*(int(end) if end.strip() else None for end in ends)) for ends in parts)
        if any(end is not None and end < 0 for part in box for end in (part.start, part.stop)):
            raise ValueError
    except ValueError:
        expected = "expected z0:z1,y0:y1,x0:x1 (whole numbers >= 0, end excluded, an end may be left out)"
        raise CGSError(f"--box {text!r}: {expected}") from None
    return box  # type: ignore[return-value]


def _check_box(box: tuple[slice, slice, slice], text: str, shape: tuple[int, int, int]) -> None:
    for axis, part, size in zip("zyx", box, shape, strict=True):
        start, stop, _ = part.indices(size)
        if start >= stop:
            raise CGSError(
                f"--box {text!r}: the {axis} range holds no voxel (the volume has {size} along {axis})"
            )


def _organ(
    spec: str | None, labels: np.ndarray, labels_path: Path, may_be_absent: bool = False
) -> tuple[int, str]:
    """(class id, a name to print) from --class, or the only organ in the label map.

    ``may_be_absent``: the organ may have no voxel yet (a positive click can start it)."""
    if spec is None:
        present = [int(v) for v in np.unique(labels) if v != 0]
        if len(present) != 1:
            found = "none" if not present else ", ".join(map(str, present))
            raise CGSError(
                f"{labels_path}: give the organ with --class (class ids in the label map: {found})"
            )
        return present[0], f"class {present[0]}"
    class_id, name = _named_class(spec, labels_path)
    if not may_be_absent and not np.any(labels == class_id):
        present = ", ".join(str(int(v)) for v in np.unique(labels) if v != 0) or "none"
        raise CGSError(
            f"{labels_path}: {name} has no voxel here, nothing to edit (class ids present: {present})"
        )
    return class_id, name


def _named_class(spec: str, labels_path: Path) -> tuple[int, str]:
    text = spec.strip()
    if text.isdigit():
        return int(text), f"class {int(text)}"
    table = find_class_file(labels_path)
    if table is None:
        raise CGSError(
            f"--class {spec!r}: no {class_file_for(labels_path).name} beside {labels_path} to look the name "
            "up in; give the class id"
        )
    names = read_class_file(table).names
    for class_id, name in names.items():
        if name.lower() == text.lower():
            return class_id, f"{name} ({class_id})"
    known = ", ".join(f"{name} ({class_id})" for class_id, name in sorted(names.items()))
    raise CGSError(f"--class {spec!r}: no such class in {table} (it has {known or 'none'})")
