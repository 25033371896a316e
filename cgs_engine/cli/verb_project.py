"""`cgs project ACTION DIR ...`: create, set-prior-data, add-correction, add-unlabeled,
remove-unlabeled, remove-correction, versions, activate, worklist."""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.paths import add_series_option, check_json_target
from cgs_engine.cli.review_worklist import print_worklist
from cgs_engine.cli.verb_import import NORMALIZATION_CHOICES, _class_names, _normalization
from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError
from cgs_engine.io.formats import is_image_file, strip_image_suffix
from cgs_engine.normalize import Normalization

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser("project", help="create and manage a retraining project folder")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a project (optionally from a base model)")
    create.add_argument("folder", help="new project folder (must not exist or be empty)")
    create.add_argument("--classes", help="comma-separated class names from id 1 on, or 'openkbp'")
    create.add_argument(
        "--normalization",
        choices=[c for c in NORMALIZATION_CHOICES if c != "auto"],
        help="ct: soft-tissue window; mr: percentiles (default: the base model's)",
    )
    create.add_argument("--base-model", help="model checkpoint (.pt) to start from; becomes v0001")
    prior = create.add_mutually_exclusive_group()
    prior.add_argument(
        "--prior-data",
        help="the labeled data the base model learnt from (a prior folder or a slice store), rehearsed "
        "by every retrain; default: the model's own (a <model>.prior folder beside it, or its run's store)",
    )
    prior.add_argument("--no-prior-data", action="store_true", help="start without prior data")

    set_prior = actions.add_parser("set-prior-data", help="copy (or replace) a project's prior data")
    set_prior.add_argument("folder", help="project folder")
    set_prior.add_argument("source", help="a prior folder (prior.json + images/labels) or a slice store")

    correction = actions.add_parser("add-correction", help="add (or replace) a corrected volume")
    correction.add_argument("folder", help="project folder")
    correction.add_argument("--image", required=True, help="the image (NIfTI/MHA/NRRD file or DICOM folder)")
    correction.add_argument("--labels", required=True, help="its corrected label map")
    correction.add_argument(
        "--review",
        help="review mask: 0 = not reviewed (ignored), 1 = the model's label accepted, 2 = drawn or "
        "corrected by you (held-out corrections judge a retrained model on both); default: every voxel 2",
    )
    correction.add_argument(
        "--name", help="correction name (default: the image file name without its extension)"
    )
    correction.add_argument(
        "--overwrite", action="store_true", help="replace an existing correction of that name"
    )
    add_series_option(correction)

    unlabeled = actions.add_parser("add-unlabeled", help="reference unlabeled scans for retraining")
    unlabeled.add_argument("folder", help="project folder")
    unlabeled.add_argument("paths", nargs="+", help="image files, folders of images, or DICOM folders")

    remove_unlabeled = actions.add_parser(
        "remove-unlabeled", help="stop using unlabeled scans (the files themselves stay)"
    )
    remove_unlabeled.add_argument("folder", help="project folder")
    remove_unlabeled.add_argument("paths", nargs="+", help="the scans' paths, as added or as listed")

    remove_correction = actions.add_parser("remove-correction", help="delete a corrected volume")
    remove_correction.add_argument("folder", help="project folder")
    remove_correction.add_argument("name", help="the correction's name")

    versions = actions.add_parser("versions", help="list model versions and held-out Dice")
    versions.add_argument("folder", help="project folder")

    activate = actions.add_parser("activate", help="make a version active (switch or roll back)")
    activate.add_argument("folder", help="project folder")
    activate.add_argument("version", help="version id, e.g. v0002")

    worklist = actions.add_parser(
        "worklist",
        help="the unlabeled scans, the one the active model likely got most wrong first (correct it next)",
    )
    worklist.add_argument("folder", help="project folder")
    worklist.add_argument("--rescore", action="store_true", help="score every scan again (default: reuse)")
    worklist.add_argument("--json", metavar="FILE", help="also write the ordered list to this JSON file")
    worklist.add_argument("--overwrite", action="store_true", help="replace an existing --json file")

    for sub in (
        create,
        set_prior,
        correction,
        unlabeled,
        remove_unlabeled,
        remove_correction,
        versions,
        activate,
        worklist,
    ):
        sub.set_defaults(run=run)


def run(args) -> int:
    return {
        "create": _create,
        "set-prior-data": _set_prior_data,
        "add-correction": _add_correction,
        "add-unlabeled": _add_unlabeled,
        "remove-unlabeled": _remove_unlabeled,
        "remove-correction": _remove_correction,
        "versions": _versions,
        "activate": _activate,
        "worklist": _worklist,
    }[args.action](args)


def _create(args) -> int:
    from cgs_engine.checkpoint import load_checkpoint
    from cgs_engine.project import Project

    names = _class_names(args.classes)
    normalization = _normalization(args.normalization) if args.normalization else None
    if args.base_model and (names is None or normalization is None):
        model = load_checkpoint(args.base_model)
        names = names or model.class_names
        normalization = normalization or Normalization.from_dict(model.normalization)
    if names is None:
        raise CGSError(f"{args.folder}: give --classes (or a --base-model to take them from)")
    if normalization is None:
        raise CGSError(f"{args.folder}: give --normalization (or a --base-model to take it from)")
    prior = None if args.no_prior_data else (args.prior_data or "auto")  # project.AUTO_PRIOR
    project = Project.create(args.folder, names, normalization, base_model=args.base_model, prior_data=prior)
    active = project.active_version()
    print(f"created project {project.folder}: classes {', '.join(names[1:])}; {normalization.describe()}")
    print(f"  active model: {active.id if active else 'none yet (the first retrain trains one)'}")
    print(f"  prior data: {_describe_prior(project.prior_summary())}")
    return 0


def _describe_prior(summary) -> str:
    if not summary:
        return "none (retraining uses only the corrections and unlabeled scans)"
    counts = f"{len(summary['train'])} training + {len(summary['val'])} validation volumes"
    return f"{counts} from {summary['source']}"


def _set_prior_data(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder)
    print(f"prior data: {_describe_prior(project.set_prior_data(args.source))}")
    return 0


def _correction_name(image: str) -> str:
    return strip_image_suffix(Path(image.rstrip("/\\")).name)


def _add_correction(args) -> int:
    from cgs_engine.classes.relabel import in_receiver_classes
    from cgs_engine.classes.table import derive_class_table
    from cgs_engine.io import check_same_grid, label_map_problem, read_volume
    from cgs_engine.project import Project
    from cgs_engine.project.corrections import CorrectionExistsError
    from cgs_engine.scope import check_scope

    project = Project.open(args.folder)
    image = read_volume(args.image, series_uid=args.series)
    problem = label_map_problem(image.array)
    if problem is not None:
        raise CGSError(f"{args.image}: {problem}; --image is the scan the labels were drawn on")
    labels = read_volume(args.labels, kind="labels")
    check_same_grid(labels, image, args.labels)
    # another model's or tool's ids: stored under the project's class of the same name, or refused
    project_classes = derive_class_table(project.class_names)
    relabelled = in_receiver_classes(labels.array, args.labels, project_classes, "the project")
    if relabelled.moved:
        print(f"{args.labels}: {relabelled.describe()}")
    highest = int(relabelled.labels.max()) if relabelled.labels.size else 0
    if highest >= len(project.class_names):  # said here so the message names the file, not the correction
        raise CGSError(
            f"{args.labels}: label ids must lie in 0..{len(project.class_names) - 1} "
            f"({', '.join(project.class_names)}), it holds ids up to {highest}"
        )
    review = None
    if args.review:
        review_volume = read_volume(args.review, kind="labels")
        check_same_grid(review_volume, image, args.review)
        review = review_volume.array
        from cgs_engine.review.state import review_mask_problem

        problem = review_mask_problem(review)
        if problem is not None:
            raise CGSError(f"{args.review}: {problem}")
    for warning in check_scope(image, _active_scope(project)):  # saved, but said so
        _print_warning(f"{args.image}: {warning}")
    name = args.name or _correction_name(args.image)
    try:
        info = project.add_correction(
            name, image, relabelled.labels, review, replace="yes" if args.overwrite else "no"
        )
    except CorrectionExistsError as error:
        raise CGSError(
            f"{args.folder}: correction {name!r} already exists (from {error.source}); "
            "pass --name NAME for another name, or --overwrite to replace it"
        ) from None
    share = info.reviewed_voxels / max(1, int(image.array.size))
    print(f"saved correction {info.name!r}: {info.shape[0]} slices, {100 * share:.1f}% of voxels reviewed")
    return 0


def _unlabeled_paths(arguments: list[str]) -> list[Path]:
    """The scans the arguments name; what an earlier `cgs predict` wrote (label maps, specialist and
    likely-wrong maps, named by its ``*_classes.json``) is left out, and said so."""
    from cgs_engine.project.unlabeled import prediction_outputs_among

    paths = []
    for argument in arguments:
        path = Path(argument)
        images = sorted(p for p in path.iterdir() if is_image_file(p)) if path.is_dir() else []
        paths.extend(images or [path])  # a folder without image files may be a DICOM series
    outputs = prediction_outputs_among(paths)
    scans = [path for path in paths if path.expanduser().resolve() not in outputs]
    if not scans:
        raise CGSError(
            f"{arguments[0]}: no scans to add, only outputs of an earlier prediction, edit or export"
        )
    if outputs:
        folders = ", ".join(sorted({str(path.parent) for path in outputs}))
        print(
            f"left out {len(outputs)} output file(s) of an earlier prediction, edit or export in {folders}",
            file=sys.stderr,
        )
    return scans


def _add_unlabeled(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder)
    paths = _unlabeled_paths(args.paths)
    named = {Path(argument) for argument in args.paths}
    added = project.add_unlabeled(
        paths,
        scope=_active_scope(project),
        warn=_print_warning,
        listed=[path for path in paths if path not in named],  # a segmentation among them stops nothing
    )
    print(f"added {len(added)} unlabeled scan(s); the project references {len(project.unlabeled())}")
    return 0


def _active_scope(project) -> dict:
    """What the active model was trained on (empty without one, or for a model without a record)."""
    from cgs_engine.checkpoint import load_checkpoint

    active = project.active_version()
    return {} if active is None else dict(load_checkpoint(active.model_path).scope)


def _print_warning(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def _remove_unlabeled(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder)
    removed = project.remove_unlabeled(args.paths)
    if not removed:
        raise CGSError(f"{args.paths[0]}: not among the project's unlabeled scans")
    print(f"removed {removed} unlabeled scan(s); the project references {len(project.unlabeled())}")
    return 0


def _remove_correction(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder)
    project.remove_correction(args.name)
    print(f"removed correction {args.name!r}; {len(project.corrections())} left")
    return 0


def _dice(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _versions(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder, check_active=False)
    for problem in project.problems:
        print(f"warning: {problem}", file=sys.stderr)
    versions = project.versions()
    if not versions:
        print("no model versions yet")
        return 0
    active = project.active_version()
    print(f"{'':2}{'version':<9}{'status':<12}{'held-out Dice':>14}  {'created':<26}reason")
    for version in versions:
        mark = "*" if active is not None and version.id == active.id else ""
        print(
            f"{mark:<2}{version.id:<9}{version.status:<12}{_dice(version.heldout_dice):>14}"
            f"  {version.created:<26}{version.reason}"
        )
    new = len(project.new_corrections_since_last_retrain())
    print(f"{new} corrected volume(s) since the last retrain; * = active")
    return 0


def _activate(args) -> int:
    from cgs_engine.project import Project

    project = Project.open(args.folder, check_active=False)
    version = project.activate(args.version)
    print(f"active model: {version.id} ({version.status})")
    return 0


def _worklist(args) -> int:
    from cgs_engine.project import Project
    from cgs_engine.project.worklist import iterate_project_worklist
    from cgs_engine.review.worklist import ordered

    project = Project.open(args.folder)
    if args.json:  # not a scan, nor in the project folder (--overwrite replaced project.json)
        inputs = [project.folder, *(scan.path for scan in project.unlabeled())]
        check_json_target(Path(args.json), args.overwrite, inputs)
    total = len(project.unlabeled())
    if total == 0:
        print("the project has no unlabeled scans (cgs project add-unlabeled DIR SCANS...)")
        return 0
    scores = []
    for index, score in enumerate(iterate_project_worklist(project, rescore=args.rescore), start=1):
        print(f"  [{index}/{total}] {score.describe()}", file=sys.stderr)
        scores.append(score)
    ranked = ordered(scores)
    print_worklist(ranked)
    if args.json:
        write_json_atomically(
            args.json, {"project": str(project.folder), "scans": [s.to_dict() for s in ranked]}
        )
        print(f"wrote {args.json}")
    return 0
