"""The events a training run and a retrain report, one dataclass per kind.

The training loop (``cgs_engine.train.loop``) emits ``TrainStarted``, ``TrainingStep`` (every
``LOG_EVERY`` steps and the last), ``Validated`` and ``TrainDone``; the step and val events are
also its ``log.jsonl`` records. A retrain (``cgs_engine.retrain``) reports, in order:

  Stage            stage ("preparing data" | "resuming" | "evaluating"), run?
  RetrainWarning   message (a skipped or changed scan, an unused correction, ...)
  RetrainStarted   run, total (None under a minutes budget), minutes, max_iterations, resumed,
                   parent, heldout, keep, runtime
  TrainingStep     step, total, progress (0..1, by steps or by wall time), lr, lambda, elapsed_s,
                   loss_total, loss_* ...
  Validated        step, elapsed_s, dice_mean, dice_per_class (held-out data, reviewed voxels)
  VersionKept      version, activated, reason, status, new_dice, active_dice, new_per_class,
                   active_per_class, compared_with
  RetrainFinished  the version fields plus steps, total
  RetrainCancelled the same (version None, and only reason and steps, when nothing was kept)
  RetrainFailed    error (one line), exit_code (when the worker process died without a word)

Exactly one of finished / cancelled / failed ends a retrain. Across a process boundary (the
retrain worker's stdout) an event travels as ``to_dict()``, one JSON object per line, and
:func:`retrain_event_from_dict` makes it an event again; lines that are not such an object
arrive as ``WorkerLog``. Every event also reads as that dict (``event["kind"]``,
``event.get("dice_mean")``), as log records and JSON lines do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


class Event(Mapping):
    kind: ClassVar[str] = ""
    _omit_none: ClassVar[tuple[str, ...]] = ()  # fields left out of to_dict() while None

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return {
            "kind": self.kind,
            **{k: v for k, v in values.items() if not (k in self._omit_none and v is None)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


# eq=False: events compare as the mappings they read as (Mapping.__eq__), a dict included.
@dataclass(eq=False)
class TrainStarted(Event):
    kind: ClassVar[str] = "start"
    total: int | None = None  # None under a wall-time budget
    runtime: str | None = None
    world: int = 1
    distributed: str = "single process"
    batch_meaning: str = ""
    effective_lr: float = 0.0
    mirroring: str = ""  # what mirror images do to left/right classes (TrainConfig.mirror_plan)


@dataclass(eq=False)
class TrainingStep(Event):
    kind: ClassVar[str] = "step"
    step: int = 0
    total: int | None = None
    lr: float = 0.0
    progress: float = 0.0
    lam: float = 0.0  # "lambda" in the dict
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # what step hooks added (replica_hash)
    losses: dict[str, float] = field(default_factory=dict)  # loss_* and frac_* terms

    def to_dict(self) -> dict[str, Any]:
        head = {"kind": self.kind, "step": self.step, "total": self.total, "lr": self.lr}
        timing = {"progress": self.progress, "lambda": self.lam, "elapsed_s": self.elapsed_s}
        return {**head, **timing, **self.extra, **self.losses}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingStep:
        plain = ("step", "total", "lr", "progress", "elapsed_s")
        losses = {k: v for k, v in data.items() if k.startswith(("loss_", "frac_"))}
        extra = {k: v for k, v in data.items() if k not in (*plain, "kind", "lambda") and k not in losses}
        known = {k: data[k] for k in plain if k in data}
        return cls(**known, lam=data.get("lambda", 0.0), extra=extra, losses=losses)


@dataclass(eq=False)
class Validated(Event):
    kind: ClassVar[str] = "val"
    _omit_none: ClassVar[tuple[str, ...]] = ("dice_mean", "dice_per_class")  # absent without val data
    step: int = 0
    elapsed_s: float = 0.0
    dice_mean: float | None = None
    dice_per_class: dict[str, float | None] | None = None


@dataclass(eq=False)
class TrainDone(Event):
    kind: ClassVar[str] = "done"
    step: int = 0
    total: int | None = None
    best: dict[str, Any] | None = None
    stopped_early: bool = False


@dataclass(eq=False)
class Stage(Event):
    kind: ClassVar[str] = "stage"
    _omit_none: ClassVar[tuple[str, ...]] = ("run",)
    stage: str = ""
    run: str | None = None


@dataclass(eq=False)
class RetrainWarning(Event):
    kind: ClassVar[str] = "warning"
    message: str = ""


@dataclass(eq=False)
class RetrainStarted(Event):
    kind: ClassVar[str] = "start"
    run: str = ""
    total: int | None = None  # None under a wall-time budget
    minutes: float | None = None
    max_iterations: int | None = None
    resumed: bool = False
    parent: str | None = None
    heldout: list[str] = field(default_factory=list)
    keep: str = "final"
    runtime: str | None = None


@dataclass(eq=False)
class VersionKept(Event):
    kind: ClassVar[str] = "version"
    version: str | None = None
    activated: bool = False
    reason: str = ""
    status: str | None = None
    new_dice: float | None = None
    active_dice: float | None = None
    new_per_class: dict[str, float | None] | None = None
    active_per_class: dict[str, float | None] | None = None
    compared_with: str | None = None


@dataclass(eq=False)
class RetrainFinished(VersionKept):
    kind: ClassVar[str] = "finished"
    steps: int = 0
    total: int | None = None


@dataclass(eq=False)
class RetrainCancelled(RetrainFinished):
    kind: ClassVar[str] = "cancelled"

    def to_dict(self) -> dict[str, Any]:
        if self.version is not None:
            return super().to_dict()
        return {"kind": self.kind, "version": None, "activated": False, "reason": self.reason, "steps": 0}


@dataclass(eq=False)
class RetrainFailed(Event):
    kind: ClassVar[str] = "failed"
    _omit_none: ClassVar[tuple[str, ...]] = ("exit_code",)
    error: str = ""
    exit_code: int | None = None  # set when the worker died without reporting (a signal is negative)


@dataclass(eq=False)
class WorkerLog(Event):
    """A line of the worker's output that is not an event."""

    kind: ClassVar[str] = "log"
    text: str = ""


RETRAIN_ENDINGS = (RetrainFinished, RetrainCancelled, RetrainFailed)
_RETRAIN_KINDS = {
    cls.kind: cls
    for cls in (
        Stage,
        RetrainWarning,
        RetrainStarted,
        TrainingStep,
        Validated,
        VersionKept,
        RetrainFinished,
        RetrainCancelled,
        RetrainFailed,
        WorkerLog,
    )
}


def retrain_event_from_dict(data: Mapping[str, Any]) -> Event:
    """The event a retrain's dict (a JSON line of the worker) stands for; unknown kinds as a WorkerLog."""
    if isinstance(data, Event):
        return data
    cls = _RETRAIN_KINDS.get(data.get("kind"))  # type: ignore[arg-type]
    return WorkerLog(text=str(dict(data))) if cls is None else cls.from_dict(data)
