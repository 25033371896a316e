"""`cgs predict CHECKPOINT INPUT... -o OUT_DIR [--maps]`: label maps (and maps) on each input's geometry."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cgs_engine.classes.table import checkpoint_class_table
from cgs_engine.cli.paths import add_series_option, expand_images
from cgs_engine.cli.progress import ProgressBar
from cgs_engine.errors import CGSError
from cgs_engine.io.errors import require_utf8_path
from cgs_engine.io.formats import is_supported_path

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("predict", help="segment volumes with a trained model")
    parser.add_argument("checkpoint", help="model checkpoint (.pt) from `cgs train`")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders of images, or DICOM folders"
    )
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument(
        "--maps",
        action="store_true",
        help="also write per-class specialist maps and the disagreement map (uint8, 255 = 1.0)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: a GPU if there is one"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="auto: bf16 where the CPU or GPU computes it natively, else fp32",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    add_series_option(parser)
    parser.set_defaults(run=run)


def _inputs(arguments: list[str]) -> list[Path]:
    """The scans to segment; in a folder, the files an earlier `cgs predict` wrote there (named by
    its ``*_classes.json``) are its outputs, not scans, and are left out."""
    from cgs_engine.classes.files import prediction_outputs_in

    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and is_supported_path(path):  # a DICOM series folder
            # image files beside the slices were passed over in silence (the folder is read as
            # its series): said, and named, so they can be given as files
            outputs = prediction_outputs_in(path)  # an earlier prediction's files are no scans
            others = sorted(
                p.name
                for p in path.iterdir()
                if p.is_file() and is_supported_path(p) and p.resolve() not in outputs
            )
            if others:
                shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
                print(
                    f"{path}: read as its DICOM series; {len(others)} image file(s) beside it left out "
                    f"({shown}): give them as files to predict them",
                    file=sys.stderr,
                )
            found.append(path)
        elif path.is_dir():
            outputs = prediction_outputs_in(path)
            images = expand_images([argument], "INPUT")
            scans = [image for image in images if image.resolve() not in outputs]
            skipped = len(images) - len(scans)
            if skipped:
                print(
                    f"{path}: left out {skipped} output file(s) of an earlier prediction, edit or export",
                    file=sys.stderr,
                )
            if not scans:
                raise CGSError(
                    f"{path}: no scans in this folder (only outputs of an earlier prediction, edit or export)"
                )
            found.extend(scans)
        else:
            found.extend(expand_images([argument], "INPUT"))
    return found


def check_output_folder(folder: Path) -> None:
    """The output folder exists or can be made, and is writable; checked before any inference."""
    require_utf8_path(folder)
    if folder.exists() and not folder.is_dir():
        raise CGSError(f"{folder}: is a file, not a folder (-o names the output folder)")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CGSError(f"{folder}: cannot be made, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CGSError(f"{folder}: no permission to write in {existing}")


def run(args) -> int:
    from cgs_engine.infer import Predictor, write_prediction
    from cgs_engine.infer.export import check_targets, prediction_paths, unique_stems
    from cgs_engine.io import check_volume_file, read_volume, series_identity
    from cgs_engine.io.validate import label_map_problem
    from cgs_engine.scope import check_scope

    inputs = _inputs(args.inputs)
    output = Path(args.output)
    check_output_folder(output)
    stems = unique_stems(inputs)
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision)
    class_table = checkpoint_class_table(predictor.checkpoint, args.checkpoint)
    resolved_inputs = {path.resolve() for path in inputs}
    for stem in stems:  # every file of every input, before the first inference
        paths = prediction_paths(
            output, stem, predictor.class_names, args.maps, disagreement=predictor.has_specialists
        )
        check_targets(paths, args.overwrite)
        for target in paths.values():
            if target.resolve() in resolved_inputs:
                raise CGSError(f"{target}: is one of the inputs; predicting would replace it (choose -o)")
    for path in inputs:  # a damaged scan is refused before anything is written for the others
        header = check_volume_file(path, args.series if path.is_dir() else None)
        if header is not None:  # and one the model cannot read (slices it cannot pad), alike
            try:
                predictor.field_padding_for(*header)
            except CGSError as error:
                raise CGSError(f"{path}: {error}") from None
    print(f"model: {', '.join(predictor.class_names[1:])} on {predictor.runtime.describe()}", file=sys.stderr)
    for path, stem in zip(inputs, stems, strict=True):
        volume = read_volume(path, series_uid=args.series)
        # a label map given as a scan (an earlier prediction) only said "looks like MR"
        label_map = label_map_problem(volume.array)
        warnings = [f"{label_map}: its prediction means nothing"] if label_map else []
        for warning in warnings or check_scope(volume, predictor.checkpoint.scope):  # (no refusal)
            print(f"warning: {path}: {warning}", file=sys.stderr)
        with ProgressBar(f"predict {path.name}", unit="slice") as bar:
            try:
                prediction = predictor.predict(volume, maps=args.maps, progress=bar)
            except CGSError as error:  # about this scan (e.g. its field of view): name it
                raise CGSError(f"{path}: {error}") from None
        written = write_prediction(
            prediction,
            output,
            stem,
            maps=args.maps,
            overwrite=args.overwrite,
            class_colors=predictor.checkpoint.class_colors,
            class_table=class_table,
            made_on=series_identity(path, args.series) if path.is_dir() else None,
        )
        print(
            f"{path}: {prediction.seconds:.1f} s -> {written['labels']}"
            + (f" (+{len(written) - 2} maps)" if args.maps else "")
        )
    return 0
