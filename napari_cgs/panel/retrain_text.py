"""Texts of the retrain section: progress of a running retrain, its outcome, the versions list."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cgs_engine.project import VersionInfo
from cgs_engine.train.events import (
    RetrainCancelled,
    RetrainFailed,
    RetrainStarted,
    RetrainWarning,
    Stage,
    TrainingStep,
    Validated,
    retrain_event_from_dict,
)


def dice_text(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


class RetrainProgress:
    """The latest iteration, loss and held-out Dice of a running retrain, as one line of text."""

    def __init__(self) -> None:
        self.stage = "starting the worker"
        self.step = 0
        self.total: int | None = None
        self.minutes: float | None = None
        self.max_iterations: int | None = None  # the cap that ends a timed run early
        self.share = 0.0
        self.loss: float | None = None
        self.dice: float | None = None
        self.dice_step: int | None = None
        self.heldout: list[str] = []
        self.keep = "final"  # which model the retrain keeps: its held-out Dice is the one shown
        self.warnings: list[str] = []

    def update(self, message: Mapping[str, Any]) -> None:
        """Take in a retrain event (or its dict)."""
        event = retrain_event_from_dict(message)
        if isinstance(event, Stage):
            self.stage = event.stage
        elif isinstance(event, RetrainWarning):
            self.warnings.append(event.message)
        elif isinstance(event, RetrainStarted):
            self.stage = "training"
            self.total, self.minutes = event.total, event.minutes
            self.max_iterations = event.max_iterations
            self.heldout = list(event.heldout or [])
            self.keep = str(event.keep or "final")
        elif isinstance(event, TrainingStep):
            self.step, self.share = int(event.step), float(event.progress)
            self.loss = event.losses.get("loss_total")
        elif isinstance(event, Validated) and event.dice_mean is not None and self._is_shown(event.dice_mean):
            # the model the retrain would keep now, scored as the activation rule scores it
            self.dice, self.dice_step = float(event.dice_mean), int(event.step)

    def _is_shown(self, dice: float) -> bool:
        return self.keep != "best" or self.dice is None or float(dice) > self.dice

    def text(self, ended: bool = False) -> str:
        """``Iteration 40/200 · loss 0.532 · held-out Dice 71.2 (iteration 40)``, plus the stage.

        The Dice is the latest one (the retrain keeps its final model) or, with ``retrain_keep``
        "best", the best so far.

        Once ended, the held-out Dice is left to the outcome line, which states it once.
        """
        if not self.step:
            return "" if ended else f"Retraining: {self.stage}…"
        done = f"{self.step}/{self.total}" if self.total else f"{self.step}"
        parts = [f"Iteration {done}"]
        if not self.total and self.minutes:
            # the run ends at its time budget or at max_iterations, whichever comes first
            ends = budget_text(self.minutes, self.max_iterations)
            parts.append(f"{100 * self.share:.0f}% done (ends at {ends})")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.dice is not None and not ended:
            label = "best held-out Dice" if self.keep == "best" else "held-out Dice"
            parts.append(f"{label} {dice_text(self.dice)} (iteration {self.dice_step})")
        if not ended and self.stage != "training":
            parts.append(f"{self.stage}…")
        return " · ".join(parts)


def budget_text(minutes: float, max_iterations: int | None) -> str:
    """``10 min or 600 iterations, whichever comes first``, or ``10 min`` without a cap."""
    if not max_iterations:
        return f"{minutes:g} min"
    return f"{minutes:g} min or {max_iterations} iterations, whichever comes first"


def outcome_headline(message: Mapping[str, Any]) -> str:
    """The first line of the outcome notification (napari shows one line until it is expanded)."""
    event = retrain_event_from_dict(message)
    if isinstance(event, RetrainFailed):
        return "Retrain failed"
    ended = "Retrain cancelled" if isinstance(event, RetrainCancelled) else "Retrain finished"
    if event.version is None:
        return f"{ended}: no version kept"
    return f"{ended}: {event.version} {'activated' if event.activated else 'kept inactive'}"


def outcome_text(message: Mapping[str, Any]) -> str:
    """One line: how the retrain ended and whether the new version was activated (with the reason)."""
    event = retrain_event_from_dict(message)
    if isinstance(event, RetrainFailed):
        return f"Retrain failed: {event.error or 'unknown error'}"
    version, reason, steps = event.version, str(event.reason), event.steps
    ended = "Retrain cancelled" if isinstance(event, RetrainCancelled) else "Retrain finished"
    if version is None:
        return f"{ended} after {steps} iterations; no version kept ({reason})."
    verdict = "activated" if event.activated else "kept inactive"
    return f"{ended} after {steps} iterations: {version} {verdict} ({reason})."


def version_text(version: VersionInfo, active_id: str | None) -> str:
    mark = "●" if version.id == active_id else "  "
    return f"{mark} {version.id} · {version.status} · held-out Dice {dice_text(version.heldout_dice)}"


def version_tooltip(version: VersionInfo) -> str:
    lines = [f"{version.id}: {version.reason}", f"created {version.created} from {version.parent or '-'}"]
    if version.record.get("steps"):
        lines.append(
            f"{version.record['steps']} iterations{' (cancelled)' if version.record.get('cancelled') else ''}"
        )
    per_class = (version.metrics.get("new") or {}).get("dice_per_class") or {}
    if per_class:
        lines.append(
            "held-out Dice per class: " + ", ".join(f"{k} {dice_text(v)}" for k, v in per_class.items())
        )
    return "\n".join(lines)
