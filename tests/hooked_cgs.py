"""`cgs` with test step hooks: ``python hooked_cgs.py [--fail-at RANK:STEP] [--check-replicas] VERB ...``.

Runs the real command line (``cgs_engine.cli.main``) after adding hooks to the training loop
(``cgs_engine.train.hooks``), so subprocess tests, torchrun ranks included, reach the fault and
the replica check without the engine reading anything meant for tests. The hook functions serve
in-process tests too.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cgs_engine.train.distributed import check_replicas_identical
from cgs_engine.train.hooks import STEP_HOOKS, StepDone

HOOKED_CGS = Path(__file__).resolve()  # this file, to run as a script


def fail_at(rank: int, step_index: int):
    """Fails ``rank`` once step ``step_index`` (0-based) is taken, before it is logged or saved."""

    def hook(done: StepDone) -> None:
        if done.context.rank == rank and done.step == step_index + 1:
            raise RuntimeError(f"injected fault on rank {rank} at step {step_index}")

    return hook


def check_replicas(done: StepDone) -> dict:
    """Every step: the ranks' student and teacher hashes gathered and compared (raises if they differ)."""
    return {"replica_hash": check_replicas_identical(done.step, done.context, done.student, done.teacher)}


def main(argv: list[str]) -> None:
    while argv and argv[0] in ("--fail-at", "--check-replicas"):
        option = argv.pop(0)
        if option == "--check-replicas":
            STEP_HOOKS.append(check_replicas)
        else:
            rank, step = argv.pop(0).split(":")
            STEP_HOOKS.append(fail_at(int(rank), int(step)))
    from cgs_engine.cli.main import exit_process
    from cgs_engine.cli.main import main as cgs_main

    sys.argv[1:] = argv  # the command line cgs_main(None) reads, as `cgs` would have it
    exit_process(cgs_main())


if __name__ == "__main__":
    main(sys.argv[1:])
