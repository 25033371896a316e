"""`cgs predict CHECKPOINT INPUT... -o OUT_DIR [--maps]`: label maps (and maps) on each input's geometry."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.paths import expand_images
from cgs_engine.cli.progress import ProgressBar

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


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
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(run=run)


def stem_of(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _inputs(arguments: list[str]) -> list[Path]:
    from cgs_engine.io import is_supported_path

    found: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir() and is_supported_path(path):  # a DICOM series folder
            found.append(path)
        else:
            found.extend(expand_images([argument], "INPUT"))
    return found


def run(args) -> int:
    from cgs_engine.dicom.class_table import checkpoint_class_table
    from cgs_engine.infer import Predictor, write_prediction
    from cgs_engine.io import read_volume

    inputs = _inputs(args.inputs)
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision)
    print(f"model: {', '.join(predictor.class_names[1:])} on {predictor.runtime.describe()}", file=sys.stderr)
    for path in inputs:
        volume = read_volume(path)
        with ProgressBar(f"predict {path.name}", unit="slice") as bar:
            prediction = predictor.predict(volume, maps=args.maps, progress=bar)
        written = write_prediction(
            prediction,
            args.output,
            stem_of(path),
            maps=args.maps,
            overwrite=args.overwrite,
            class_colors=predictor.checkpoint.class_colors,
            class_table=checkpoint_class_table(predictor.checkpoint, args.checkpoint).to_list(),
        )
        print(
            f"{path}: {prediction.seconds:.1f} s -> {written['labels']}"
            + (f" (+{len(written) - 2} maps)" if args.maps else "")
        )
    return 0
