"""Retraining: fine-tune the active model on the project's corrections and unlabeled scans.

Run folder ``runs/<id>/``: ``store.h5`` (the training store built for this run), ``train/``
(the training run directory, see ``cgs_engine.train.loop``), ``plan.json`` (what went in) and
``finished.json`` (the outcome; absent while running or after a crash).

Training data
  Corrected slices with at least one reviewed voxel are labeled data; unreviewed voxels are
  ignored by the loss. Slices with no reviewed voxel are only used as unlabeled images, as are
  the unlabeled scans (normalised with the project's normalization). When there is no
  unlabeled image at all, the training corrections' images double as the unlabeled pool.
  The project's prior data (the labeled volumes its base model was trained on, see
  ``prior.py``) are labeled data too, so the model rehearses what it knew instead of
  forgetting it; corrections are drawn more often (``correction_share`` of the labeled draws,
  at least their natural share), so a few of them are not drowned by the prior data.

Recipe
  The active model's own objective settings (``INHERITED_SETTINGS``: foreground
  oversampling, lambda, tau, gates...) are kept; ``RETRAIN_DEFAULTS`` make it a warm start:
  AdamW at lr 1e-3 with a linear warm-up, batch 8 + 8, BatchNorm statistics kept, an EMA
  teacher that starts as the active model and follows it at decay 0.99 (the kept model),
  pseudo-labels for the unlabeled terms made by the active model itself, frozen
  (``pseudo_labeler`` "initial"), and at most 600 iterations whatever the time budget
  (``max_iterations``). The thorough mode trains as many steps as the model's first training,
  with pseudo-labels from the teacher. Project settings["train"] override both. (Why these
  values, and why a small learning rate is no longer needed: README, "Why fine-tuning lost
  organs": the Dice loss over classes absent from a batch, now left out.)

Held-out rule (held-out data go to split "val" and are never trained on, not even unlabeled)
  * 3 or more corrected volumes: whole volumes, ``heldout_fraction`` of them (default 1 in 4),
    at least 1 and never all. The volumes whose names hash lowest are chosen, so the held-out
    set is stable as corrections are added and no model is compared on data it trained on.
  * 1 or 2 volumes: a contiguous block of ``heldout_fraction`` of each volume's reviewed
    slices (at least 1, only from volumes with 2+ reviewed slices): the block holding the most
    organ voxels the user drew or corrected, else the top block.
  * the prior data's validation cases, when it has any.
  A held-out correction judges on all its reviewed voxels: those the user drew or corrected
  (EDITED) and those the user accepted as the model drew them (ACCEPTED). Both are the user's
  word on the truth, and both models can get them right. (Judging on EDITED voxels alone, as
  before, scored the active model on exactly the voxels it had got wrong: after a few strokes
  every version, good or bad, was rejected at "held-out Dice 0.0".) The held-out block is the one
  holding most of the user's edits, so the part judges where the models can differ. The training
  loop's validation scores the same voxels, so the held-out Dice shown during training is the
  figure the rule compares.

Activation rule
  The new model and the active model are both scored on the held-out data (mean foreground
  Dice over classes, per held-out part, then averaged). The new version is activated when new
  >= active - tolerance (project setting ``activation_tolerance``, default 0); otherwise it is
  kept as "rejected" with the reason. Without held-out data it is kept as "unverified" and not
  activated, except for the first model of a project (there is nothing to regress from). The
  kept model is the EMA teacher at the end of training (project setting ``retrain_keep``
  "final"), which nothing was chosen on, so the comparison is fair. ``retrain_keep`` "best"
  keeps the training loop's best on the held-out data instead; that data then judges its own
  choice, and the rule is optimistic (bench/retrain_from_default.py: 10 of 10 such versions
  activated, 5 of them worse on new patients).

Cancel (``should_stop``) stops training; the EMA teacher at that point (with "best": the best
checkpoint so far) is evaluated and kept as a version under the same activation rule, and the
run is finished. Cancelling before the first step keeps nothing.

Under torchrun every rank runs ``cgs retrain``: rank 0 alone takes the project lock, builds the
store, decides activation and writes versions; it shares the run folder and the settings with the
other ranks, which join the data-parallel training and then exit.

Resume: a run killed or failed mid-training (``train/state.pt``, no version) continues with
``resume=True`` from its last saved state. A failure with a Python error marks the run failed.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.checkpoint import build_network, load_checkpoint
from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.infer.slices import predict_label_volume
from cgs_engine.project.project import Project
from cgs_engine.project.versions import ProjectError, now_iso, read_json, write_json_atomically
from cgs_engine.review.error_model import sidecar_path
from cgs_engine.review.state import EDITED
from cgs_engine.runtime import resolve_runtime
from cgs_engine.store import SliceStore
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.distributed import DistContext, init_distributed, share_from_main, shutdown
from cgs_engine.train.loop import train

Event = dict[str, Any]
EVENT_KINDS = ("start", "stage", "warning", "step", "val", "version", "finished", "failed", "cancelled")
# The quick retrain (minutes after a day's corrections); project settings["train"] and the
# ``settings`` argument override. Chosen on ACDC's dev patients (bench/retrain_loop_acdc.py, k = 3,
# fold 0; base dev Dice 71.9): batch 4+4, lr 1e-4, 300 steps, teacher 0.999 (the recipe until now,
# which hardly moved the model) 72.5; batch 8+8, 600 steps, teacher 0.99 with lr 3e-4 80.5, lr 1e-3
# 80.8, lr 1e-3 with pseudo-labels from the EMA teacher 80.5. Batch 4+4 was only safe because
# the model barely moved: the Dice loss then made small organs vanish (cgs_engine.method.losses,
# bench/finetune_drift.py), and the base models train at 8+8.
RETRAIN_DEFAULTS: dict[str, Any] = {
    "method": "cgs",
    "optimizer": "adamw",
    "lr": 1e-3,
    "warmup_fraction": 0.1,
    "ema_warmup": False,
    "freeze_batchnorm": True,
    "batch_labeled": 8,
    "batch_unlabeled": 8,
    "gate_tau": 0.95,  # trust only confident pseudo-labels (see TrainConfig.gate_tau)
    # The kept teacher averages the last ~100 steps: a steadier model than the last student, and
    # unlike the 0.999 used before (74 % of its weights still the start model's after 300 steps)
    # it ends where the training went.
    "ema_decay": 0.99,
    # A longer budget still stops here (about 5 minutes on 2 cores at 128 px); --thorough trains
    # as long as the model was first trained.
    "max_iterations": 600,
    "val_every": 100,
}
# Even at 0.999 the teacher had followed the student after 2,500 steps and the drift came back
# (k = 1: Larynx -18 and -9 on new patients): when there is an active model, the pseudo-labels
# come from it, frozen (distillation), while the EMA teacher averages the student for keeping.
FINE_TUNING_DEFAULTS: dict[str, Any] = {"pseudo_labeler": "initial"}
# Taken from the active model's own training settings when it has them: fine-tuning keeps the
# objective and sampling the model learnt with (the bundled model: foreground oversampling 0.5).
INHERITED_SETTINGS = (
    "foreground_fraction",
    "lambda_max",
    "ramp_fraction",
    "tau",
    "gate_tau",
    "fused_rule",
    "dice_masked",
    "ce_normalise",
    "teacher_mode",
    "student_pass",
)
# The thorough mode (``retrain(thorough=True)``, ``cgs retrain --thorough``), on top of the above:
# as many steps as the active model's first training (``trained_steps``; at most thorough_minutes),
# with pseudo-labels from the EMA teacher, as CGS trains, so the unlabeled scans teach more than
# the start model knew.
THOROUGH_DEFAULTS: dict[str, Any] = {"pseudo_labeler": "ema", "val_every": 250}
THOROUGH_STEPS_WITHOUT_RECORD = 3000
MIN_VOLUMES_FOR_VOLUME_HOLDOUT = 3
NOTHING_TO_TRAIN = "no corrected volumes with reviewed voxels to train on"


@dataclass
class HeldoutScore:
    dice_mean: float | None
    dice_per_class: dict[str, float | None]
    volumes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class _CancelledWhilePreparing(Exception):
    pass


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
    project = project if isinstance(project, Project) else Project.open(project)
    if minutes is not None and iterations is not None:
        raise ProjectError("give minutes or iterations, not both")
    if resume and (minutes is not None or iterations is not None or settings or thorough):
        raise ProjectError("resume continues the interrupted run with its recorded settings; drop the budget")
    with project.retrain_lock():
        if resume:
            run = project.interrupted_run()
            if run is None:
                raise ProjectError(f"{project.runs_dir}: no interrupted retrain to resume")
            return _Retrain(project, run, emit, should_stop, True, announcer).execute(None)
        for stale in project.resumable_runs():
            write_json_atomically(stale / "finished.json", {"outcome": "abandoned", "at": now_iso()})
        active = project.active_version()
        if minutes is None and iterations is None:
            minutes = float(project.settings["thorough_minutes" if thorough else "retrain_minutes"])
        config = _train_config(project, active, minutes, iterations, settings, thorough)
        if not any(c.reviewed_voxels for c in project.corrections()):
            raise ProjectError(f"{project.corrections_dir}: {NOTHING_TO_TRAIN}")
        run = project.new_run_dir()
        return _Retrain(project, run, emit, should_stop, False, announcer).execute(config)


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
        self.emit({"kind": "warning", "message": message})

    def execute(self, config: TrainConfig | None) -> RetrainResult:
        try:
            return self._execute(config)
        except _CancelledWhilePreparing:
            return self._finish_without_version("cancelled before training started")
        except Exception as error:
            write_json_atomically(
                self.run / "finished.json", {"outcome": "failed", "error": str(error), "at": now_iso()}
            )
            raise

    def _execute(self, config: TrainConfig | None) -> RetrainResult:
        store_path = self.run / "store.h5"
        if self.resumed:
            plan = read_json(self.run / "plan.json", "retrain plan")
            self.warnings = list(plan.get("warnings", []))
            kept = [v for v in self.project.versions() if v.run == self.run.name]
            if kept:  # killed after writing the version: only the activation may be missing
                return self._complete_existing(kept[0])
            self.emit({"kind": "stage", "stage": "resuming", "run": str(self.run)})
        else:
            self.emit({"kind": "stage", "stage": "preparing data", "run": str(self.run)})
            plan = _build_store(self.project, store_path, self.stop_requested, self.warn)
            active = self.project.active_version()
            plan.update(
                parent=None if active is None else active.id, created=now_iso(), warnings=self.warnings
            )
            write_json_atomically(self.run / "plan.json", plan)

        def forward(event: Event) -> None:
            if event["kind"] == "start":
                recorded = read_json(self.run / "train" / "config.json", "training record")["config"]
                self.emit(
                    {
                        "kind": "start",
                        "run": str(self.run),
                        "total": event["total"],  # None under a wall-time budget
                        "minutes": recorded.get("minutes"),
                        "max_iterations": recorded.get("max_iterations"),
                        "resumed": self.resumed,
                        "parent": plan.get("parent"),
                        "heldout": plan["heldout"],
                        "keep": self.project.settings["retrain_keep"],
                        "runtime": event.get("runtime"),
                    }
                )
            elif event["kind"] != "done":
                self.emit(event)

        self.announcer.send(
            {
                "store": str(store_path),
                "run_dir": str(self.run / "train"),
                "config": None if config is None else config.to_dict(),
                "resume": self.resumed,
            }
        )
        result = train(
            store_path,
            self.run / "train",
            config,
            resume=self.resumed,
            on_event=forward,
            should_stop=self.stop_requested,
        )
        if result.steps_done == 0:
            return self._finish_without_version("cancelled before the first training step")
        candidate = self._kept_checkpoint(result)
        recorded = read_json(self.run / "train" / "config.json", "training record")["config"]
        config = TrainConfig.from_dict(recorded, source=str(self.run / "train" / "config.json"))
        self.emit({"kind": "stage", "stage": "evaluating"})
        runtime = resolve_runtime(config.device, config.precision, config.threads)
        new_score = evaluate_heldout(candidate, store_path, self.project.class_names, runtime)
        active = self.project.active_version()
        active_score = (
            None
            if active is None
            else evaluate_heldout(active.model_path, store_path, self.project.class_names, runtime)
        )
        tolerance = float(self.project.settings["activation_tolerance"])
        compared_with = None if active is None else active.id
        status, activate, reason = decide_activation(new_score, active_score, compared_with, tolerance)
        # One step for the check, the new version and the pointer: a `cgs project activate` from
        # another process lands before (this version is then not activated) or after, never between.
        with self.project.state_lock():
            current = self.project.active_version()
            if activate and (None if current is None else current.id) != compared_with:
                status, activate = "rejected", False
                reason = (
                    f"not activated: the active version changed to {current and current.id} during evaluation"
                )
            record = {
                "origin": "retrained",
                "status": status,
                "reason": reason,
                "parent": plan.get("parent"),
                "run": self.run.name,
                "metrics": {
                    "new": None if new_score is None else new_score.to_dict(),
                    "active": None if active_score is None else active_score.to_dict(),
                    "compared_with": compared_with,
                    "heldout": plan["heldout"],
                    "heldout_mode": plan["heldout_mode"],
                    "tolerance": tolerance,
                },
                "corrections_used": plan["corrections_used"],
                "unlabeled_used": plan["unlabeled_used"],
                "steps": result.steps_done,
                "total_steps": result.total_steps,
                "cancelled": self.asked_to_stop,
                "train_config": config.to_dict(),
            }
            # The parent's calibrated error model, until one is fitted for this version: a few
            # hundred fine-tuning steps move the weights little, and uncalibrated is worse.
            inherited = None if active is None else sidecar_path(active.model_path)
            inherited = inherited if inherited is not None and inherited.is_file() else None
            record["error_model"] = None if inherited is None else f"inherited from {active.id}"
            version = self.project.add_version(candidate, record, error_model=inherited)
            if activate:
                self.project.activate(version.id, why=reason)
        return self._finish(
            version.id,
            activate,
            reason,
            new_score,
            active_score,
            record,
            result.steps_done,
            result.total_steps,
        )

    def _kept_checkpoint(self, result) -> Path:
        if self.project.settings["retrain_keep"] == "best" and result.best_checkpoint is not None:
            return result.best_checkpoint
        return result.final_checkpoint

    def _complete_existing(self, version) -> RetrainResult:
        metrics = version.metrics
        active = self.project.active_version()
        active_id = None if active is None else active.id
        # the rule said "activate" (accepted, or the project's first model) and nothing changed since
        ruled_active = version.status == "accepted" or metrics.get("compared_with") is None
        if ruled_active and active_id == metrics.get("compared_with"):
            self.project.activate(version.id, why=version.reason)
            active_id = version.id
        activated = active_id == version.id
        record = version.record
        new_score, active_score = (
            HeldoutScore(**m) if m else None for m in (metrics.get("new"), metrics.get("active"))
        )
        steps, total = int(record.get("steps", 0)), record.get("total_steps")
        return self._finish(
            version.id, activated, version.reason, new_score, active_score, record, steps, total
        )

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
        self.emit({"kind": "version", **summary})
        self.emit({"kind": outcome, **summary, "steps": steps, "total": total})
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
        self.emit({"kind": "cancelled", "version": None, "activated": False, "reason": reason, "steps": 0})
        plan_file = self.run / "plan.json"
        heldout = read_json(plan_file, "retrain plan").get("heldout", []) if plan_file.is_file() else []
        return RetrainResult(
            self.run, None, False, reason, None, None, None, heldout, 0, 0, True, self.resumed, self.warnings
        )


def _train_config(project: Project, active, minutes, iterations, settings, thorough=False) -> TrainConfig:
    values = dict(RETRAIN_DEFAULTS)
    checkpoint = None if active is None else load_checkpoint(active.model_path)
    if checkpoint is not None:  # keep the objective the model was trained with
        recipe = checkpoint.train_config or {}
        values.update({key: recipe[key] for key in INHERITED_SETTINGS if key in recipe})
        values.update(FINE_TUNING_DEFAULTS)
    if thorough:
        values.update(THOROUGH_DEFAULTS)
        values["max_iterations"] = _first_training_steps(project) or THOROUGH_STEPS_WITHOUT_RECORD
    values.update({**project.settings["train"], **(settings or {})})
    values.update(minutes=minutes, iterations=iterations)
    if checkpoint is not None:  # the active model's architecture and input size win
        values.update(
            init_checkpoint=str(active.model_path.resolve()),
            input_size=checkpoint.input_size,
            widths=list(checkpoint.model_config.widths),
            dropouts=list(checkpoint.model_config.dropouts),
        )
    return TrainConfig.from_dict(values, source="retrain settings")


def _first_training_steps(project: Project) -> int | None:
    """Steps of the first training behind the project's models: its imported (not retrained) version."""
    imported = [v for v in project.versions() if v.origin != "retrained"]
    return trained_steps(load_checkpoint(imported[0].model_path)) if imported else None


def trained_steps(checkpoint) -> int | None:
    """How many steps a model's first training ran (from its recipe and training record), if known."""
    recipe = checkpoint.train_config or {}
    metrics = checkpoint.metrics or {}
    steps = [recipe.get("iterations"), metrics.get("steps"), (metrics.get("best") or {}).get("step")]
    steps += [entry.get("step") for entry in metrics.get("history") or [] if isinstance(entry, dict)]
    known = [int(value) for value in steps if isinstance(value, (int, float)) and value > 0]
    return max(known) if known else None


# ---------------------------------------------------------------------------- held-out
def choose_heldout_volumes(names: list[str], fraction: float) -> list[str]:
    """Whole held-out volumes (empty below 3 volumes): the lowest name hashes, stable over time."""
    if len(names) < MIN_VOLUMES_FOR_VOLUME_HOLDOUT:
        return []
    count = min(len(names) - 1, max(1, int(len(names) * fraction)))
    ranked = sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    return sorted(ranked[:count])


def heldout_slices(reviewed: np.ndarray, fraction: float, weights: np.ndarray | None = None) -> np.ndarray:
    """A contiguous block of the reviewed slice indices to hold out (empty with fewer than 2).

    ``weights`` (one per reviewed slice: the voxels of organs the user drew or corrected) pick
    the block that holds the most of them, so the held-out part can judge a model; without
    weights, or where every block weighs 0, it is the top block.
    """
    if len(reviewed) < 2:
        return reviewed[:0]
    count = min(len(reviewed) - 1, max(1, round(len(reviewed) * fraction)))
    start = len(reviewed) - count
    if weights is not None and np.any(weights):
        sums = np.convolve(np.asarray(weights, dtype=np.float64), np.ones(count), mode="valid")
        start = int(len(sums) - 1 - np.argmax(sums[::-1]))  # the highest block wins ties
    return reviewed[start : start + count]


def _judging_weights(labels: np.ndarray, review: np.ndarray, slices: np.ndarray) -> np.ndarray:
    return ((labels[slices] > 0) & (review[slices] == EDITED)).reshape(len(slices), -1).sum(axis=1)


def _build_store(project: Project, store_path: Path, stop_requested, warn) -> dict[str, Any]:
    corrections = project.corrections()
    for problem in project.problems:
        if problem.startswith(str(project.corrections_dir)):
            warn(f"skipped damaged correction: {problem}")
    usable = [c for c in corrections if c.reviewed_voxels > 0]
    for c in corrections:
        if c.reviewed_voxels == 0:
            warn(f"correction {c.name!r} has no reviewed voxels; not used")
    if not usable:
        raise ProjectError(f"{project.corrections_dir}: {NOTHING_TO_TRAIN}")
    fraction = float(project.settings["heldout_fraction"])
    heldout_volumes = set(choose_heldout_volumes([c.name for c in usable], fraction))
    heldout: list[str] = []
    training_images: list[tuple[str, np.ndarray]] = []
    unlabeled_used: list[str] = []
    normalize = project.normalization.apply
    with SliceStore.create(
        store_path, project.class_names, project.normalization, project.class_colors
    ) as store:
        prior = _add_prior(project, store, heldout)
        weight = correction_weight(
            prior["slices"],
            _correction_slices(project, usable, heldout_volumes, fraction),
            float(project.settings["correction_share"]),
        )
        for info in usable:
            if stop_requested():
                raise _CancelledWhilePreparing
            correction = project.read_correction(info.name)
            image = normalize(correction.image.array)
            labels, review = correction.labels, correction.review
            source = info.source or info.name
            if info.name in heldout_volumes:
                if _add_judging_volume(store, info.name, image, labels, review, info.geometry, source, warn):
                    heldout.append(info.name)
                continue
            reviewed = np.flatnonzero(review.reshape(len(review), -1).any(axis=1))
            unreviewed = np.setdiff1d(np.arange(len(review)), reviewed)
            if not heldout_volumes:
                held = heldout_slices(reviewed, fraction, _judging_weights(labels, review, reviewed))
                if held.size:
                    name = f"{info.name}~heldout"
                    if _add_judging_volume(
                        store, name, image[held], labels[held], review[held], None, source, warn
                    ):
                        heldout.append(name)
                    reviewed = np.setdiff1d(reviewed, held)
                    # no unreviewed slice from within or next to the held-out block
                    unreviewed = unreviewed[(unreviewed < held[0] - 1) | (unreviewed > held[-1] + 1)]
            store.add_volume(
                info.name,
                image[reviewed],
                labels[reviewed],
                review[reviewed] > 0,
                split="labeled",
                source=source,
                sampling_weight=weight,
            )
            training_images.append((info.name, image[reviewed]))
            if unreviewed.size:
                store.add_volume(
                    f"{info.name}~unreviewed", image[unreviewed], split="unlabeled", source=source
                )
                unlabeled_used.append(f"{source} (unreviewed slices)")
        for index, scan in enumerate(project.unlabeled()):
            if stop_requested():
                raise _CancelledWhilePreparing
            volume = _read_unlabeled(scan, warn, normalize)
            if volume is not None:
                store.add_volume(
                    f"scan-{index:04d}", volume.array, geometry=volume.geometry, source=str(scan.path)
                )
                unlabeled_used.append(str(scan.path))
        if not unlabeled_used:
            warn("no unlabeled images; the training corrections' images serve as the unlabeled pool")
            for name, image in training_images:
                store.add_volume(f"{name}~images", image, split="unlabeled", source=name)
    return {
        "heldout": heldout,
        "heldout_mode": "volumes" if heldout_volumes else ("slices" if heldout else "none"),
        "training": [name for name, _ in training_images],
        "prior_training": prior["train"],
        "correction_weight": weight,
        "corrections_used": {c.name: c.revision for c in usable},
        "unlabeled_used": unlabeled_used,
    }


def correction_weight(prior_slices: int, correction_slices: int, share: float) -> float:
    """Sampling weight of correction slices so they make up ``share`` of the labeled draws.

    Never below 1: corrections are never drawn less often than a prior slice.
    """
    if prior_slices <= 0 or correction_slices <= 0 or share <= 0:
        return 1.0
    return max(1.0, share / (1.0 - share) * prior_slices / correction_slices)


def _correction_slices(project: Project, usable, heldout_volumes: set[str], fraction: float) -> int:
    """How many reviewed slices the corrections contribute to training (held-out ones excluded)."""
    total = 0
    for info in usable:
        if info.name in heldout_volumes:
            continue
        review = project.read_review_mask(info.name)
        reviewed = np.flatnonzero(review.reshape(len(review), -1).any(axis=1))
        held = 0 if heldout_volumes else len(heldout_slices(reviewed, fraction))
        total += len(reviewed) - held
    return total


def _add_prior(project: Project, store: SliceStore, heldout: list[str]) -> dict[str, Any]:
    """The project's prior data: its training volumes as labeled data, its validation cases held out."""
    added: dict[str, Any] = {"slices": 0, "train": []}
    if project.prior_store is None:
        return added
    with SliceStore.open(project.prior_store) as prior:
        for split in ("labeled", "val"):
            for name in prior.volume_names(split):
                stored = prior.read_volume(name)
                review = None if stored.review is None else stored.review > 0
                store.add_volume(
                    f"prior~{name}", stored.image, stored.label, review, stored.geometry, split, "prior data"
                )
                if split == "val":
                    heldout.append(f"prior~{name}")
                else:
                    added["slices"] += stored.image.shape[0]
                    added["train"].append(name)
    return added


def _add_judging_volume(store, name, image, labels, review, geometry, source, warn) -> bool:
    """A held-out correction, judged on every voxel the user reviewed (drew, corrected or accepted)."""
    judged = review > 0
    if not judged.any():
        warn(f"held-out {name!r} has no reviewed voxels; it cannot judge the new model")
        return False
    store.add_volume(name, image, labels, judged, geometry, split="val", source=source)
    return True


def _read_unlabeled(scan, warn, normalize):
    """The scan read and normalised, or None (with a warning) when it cannot be used any more."""
    from cgs_engine.errors import CGSError
    from cgs_engine.io import read_volume

    problem = scan.problem()
    if problem == "missing" or (problem and problem.startswith("unreadable")):
        warn(f"{scan.path}: unlabeled scan {problem}; skipped")
        return None
    if problem:
        warn(f"{scan.path}: unlabeled scan {problem}; used as it is now")
    try:
        volume = read_volume(scan.path)
        return volume.like(normalize(volume.array), "image")
    except (CGSError, ValueError) as error:
        warn(f"skipped unlabeled scan: {error}")
        return None


# ---------------------------------------------------------------------------- scoring
def evaluate_heldout(
    model_path: Path, store_path: Path, class_names: list[str], runtime
) -> HeldoutScore | None:
    """Mean foreground Dice of a model on the store's val volumes, reviewed voxels only."""
    checkpoint = load_checkpoint(model_path)
    model = build_network(checkpoint, model_path).to(runtime.device)
    per_volume = []
    with SliceStore.open(store_path) as store:
        for name in store.volume_names("val"):
            stored = store.read_volume(name)
            trusted = np.ones(stored.image.shape, bool) if stored.review is None else stored.review > 0
            predicted = predict_label_volume(model, stored.image, checkpoint.input_size, runtime)
            per_volume.append(dice_per_class(predicted[trusted], stored.label[trusted], len(class_names))[1:])
    if not per_volume:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from every volume stay NaN
        per_class = np.nanmean(np.stack(per_volume), axis=0)
    finite = np.isfinite(per_class)
    return HeldoutScore(
        dice_mean=float(np.nanmean(per_class)) if finite.any() else None,
        dice_per_class={
            name: float(value) if ok else None
            for name, value, ok in zip(class_names[1:], per_class, finite, strict=True)
        },
        volumes=len(per_volume),
    )


def decide_activation(
    new: HeldoutScore | None, active: HeldoutScore | None, active_id: str | None, tolerance: float
) -> tuple[str, bool, str]:
    """(version status, activate?, reason) under the activation rule of the module docstring."""
    has_new = new is not None and new.dice_mean is not None
    if active_id is None:
        return ("accepted" if has_new else "unverified"), True, "activated: first model of the project"
    if not has_new:
        return (
            "unverified",
            False,
            "not activated: no held-out corrected data to compare on (activate it by hand if it looks right)",
        )
    old = 0.0 if active is None or active.dice_mean is None else active.dice_mean
    margin = f" - tolerance {100 * tolerance:.1f}" if tolerance else ""
    if new.dice_mean >= old - tolerance:
        return (
            "accepted",
            True,
            f"activated: held-out Dice {100 * new.dice_mean:.1f} >= active {100 * old:.1f}{margin}",
        )
    return (
        "rejected",
        False,
        f"not activated: held-out Dice {100 * new.dice_mean:.1f} < active {100 * old:.1f}{margin}",
    )
