"""`cgs import {acdc,segthor-png,nifti} ... -o STORE`: build a slice store for training."""

from __future__ import annotations

from pathlib import Path

from cgs_engine.cli.paths import expand_images
from cgs_engine.cli.progress import ProgressBar
from cgs_engine.errors import CGSError
from cgs_engine.normalize import Normalization

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

NORMALIZATION_CHOICES = ("auto", "ct", "mr", "minmax", "identity")


def add_parser(verbs) -> None:
    parser = verbs.add_parser("import", help="import a data set into a training store (.h5)")
    kinds = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    acdc = kinds.add_parser("acdc", help="ACDC in the SSL4MIS h5 layout (train_slices.list, val.list, data/)")
    acdc.add_argument("root", help="folder holding train_slices.list, val.list and data/")
    acdc.add_argument(
        "--labeled-patients", type=int, default=3, help="first N patients are labeled (default 3)"
    )

    segthor = kinds.add_parser("segthor-png", help="SegTHOR 2D PNG slices ({train,val}/{img,gt}/)")
    segthor.add_argument("root", help="folder holding train/, val/ and spacing_original_mm.json")
    segthor.add_argument(
        "--labeled-patients", type=int, default=3, help="first N train patients are labeled (default 3)"
    )

    nifti = kinds.add_parser("nifti", help="NIfTI/MHA/NRRD images with label maps, plus unlabeled scans")
    nifti.add_argument("--images", nargs="+", required=True, help="labeled images (files or folders)")
    nifti.add_argument("--labels", nargs="+", required=True, help="their label maps, paired by file name")
    nifti.add_argument("--unlabeled", nargs="*", default=[], help="unlabeled images (files or folders)")
    nifti.add_argument("--val-images", nargs="*", default=[], help="validation images")
    nifti.add_argument("--val-labels", nargs="*", default=[], help="validation label maps")
    nifti.add_argument("--classes", help="comma-separated class names from id 1 on, or 'openkbp'")
    nifti.add_argument(
        "--normalization",
        choices=NORMALIZATION_CHOICES,
        default="auto",
        help="ct: soft-tissue window [-160, 240] HU; mr: 0.5-99.5 percentiles; minmax: each volume "
        "to [0, 1]; identity: values as they are (already normalised); auto: guess from the first image",
    )
    nifti.add_argument(
        "--body-region",
        default="",
        metavar="TEXT",
        help="body region of the scans, e.g. 'head and neck'; the model records it with its training scope",
    )

    for sub in (acdc, segthor, nifti):
        sub.add_argument("-o", "--output", required=True, help="store file to create (.h5)")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing store")
        sub.set_defaults(run=run)


def _class_names(spec: str | None) -> list[str] | None:
    from cgs_engine.classes.organs import openkbp_class_names

    if spec is None:
        return None
    if spec.strip().lower() == "openkbp":
        return openkbp_class_names()
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise CGSError("--classes: give at least one class name")
    return ["background", *names]


def _normalization(choice: str):
    return {
        "auto": None,
        "ct": Normalization(mode="ct-window"),
        "mr": Normalization(mode="mr-percentile"),
        "minmax": Normalization(mode="minmax"),
        "identity": Normalization(mode="identity"),
    }[choice]


def run(args) -> int:
    from cgs_engine.store import SliceStore, importers

    with ProgressBar(f"import {args.dataset}", unit="vol") as bar:
        if args.dataset == "acdc":
            out = importers.import_acdc(args.root, args.output, args.labeled_patients, args.overwrite, bar)
        elif args.dataset == "segthor-png":
            out = importers.import_segthor_png(
                args.root, args.output, args.labeled_patients, args.overwrite, bar
            )
        else:
            out = importers.import_nifti(
                expand_images(args.images, "--images"),
                expand_images(args.labels, "--labels"),
                expand_images(args.unlabeled, "--unlabeled"),
                args.output,
                class_names=_class_names(args.classes),
                normalization=_normalization(args.normalization),
                val_images=expand_images(args.val_images, "--val-images"),
                val_labels=expand_images(args.val_labels, "--val-labels"),
                overwrite=args.overwrite,
                progress=bar,
                body_region=args.body_region,
            )
    with SliceStore.open(out) as store:
        counts = {split: len(store.volume_names(split)) for split in ("labeled", "unlabeled", "val")}
        slices = {split: len(store.slice_index(split)) for split in ("labeled", "unlabeled", "val")}
        classes = ", ".join(store.class_names[1:])
    print(f"wrote {Path(out)}: " + ", ".join(f"{counts[s]} {s} volumes ({slices[s]} slices)" for s in counts))
    print(f"  classes: {classes}")
    return 0
