"""`cgs edit TOOL LABELS -o OUT`: a segment-editor tool on one organ of a label map file.

The output keeps the input's geometry exactly; only voxels of the chosen organ and background change.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from cgs_engine.classes.files import class_file_for, find_class_file, read_class_file
from cgs_engine.cli.class_carry import carry_class_file, output_class_file
from cgs_engine.cli.edit_prompts import PROMPTS, add_prompt_options, prompt_options, run_prompt
from cgs_engine.edit.checks import EditError
from cgs_engine.edit.tools import AXIS, EDIT_TOOLS, MODE
from cgs_engine.errors import CGSError
from cgs_engine.io.formats import output_name_problem

# Reading and writing volumes is imported inside run(): building the parser must not load more than
# the tool table (`cgs --help` in a fraction of a second instead of seconds).

TOOLS = (*EDIT_TOOLS, *PROMPTS)
MARGIN_TOOLS = ("grow", "shrink")  # a margin under one voxel moves no voxel centre


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "edit",
        help="correct one organ of a label map: fill between slices, islands, holes, smooth, grow, shrink, "
        "click, box, or adapt the model to the scan",
        epilog="tools:\n"
        + "\n".join(f"  {tool.name:<20} {tool.description}" for tool in EDIT_TOOLS.values())
        + "\n  click, box, adapt    correct by pointing, or adapt the model (see their options)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--axis",
        help="fill-between-slices, fill-holes: the patient's axis the slices cut, whatever the file's "
        "storage order: z (axial slices, default), y (coronal) or x (sagittal)",
    )
    parser.add_argument("--mode", help="fill-holes: 'slice' (each slice across --axis, default) or '3d'")
    parser.add_argument(
        "--box", metavar="z0:z1,y0:y1,x0:x1", help="change voxels only in this index box (end excluded)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    add_prompt_options(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    from cgs_engine.io import read_volume, write_volume

    options = _tool_options(args)
    box = _parse_box(args.box) if args.box else None
    _check_output(Path(args.output), args.overwrite)
    _refuse_output_among_inputs(args)
    source_table = output_class_file(Path(args.labels), Path(args.output), args.overwrite)
    volume = read_volume(args.labels, kind="labels")
    if args.tool == "adapt":
        class_id, name = 0, "every organ"
    else:
        class_id, name = _organ(args.organ, volume.array, Path(args.labels), args.tool == "click")
    if box is not None:
        _check_box(box, args.box, volume.shape)
    spacing_zyx = volume.geometry.spacing[::-1]
    finest = float(min(spacing_zyx))
    if args.tool in MARGIN_TOOLS and args.mm is not None and 0 < args.mm + 1e-6 < finest:
        # it wrote the volume unchanged ("0 voxels changed"), and nothing said why
        raise CGSError(
            f"{args.labels}: --mm {args.mm:g} is less than its finest voxel spacing ({finest:.2f} mm): no "
            f"voxel centre is that close to the organ, so {args.tool} would change nothing; give "
            f"--mm {smallest_margin_text(finest)} or more"
        )
    if args.tool in PROMPTS:
        table = find_class_file(args.labels)
        maps = read_class_file(table).map_files() if table is not None else {}
        map_path = None if class_id not in maps else table.with_name(maps[class_id])
        result = run_prompt(args, volume, class_id, name, box, map_path)
    else:
        try:
            result = EDIT_TOOLS[args.tool].run(
                volume.array, class_id, spacing_zyx, box, geometry=volume.geometry, **options
            )
        except EditError as error:  # a setting that does not fit this volume: say which volume
            raise CGSError(f"{args.labels}: {error}") from None
    written = write_volume(volume.like(result.labels, "labels"), args.output, overwrite=args.overwrite)
    carried = carry_class_file(source_table, Path(written))
    below_a_voxel = args.tool == "smooth" and not result.changed_voxels and args.mm < finest
    print(
        f"{args.tool} {name}: {result.changed_voxels} voxels changed "
        f"({result.changed_ml(spacing_zyx):.2f} mL), wrote {written}"
        + (f" and {carried.name}" if carried else "")
        + (f" (a sigma under one voxel, {finest:.2f} mm, changes little or nothing)" if below_a_voxel else "")
    )
    return 0


def smallest_margin_text(finest_mm: float) -> str:
    """The finest spacing rounded up to 0.01 mm, after float32 noise is dropped: a header's 1.1 mm
    reads back as 1.1000000238 and was offered as 1.11."""
    return f"{np.ceil(round(finest_mm * 100, 4)) / 100:g}"


def _tool_options(args) -> dict:
    """The options ``args.tool`` takes, checked; an option meant for another tool is refused."""
    tool = args.tool
    if tool not in TOOLS:
        raise CGSError(f"unknown tool {tool!r} (one of {', '.join(TOOLS)})")
    amount = EDIT_TOOLS[tool].amount if tool in EDIT_TOOLS else None
    if amount is not None and getattr(args, amount.unit) is None:
        raise CGSError(f"{tool} needs --{amount.unit} ({amount.meaning})")
    for option in ("mm", "ml", "axis", "mode"):
        takers = [t.name for t in EDIT_TOOLS.values() if option in _options_of(t)]
        if getattr(args, option) is not None and tool not in takers:
            raise CGSError(f"--{option} does not apply to {tool} (only to {', '.join(takers)})")
    for choice in (AXIS, MODE):
        value = getattr(args, choice.name)
        if value is not None and value not in choice.values:
            raise CGSError(f"--{choice.name} must be {choice.spoken()}, got {value!r}")
    if tool == "fill-holes" and args.mode == "3d" and args.axis is not None:
        raise CGSError("--axis does not apply to fill-holes --mode 3d (cavities are closed in 3D)")
    prompt_options(args)
    return {
        "amount": None if amount is None else getattr(args, amount.unit),
        **{
            choice.name: choice.values[getattr(args, choice.name) or choice.default]
            for choice in (AXIS, MODE)
        },
    }


def _options_of(tool) -> tuple[str, ...]:
    """The options of `cgs edit` that ``tool`` takes: --mm or --ml for its amount, and its choices."""
    return (*(() if tool.amount is None else (tool.amount.unit,)), *(choice.name for choice in tool.choices))


def _check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output that cannot be written before reading or computing anything."""
    problem = output_name_problem(path)
    if problem:
        raise CGSError(f"{path}: {problem}")
    if path.is_dir():
        raise CGSError(f"{path}: is a folder; give a file name such as labels.nii.gz")
    if path.exists() and not overwrite:
        raise CGSError(f"{path}: already exists (pass --overwrite to replace it)")
    if not path.parent.is_dir():
        raise CGSError(f"{path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise CGSError(f"{path}: no permission to write in {path.parent}")


def _refuse_output_among_inputs(args) -> None:
    """OUT may be LABELS itself (an edit in place, with --overwrite), never another input nor a map
    its class table names: with --overwrite the CT, the specialist map or a mask was replaced by
    the label map, and a map so replaced fed the next click in silence."""
    output = Path(args.output).resolve()
    for option in ("image", "map", "locked", "reviewed", "model"):
        given = getattr(args, option, None)
        if given is not None and Path(given).resolve() == output:
            raise CGSError(f"{args.output}: is the --{option} input; writing would replace it (choose -o)")
    try:
        table = find_class_file(args.labels)
        maps = read_class_file(table).map_files().values() if table is not None else ()
    except CGSError:  # a damaged or foreign table: the command says so where it reads it
        return
    if any(table.with_name(name).resolve() == output for name in maps):
        raise CGSError(
            f"{args.output}: is a map named in {table.name}, which prompts read; writing would "
            "replace it (choose -o)"
        )


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
    table = find_class_file(labels_path)
    if text.isdigit():
        class_id = int(text)
        names = read_class_file(table).names if table is not None else None
        if names is not None and class_id not in names and class_id != 0:  # 0: the tools say why
            known = ", ".join(f"{i} {n}" for i, n in sorted(names.items()))
            raise CGSError(
                f"--class {class_id}: not an organ of this label map (classes of {table.name}: {known})"
            )
        named = None if names is None else names.get(class_id)
        return class_id, f"class {class_id}" if named is None else f"{named} ({class_id})"
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
