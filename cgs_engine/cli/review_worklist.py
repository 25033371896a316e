"""The worklist and calibration modes of `cgs review`.

``cgs review --worklist DIR --model PT`` predicts every scan of a folder once (with the maps),
scores how wrong the model likely is on it and prints the scans worst first, each with its
worst organ; ``--json`` keeps the scores. ``cgs review --fit-error-model PT`` fits the error
model of a checkpoint on the labeled data it was trained on (its prior data) and writes it
beside it (``PT`` -> ``<stem>.review.json``), which every later prediction with it reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.cli.paths import check_json_target
from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_arguments(parser) -> None:
    parser.add_argument(
        "--worklist",
        metavar="DIR",
        help="score every scan in DIR (one forward pass each) and list them worst first; needs --model",
    )
    parser.add_argument("--model", metavar="PT", help="the checkpoint that --worklist scores with")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="for --worklist / --fit-error-model"
    )
    parser.add_argument(
        "--fit-error-model",
        metavar="PT",
        help="calibrate the error model of checkpoint PT on the labeled data it was trained on and write "
        "it beside it as <stem>.review.json",
    )
    parser.add_argument(
        "--prior-data",
        metavar="PATH",
        help="with --fit-error-model: the training data (a prior folder or a slice store; default: the "
        "<stem>.prior folder beside the checkpoint, or its training run's store)",
    )
    parser.add_argument(
        "--l2", default="auto", help="with --fit-error-model: L2 penalty, or 'auto' (held-out cases)"
    )
    parser.add_argument(
        "--calibrate-on",
        choices=("all", "train"),
        default="all",
        help="with --fit-error-model: the prior data's training and validation cases (default), or "
        "its training cases only",
    )


def chosen_mode(args):
    """run_worklist / run_fit when that mode was asked for, None for the queue of one prediction."""
    modes = [bool(args.disagreement), bool(args.worklist), bool(args.fit_error_model)]
    if sum(modes) != 1:
        raise CGSError("give one of DISAGREEMENT_FILE, --worklist DIR or --fit-error-model PT")
    if args.worklist:
        return run_worklist
    if args.fit_error_model:
        return run_fit
    return None


def run_worklist(args) -> int:
    from cgs_engine.infer import Predictor
    from cgs_engine.review.worklist import ordered, scans_in_folder, score_scans

    if not args.model:
        raise CGSError("--worklist needs --model PT (the checkpoint to score the scans with)")
    folder = Path(args.worklist)
    scans = scans_in_folder(folder)
    if args.json:  # (a scan of the folder named by --json --overwrite was replaced by the report)
        check_json_target(Path(args.json), args.overwrite, [*scans, Path(args.model)])
    predictor = Predictor(args.model, device=args.device)
    print(f"scoring {len(scans)} scan(s) with {args.model} ({_calibration(predictor)})", file=sys.stderr)
    scores = []
    for index, score in enumerate(score_scans(predictor, scans), start=1):
        print(f"  [{index}/{len(scans)}] {score.describe()}", file=sys.stderr)
        scores.append(score)
    ranked = ordered(scores)
    print_worklist(ranked)
    if args.json:
        write_json_atomically(args.json, {"model": str(args.model), "scans": [s.to_dict() for s in ranked]})
        print(f"wrote {args.json}")
    return 0


def _calibration(predictor) -> str:
    model = predictor.error_model
    if model.calibrated:
        return f"error model fitted on {', '.join(model.fitted_on.get('cases', [])) or 'its training data'}"
    return "no calibrated error model beside it: scores order the scans but are no Dice estimates"


def print_worklist(ranked) -> None:
    print(f"{'rank':>4} {'score':>6} {'likely wrong mL':>16}  {'worst organ (est. Dice)':<28} scan")
    for rank, score in enumerate(ranked, start=1):
        if score.problem:
            print(f"{rank:>4} {'-':>6} {'-':>16}  {'not scored: ' + score.problem}  {score.path}")
            continue
        if score.found_no_organ:
            print(f"{rank:>4} {'-':>6} {'-':>16}  {'no organ found':<28} {score.path}")
            continue
        worst = score.worst_organ()
        organ = "-" if worst is None else f"{worst} ({score.organs[worst]['estimated_dice']:.2f})"
        volume = f"{score.likely_wrong_ml:.1f}" if score.calibrated else "(uncalibrated)"
        print(f"{rank:>4} {score.score:6.3f} {volume:>16}  {organ:<28} {score.path}")


def run_fit(args) -> int:
    from cgs_engine.project.calibration import write_error_model
    from cgs_engine.review.error_model import sidecar_path

    checkpoint = Path(args.fit_error_model)
    target = sidecar_path(checkpoint)
    if target.exists() and not args.overwrite:
        raise CGSError(f"{target}: already exists (pass --overwrite to replace it)")
    if args.l2 != "auto":
        try:
            if float(args.l2) <= 0:
                raise ValueError
        except ValueError:
            raise CGSError(f"--l2 must be 'auto' or a positive number, got {args.l2!r}") from None
    try:
        model, target = write_error_model(
            checkpoint,
            overwrite=args.overwrite,
            prior=args.prior_data,
            l2=args.l2,
            device=args.device,
            report=lambda line: print(f"  {line}"),
            cases_from=args.calibrate_on,
        )
    except CGSError as error:  # "the model predicted no organ on any case": which model
        if str(checkpoint) in str(error):
            raise
        raise CGSError(f"{checkpoint}: {error}") from None
    print(f"wrote {target} (fitted on {', '.join(model.fitted_on['cases'])}; L2 {model.fitted_on['l2']:g})")
    return 0
