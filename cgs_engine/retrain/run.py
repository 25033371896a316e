"""One retrain, start to end: the run folder, the training, the new version and its activation.

See the package docstring (``cgs_engine.retrain``) for the data, the recipe and the rules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgs_engine.project.project import Project
from cgs_engine.project.versions import ProjectError, now_iso, read_json, write_json_atomically
from cgs_engine.retrain.keep import changed_corrections, changed_reason, keep_version
from cgs_engine.retrain.recipe import train_config
from cgs_engine.retrain.scoring import HeldoutScore
from cgs_engine.retrain.training_store import NOTHING_TO_TRAIN, CancelledWhilePreparing, build_store
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.distributed import DistContext, init_distributed, share_from_main, shutdown
from cgs_engine.train.events import (
    Event,
    RetrainCancelled,
    RetrainFinished,
    RetrainStarted,
    RetrainWarning,
    Stage,
    TrainDone,
    TrainStarted,
    VersionKept,
)
from cgs_engine.train.loop import train

logger = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    run_dir: Path
    version: str | None  # the new version, None when nothing was kept (cancelled before step 1)
    activated: bool
    reason: str
    new_score: HeldoutScore | None
    active_score: HeldoutScore | None
    compared_with: str | None  # the version that was active when the new one was scored
    heldout: list[str]
    steps_done: int
    total_steps: int | None  # a wall-time run reports the steps it managed
    cancelled: bool = False
    resumed: bool = False
    warnings: list[str] = field(default_factory=list)


def retrain(
    project: Project | str | Path,
    minutes: float | None = None,
    iterations: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    settings: dict[str, Any] | None = None,
    resume: bool = False,
    thorough: bool = False,
) -> RetrainResult:
    """Retrain the active model; ``settings`` are TrainConfig overrides. See the module docstring.

    ``thorough``: the long mode (overnight on a CPU, minutes on a GPU) that trains until the
    corrections are absorbed (``THOROUGH_DEFAULTS``); the default is the quick retrain.
    Under torchrun, ranks other than 0 train alongside rank 0 and return None.
    """
    context = init_distributed(str((settings or {}).get("device", "auto")))
    if not context.is_main:
        return _follow_main_rank(context)
    announcer = _Announcer(context)
    try:
        return _retrain_on_main(
            project,
            minutes,
            iterations,
            emit_to(on_event),
            should_stop,
            settings,
            resume,
            announcer,
            thorough,
        )
    finally:
        announcer.close()


def emit_to(on_event: Callable[[Event], None] | None) -> Callable[[Event], None]:
    return on_event or (lambda event: None)


class _Announcer:
    """Tells the other torchrun ranks, once, what to train (or that there is nothing to train)."""

    def __init__(self, context: DistContext) -> None:
        self.context, self.sent = context, False

    def send(self, payload: dict[str, Any] | None) -> None:
        if not self.sent:
            self.sent = True
            share_from_main(payload, self.context)

    def close(self) -> None:
        if not self.sent:
            self.send(None)
            shutdown(self.context)


def _follow_main_rank(context: DistContext) -> None:
    payload = share_from_main(None, context)
    if payload is None:  # rank 0 stopped before training (nothing to train, an error, a finished run)
        shutdown(context)
        return None
    config = None if payload["config"] is None else TrainConfig.from_dict(payload["config"])
    train(payload["store"], payload["run_dir"], config, resume=payload["resume"])
    return None


def _retrain_on_main(project, minutes, iterations, emit, should_stop, settings, resume, announcer, thorough):
    # Opened afresh even when handed an open Project: one held open keeps the settings it read, and
    # a retrain trained with them after another process had changed them (a new learning rate).
    project = Project.open(project.folder if isinstance(project, Project) else project)
    if minutes is not None and iterations is not None:
        raise ProjectError("give minutes or iterations, not both")
    if resume and (minutes is not None or iterations is not None or settings or thorough):
        raise ProjectError("resume continues the interrupted run with its recorded settings; drop the budget")
    with project.retrain_lock():
        if resume:
            run = project.interrupted_run()
            if run is None:
                raise ProjectError(f"{project.runs_dir}: no interrupted retrain to resume")
            if not any(v.run == run.name for v in project.versions()):  # else only activation was left
                _refuse_changed_corrections(project, run)
            return _Retrain(project, run, emit, should_stop, True, announcer).execute(None)
        for stale in project.resumable_runs():
            kept = [v for v in project.versions() if v.run == stale.name]
            if kept:  # killed between keeping its version and activating it: its decision stands
                completing = _Retrain(project, stale, lambda event: None, None, True, announcer)
                completing._complete_existing(kept[0])
                continue
            write_json_atomically(stale / "finished.json", {"outcome": "abandoned", "at": now_iso()})
        active = project.active_version()
        if minutes is None and iterations is None:
            minutes = float(project.settings["thorough_minutes" if thorough else "retrain_minutes"])
        config = train_config(project, active, minutes, iterations, settings, thorough)
        if not any(c.reviewed_voxels for c in project.corrections()):
            raise ProjectError(f"{project.corrections_dir}: {NOTHING_TO_TRAIN}")
        run = project.new_run_dir()
        return _Retrain(project, run, emit, should_stop, False, announcer).execute(config)


def _refuse_changed_corrections(project: Project, run: Path) -> None:
    """A resumed run trains on, and judges with, the data it built when it started: a correction
    removed (or saved again) since then went on being trained on and held out, without a word.
    Such a run is set aside (not offered for resuming again) and the resume refused."""
    plan = read_json(run / "plan.json", "retrain plan")
    used, contents = plan.get("corrections_used", {}), plan.get("corrections_content", {})
    changed = changed_corrections(project, used, contents)
    if changed:
        write_json_atomically(run / "finished.json", {"outcome": "abandoned", "at": now_iso()})
        raise ProjectError(
            f"{run}: cannot resume: since this run started, correction {', '.join(changed)}, so its "
            "training data and held-out test no longer hold; start a new retrain instead"
        )


class _Retrain:
    def __init__(self, project: Project, run: Path, emit, should_stop, resumed: bool, announcer) -> None:
        self.project, self.run, self.emit, self.resumed = project, run, emit, resumed
        self.announcer = announcer
        self.asked_to_stop = False
        self._should_stop = should_stop
        self.warnings: list[str] = []

    def stop_requested(self) -> bool:
        if not self.asked_to_stop and self._should_stop is not None and self._should_stop():
            self.asked_to_stop = True
        return self.asked_to_stop

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.emit(RetrainWarning(message))

    def execute(self, config: TrainConfig | None) -> RetrainResult:
        try:
            return self._execute(config)
        except CancelledWhilePreparing:
            return self._finish_without_version("cancelled before training started")
        except Exception as error:
            try:
                write_json_atomically(
                    self.run / "finished.json", {"outcome": "failed", "error": str(error), "at": now_iso()}
                )
            except OSError as unrecorded:  # a full disk, a moved project: the first failure is the news
                logger.warning("%s: the failure could not be recorded (%s)", self.run, unrecorded)
            raise

    def _execute(self, config: TrainConfig | None) -> RetrainResult:
        store_path = self.run / "store.h5"
        if self.resumed:
            plan = read_json(self.run / "plan.json", "retrain plan")
            self.warnings = list(plan.get("warnings", []))
            kept = [v for v in self.project.versions() if v.run == self.run.name]
            if kept:  # killed after writing the version: only the activation may be missing
                return self._complete_existing(kept[0])
            self.emit(Stage("resuming", str(self.run)))
        else:
            plan = self._plan(store_path)
        result = self._train(store_path, config, plan)
        if result.steps_done == 0:
            return self._finish_without_version("cancelled before the first training step")
        self.emit(Stage("evaluating"))
        kept = keep_version(
            self.project,
            self.run,
            self._kept_checkpoint(result),
            store_path,
            plan,
            result,
            self.asked_to_stop,
            on_stage=lambda stage: self.emit(Stage(stage)),
        )
        return self._finish(
            kept.version_id,
            kept.activated,
            kept.reason,
            kept.new_score,
            kept.active_score,
            kept.record,
            result.steps_done,
            result.total_steps,
        )

    def _plan(self, store_path: Path) -> dict[str, Any]:
        self.emit(Stage("preparing data", str(self.run)))
        plan = build_store(self.project, store_path, self.stop_requested, self.warn)
        active = self.project.active_version()
        plan.update(parent=None if active is None else active.id, created=now_iso(), warnings=self.warnings)
        write_json_atomically(self.run / "plan.json", plan)
        return plan

    def _train(self, store_path: Path, config: TrainConfig | None, plan: dict[str, Any]):
        def forward(event: Event) -> None:
            if isinstance(event, TrainStarted):
                self.emit(self._started(event, plan))
            elif not isinstance(event, TrainDone):
                self.emit(event)

        self.announcer.send(
            {
                "store": str(store_path),
                "run_dir": str(self.run / "train"),
                "config": None if config is None else config.to_dict(),
                "resume": self.resumed,
            }
        )
        return train(
            store_path,
            self.run / "train",
            config,
            resume=self.resumed,
            on_event=forward,
            should_stop=self.stop_requested,
        )

    def _started(self, event: TrainStarted, plan: dict[str, Any]) -> RetrainStarted:
        recorded = read_json(self.run / "train" / "config.json", "training record")["config"]
        return RetrainStarted(
            run=str(self.run),
            total=event.total,  # None under a wall-time budget
            minutes=recorded.get("minutes"),
            max_iterations=recorded.get("max_iterations"),
            resumed=self.resumed,
            parent=plan.get("parent"),
            heldout=plan["heldout"],
            keep=self.project.settings["retrain_keep"],
            runtime=event.runtime,
        )

    def _kept_checkpoint(self, result) -> Path:
        if self.project.settings["retrain_keep"] == "best" and result.best_checkpoint is not None:
            return result.best_checkpoint
        return result.final_checkpoint

    def _complete_existing(self, version) -> RetrainResult:
        metrics = version.metrics
        # the rule said "activate" (accepted, or the project's first model) and nothing changed since:
        # checked and activated in one step, as keep_version does (a removal cannot land between)
        ruled_active = version.status == "accepted" or metrics.get("compared_with") is None
        with self.project.state_lock():
            active = self.project.active_version()
            active_id = None if active is None else active.id
            plan = read_json(self.run / "plan.json", "retrain plan")
            used = version.record.get("corrections_used", {})
            changed = changed_corrections(self.project, used, plan.get("corrections_content", {}))
            if ruled_active and active_id == metrics.get("compared_with") and not changed:
                self.project.activate(version.id, why=version.reason)
                active_id = version.id
        activated = active_id == version.id
        reason = version.reason
        if ruled_active and not activated and changed:
            reason = changed_reason(changed)
        elif ruled_active and not activated:  # its record's "activated: ..." no longer holds: say why
            reason = (
                f"kept inactive: {active_id} was activated after the rule compared this version with "
                f"{metrics.get('compared_with')}"
            )
        record = version.record
        new_score, active_score = (
            HeldoutScore(**m) if m else None for m in (metrics.get("new"), metrics.get("active"))
        )
        steps, total = int(record.get("steps", 0)), record.get("total_steps")
        return self._finish(version.id, activated, reason, new_score, active_score, record, steps, total)

    def _finish(
        self, version_id, activated, reason, new_score, active_score, record, steps: int, total: int | None
    ) -> RetrainResult:
        outcome = "cancelled" if record.get("cancelled") else "finished"
        write_json_atomically(
            self.run / "finished.json",
            {
                "outcome": outcome,
                "version": version_id,
                "activated": activated,
                "reason": reason,
                "at": now_iso(),
            },
        )
        summary = {
            "version": version_id,
            "activated": activated,
            "reason": reason,
            "status": record["status"],
            "new_dice": None if new_score is None else new_score.dice_mean,
            "active_dice": None if active_score is None else active_score.dice_mean,
            "new_per_class": None if new_score is None else new_score.dice_per_class,
            "active_per_class": None if active_score is None else active_score.dice_per_class,
            "compared_with": record["metrics"].get("compared_with"),
        }
        self.emit(VersionKept(**summary))
        ending = RetrainCancelled if outcome == "cancelled" else RetrainFinished
        self.emit(ending(**summary, steps=steps, total=total))
        return RetrainResult(
            run_dir=self.run,
            version=version_id,
            activated=activated,
            reason=reason,
            new_score=new_score,
            active_score=active_score,
            compared_with=record["metrics"].get("compared_with"),
            heldout=list(record["metrics"].get("heldout", [])),
            steps_done=steps,
            total_steps=total,
            cancelled=outcome == "cancelled",
            resumed=self.resumed,
            warnings=self.warnings,
        )

    def _finish_without_version(self, reason: str) -> RetrainResult:
        write_json_atomically(
            self.run / "finished.json",
            {"outcome": "cancelled", "version": None, "reason": reason, "at": now_iso()},
        )
        self.emit(RetrainCancelled(version=None, activated=False, reason=reason, steps=0))
        plan_file = self.run / "plan.json"
        heldout = read_json(plan_file, "retrain plan").get("heldout", []) if plan_file.is_file() else []
        return RetrainResult(
            self.run, None, False, reason, None, None, None, heldout, 0, 0, True, self.resumed, self.warnings
        )
