"""Entry point of the `cgs` command: parses arguments, runs a verb, turns failures into one line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from cgs_engine import __version__
from cgs_engine.cli import (
    verb_convert,
    verb_edit,
    verb_evaluate,
    verb_import,
    verb_info,
    verb_predict,
    verb_project,
    verb_retrain,
    verb_review,
    verb_rtstruct,
    verb_seg,
    verb_train,
)
from cgs_engine.errors import CGSError, display_path

# Each verb module imports its engine stages inside its run function, so building the parser loads no
# torch: tests/engine/test_cli_startup.py checks it.

VERBS = (
    verb_import,
    verb_train,
    verb_predict,
    verb_review,
    verb_edit,
    verb_evaluate,
    verb_info,
    verb_convert,
    verb_project,
    verb_retrain,
    verb_rtstruct,
    verb_seg,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgs",
        description="CGS semi-supervised multi-organ segmentation for CT and MRI (headless engine).",
    )
    parser.add_argument("--version", action="version", version=f"cgs {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv`` None means the process's own command line (the `cgs` command)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 0
    try:
        code = run_verb(args)
    finally:
        if argv is None:
            # The command is over and its files are complete: Ctrl+C while the interpreter shuts
            # down (unloading torch takes a moment) would otherwise end the process by SIGINT,
            # exit -2 with no word, after it had printed what it wrote.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def run_verb(args) -> int:
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError as error:
        if not stdout_reader_gone():
            print(f"cgs {args.verb}: error: {describe_os_error(error)}", file=sys.stderr)
            return 2
        # `cgs review ... | head`: the reader took what it wanted and left. Like any Unix tool the
        # command ends quietly with the status of a process ended by SIGPIPE, instead of an error
        # line and a second traceback when Python flushes the closed stdout at exit.
        silence_stdout()
        return 128 + SIGPIPE_NUMBER
    except CGSError as error:
        print(f"cgs {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system said no (permissions, a full disk, ...): one line too
        print(f"cgs {args.verb}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"cgs {args.verb}: interrupted; every file is complete or untouched, none half-written",
            file=sys.stderr,
        )
        return 130


SIGPIPE_NUMBER = 13  # the same on Linux and macOS; Windows has no SIGPIPE


def stdout_reader_gone() -> bool:
    """Whether the pipe on stdout lost its reader (the error came from there, not another pipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    try:
        import select

        poller = select.poll()
    except (ImportError, AttributeError):  # Windows: ask the stream itself
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return True
        return False
    poller.register(fd, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def silence_stdout() -> None:
    """Point stdout at the null device so the flush at exit cannot fail a second time."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def exit_process(code: int) -> None:
    """End the process with ``code``.

    Under torchrun, a rank that returns normally sometimes aborted while the interpreter shut
    down ("terminate called without an active exception", exit -6, about 1 run in 14): a thread
    of the distributed runtime outlived the process group. Every file is closed and the process
    group destroyed by then, so a torchrun rank flushes its output and leaves at once, skipping
    that teardown. A plain process exits as usual.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def describe_os_error(error: OSError) -> str:
    reason = error.strerror or str(error).splitlines()[0]
    if error.filename is None:
        return reason
    return f"{display_path(os.fsdecode(error.filename))}: {reason}"


if __name__ == "__main__":
    exit_process(main())
