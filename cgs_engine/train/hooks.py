"""Step hooks: callables every rank runs after each training step, for checks the tests install.

Production code never adds one. A hook gets a :class:`StepDone`; what it returns (a dict or None)
is added to that step's log record, and a step with such fields is logged even between the
every-``LOG_EVERY`` records. A hook that raises fails the run there, like a crash at that step.
Tests install hooks by patching ``STEP_HOOKS`` in process, or through ``tests/hooked_cgs.py``
for `cgs` processes (torchrun ranks included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cgs_engine.train.distributed import DistContext


@dataclass(frozen=True)
class StepDone:
    step: int  # steps done, the one just taken included
    context: DistContext
    student: torch.nn.Module
    teacher: torch.nn.Module  # the EMA teacher's network


StepHook = Callable[[StepDone], "dict[str, Any] | None"]
STEP_HOOKS: list[StepHook] = []


def run_step_hooks(done: StepDone) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for hook in STEP_HOOKS:
        extra.update(hook(done) or {})
    return extra
