"""`cgs train STORE -o RUN_DIR [--method ...] [--minutes M | --iterations N] ...`"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from cgs_engine.errors import CGSError

# Engine stages are imported inside the functions that run them: building the parser must not load
# torch (`cgs --help` in a fraction of a second instead of seconds).

# Spelled out so `cgs --help` needs no torch import; a test keeps it equal to the objective's list.
METHODS = ("cgs", "supervised", "fixmatch", "binary-heads", "no-cross", "no-ihed")
# In the run folder of a run started with --no-error-model, so that its --resume does not fit one.
NO_ERROR_MODEL_MARKER = ".no-error-model"


def add_parser(verbs) -> None:
    parser = verbs.add_parser("train", help="train CGS (or a baseline) on a store made by `cgs import`")
    parser.add_argument("store", help="store file from `cgs import` (.h5)")
    parser.add_argument("-o", "--output", required=True, help="run directory (must be new unless --resume)")
    parser.add_argument("--method", choices=METHODS, help="cgs (default) or a baseline / ablation")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes", type=float, help="wall-time budget; LR and lambda schedules follow elapsed time"
    )
    budget.add_argument("--iterations", type=int, help="number of iterations (reference: 30000)")
    parser.add_argument(
        "--size", type=int, dest="input_size", help="square input size in pixels (default 256)"
    )
    parser.add_argument(
        "--batch", type=int, nargs=2, metavar=("LABELED", "UNLABELED"), help="slices per step (default 12 12)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto (GPU when present)")
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        help="auto: bf16 autocast where the CPU/GPU supports it, else fp32",
    )
    parser.add_argument("--val-every", type=int, help="validate every N iterations (default 200)")
    parser.add_argument("--config", help="JSON file of settings (see README); flags override it")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in the -o folder")
    parser.add_argument(
        "--no-error-model",
        dest="error_model",
        action="store_false",
        help="do not fit the likely-wrong map's error model on the store's labeled and val volumes "
        "at the end (fit it later with `cgs review --fit-error-model`)",
    )
    parser.set_defaults(run=run)


def _overrides(args) -> dict:
    chosen = {
        name: getattr(args, name)
        for name in (
            "method",
            "minutes",
            "iterations",
            "input_size",
            "seed",
            "device",
            "precision",
            "val_every",
        )
    }
    if args.batch:
        chosen["batch_labeled"], chosen["batch_unlabeled"] = args.batch
    return {k: v for k, v in chosen.items() if v is not None}


def _printer(event: dict) -> None:
    kind = event["kind"]
    if kind == "start":
        budget = f"{event['total']} iterations" if event["total"] else "a wall-time budget"
        print(f"training {budget} on {event['runtime']}", file=sys.stderr)
        if event.get("mirroring"):
            print(f"  {event['mirroring']}", file=sys.stderr)
        if event.get("distributed", "single process") != "single process":
            print(
                f"  {event['distributed']}; batch {event['batch_meaning']}; lr {event['effective_lr']:g}",
                file=sys.stderr,
            )
    elif kind == "step" and (event["step"] % 50 == 0 or event["step"] == event["total"]):
        of_total = f"/{event['total']}" if event["total"] else ""
        print(
            f"  step {event['step']}{of_total}  loss {event['loss_total']:.4f}"
            f"  lambda {event['lambda']:.3f}  {event['elapsed_s']:.0f}s",
            file=sys.stderr,
        )
    elif kind == "val" and "dice_mean" in event:
        per_class = "  ".join(
            f"{k} {100 * v:.1f}" for k, v in event["dice_per_class"].items() if v is not None
        )
        print(
            f"  val @ {event['step']}: mean Dice {100 * event['dice_mean']:.2f}  ({per_class})",
            file=sys.stderr,
        )


def run(args) -> int:
    from cgs_engine.train.config import TrainConfig
    from cgs_engine.train.loop import train

    overrides = _overrides(args)
    # the device is where it runs, not how it learns: a run started on a GPU may go on on a CPU
    resume_device = overrides.pop("device", None) if args.resume else None
    if args.resume and args.config:
        overrides["config"] = args.config  # it was read for nothing, in silence
    if args.resume and overrides:
        raise CGSError(
            f"{args.output}: --resume continues the recorded settings; drop "
            f"{', '.join('--' + k.replace('_', '-') for k in overrides)}"
        )
    config = None
    if not args.resume:
        config = (
            TrainConfig.from_file(args.config, overrides)
            if args.config
            else TrainConfig.from_dict(overrides, source="the command-line settings")
        )
    marker = Path(args.output) / NO_ERROR_MODEL_MARKER
    skip_fit = not args.error_model or (args.resume and marker.is_file())

    def on_event(event: dict) -> None:
        if event["kind"] == "start" and not args.resume:  # the folder is this run's now
            if args.error_model:
                marker.unlink(missing_ok=True)  # left by an abandoned start in the same folder
            else:
                marker.touch()  # a resumed run remembers --no-error-model (it fitted after all)
        _printer(event)

    with stop_on_interrupt() as interrupted:
        result = train(
            args.store,
            args.output,
            config,
            resume=args.resume,
            on_event=on_event,
            should_stop=interrupted.is_set,
            resume_device=resume_device,
        )
    if interrupted.is_set():
        print(
            f"interrupted at iteration {result.steps_done}: the run's state is saved; continue it with "
            f"cgs train {args.store} -o {args.output} --resume",
            file=sys.stderr,
        )
        return 130
    # rank 0 only under torchrun: the others neither validate nor write the model, so their
    # summary said "best val mean Dice n/a (no val volumes)" and "model: None" beside rank 0's
    main_rank = os.environ.get("RANK", "0") == "0"
    if not main_rank:
        return 0
    best = "n/a (no val volumes)" if result.best_dice is None else f"{100 * result.best_dice:.2f}"
    print(f"done: {result.steps_done}/{result.total_steps} iterations, best val mean Dice {best}")
    print(f"  model: {result.best_checkpoint}")
    # not after an interrupted run, which the user wants to end now
    if skip_fit:
        if args.resume and args.error_model:
            print("  error model: not fitted (the run was started with --no-error-model)")
    elif result.best_checkpoint is not None and main_rank and not result.stopped_early:
        _fit_error_model(result.best_checkpoint)
    return 0


@contextlib.contextmanager
def stop_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl+C asks the run to stop after its step and save its state (it lost every step
    since the last validation, up to the whole run, and --resume then found nothing); a second one
    quits at once."""
    asked = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield asked
        return

    def first(signum, frame) -> None:
        if asked.is_set():
            raise KeyboardInterrupt
        asked.set()
        print(
            "stopping after this step to save the run's state (Ctrl+C again quits at once)", file=sys.stderr
        )

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def _fit_error_model(checkpoint) -> None:
    """Calibrate the run's model for the likely-wrong map and the worklist, on the labeled and val
    volumes of its store. Best effort: the training itself has succeeded whatever happens here."""
    from cgs_engine.checkpoint import load_checkpoint, weights_digest
    from cgs_engine.project.calibration import write_error_model
    from cgs_engine.review.error_model import load_error_model, sidecar_path

    existing = sidecar_path(checkpoint)
    with contextlib.suppress(CGSError, OSError, ValueError):  # unreadable: fitted again below
        digest = weights_digest(load_checkpoint(checkpoint).state_dict)
        if existing.is_file() and load_error_model(existing).fitted_on.get("weights_sha256") == digest:
            # a finished run resumed again: its best model, and so its error model, is unchanged
            print(f"  error model: {existing} is up to date (fitted on these weights)")
            return
    print(
        "fitting the likely-wrong map's error model on the store's labeled and val volumes ...",
        file=sys.stderr,
    )
    try:
        # overwrite: the file belongs to this run, and a resumed run may have a new best model
        model, target = write_error_model(checkpoint, overwrite=True)
    except Exception as error:  # noqa: BLE001 - the run is saved; whatever fails here must not undo its success
        reason = str(error) if isinstance(error, (CGSError, OSError)) else f"{type(error).__name__}: {error}"
        print(
            f"  error model: not fitted ({reason}); the likely-wrong map stays uncalibrated "
            f"(`cgs review --fit-error-model {checkpoint}` fits it later)"
        )
        return
    print(f"  error model: {target} (fitted on {len(model.fitted_on['cases'])} volumes)")
