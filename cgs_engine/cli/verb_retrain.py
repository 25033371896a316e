"""`cgs retrain PROJECT_DIR [--minutes M | --iterations N] [--resume]`: fine-tune on the corrections."""

from __future__ import annotations

import sys

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "retrain", help="fine-tune the active model of a project on its corrections and unlabeled scans"
    )
    parser.add_argument("project", help="project folder from `cgs project create`")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=float,
        help="wall-time budget (default: the project's setting); the retrain also stops after "
        "600 iterations (project train setting max_iterations); --thorough as many as the model was "
        "first trained with",
    )
    budget.add_argument("--iterations", type=int, help="number of training iterations")
    parser.add_argument(
        "--thorough",
        action="store_true",
        help="the long mode (overnight on a CPU, minutes on a GPU): trains until the corrections are "
        "absorbed; default budget: the project's thorough_minutes",
    )
    parser.add_argument("--resume", action="store_true", help="continue the interrupted retrain")
    parser.set_defaults(run=run)


def _printer(event: dict) -> None:
    kind = event["kind"]
    if kind == "stage":
        print(f"{event['stage']} ...", file=sys.stderr)
    elif kind == "warning":
        print(f"warning: {event['message']}", file=sys.stderr)
    elif kind == "start":
        held = ", ".join(event["heldout"]) or "none"
        verb = "resuming" if event["resumed"] else "training"
        budget = f"{event['total']} iterations" if event["total"] else f"up to {event['minutes']:g} minutes"
        if not event["total"] and event.get("max_iterations"):
            budget += f" or {event['max_iterations']} iterations, whichever comes first"
        print(f"{verb} {budget} from {event['parent'] or 'scratch'}", file=sys.stderr)
        print(f"  held out: {held}", file=sys.stderr)
    elif kind == "step" and (event["step"] % 50 == 0 or event["step"] == event["total"]):
        done = f"{event['step']}/{event['total']}" if event["total"] else f"{event['step']}"
        print(f"  step {done}  loss {event['loss_total']:.4f}  {event['elapsed_s']:.0f}s", file=sys.stderr)
    elif kind == "val" and "dice_mean" in event:
        print(f"  val @ {event['step']}: mean Dice {100 * event['dice_mean']:.2f}", file=sys.stderr)


def _dice(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def run(args) -> int:
    from cgs_engine.retrain import retrain

    result = retrain(
        args.project,
        minutes=args.minutes,
        iterations=args.iterations,
        on_event=_printer,
        resume=args.resume,
        thorough=args.thorough,
    )
    if result is None:  # a torchrun rank other than 0: it trained, rank 0 reports
        return 0
    if result.version is None:
        print(f"no new version: {result.reason}")
        return 0
    ended = "cancelled" if result.cancelled else "done"
    steps = f"{result.steps_done}/{result.total_steps}" if result.total_steps else f"{result.steps_done}"
    print(f"{ended}: {steps} iterations -> version {result.version}")
    if result.new_score is not None:
        old_mean = None if result.active_score is None else result.active_score.dice_mean
        print(
            f"  held-out Dice on {result.new_score.volumes} held-out part(s): "
            f"new {_dice(result.new_score.dice_mean)}, active {result.compared_with or '-'} {_dice(old_mean)}"
        )
        for name, value in result.new_score.dice_per_class.items():
            old = None if result.active_score is None else result.active_score.dice_per_class.get(name)
            print(f"    {name}: {_dice(value)} (active {_dice(old)})")
    print(f"  {result.reason}")
    return 0
