"""The training run: data, model, EMA teacher, schedule, validation, checkpoints and resume.

Run directory (never overwritten; ``resume=True`` continues it):
  config.json   the resolved configuration, the fixed iteration count, store and data fingerprint
  state.pt      everything needed to continue exactly where the run stopped (atomic writes)
  best.pt       the EMA teacher with the best validation Dice (a model checkpoint)
  final.pt      the EMA teacher at the end of the run (a model checkpoint)
  log.jsonl     one JSON line per logged step and per validation
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cgs_engine import __version__
from cgs_engine.checkpoint import atomic_torch_save, load_payload, save_checkpoint
from cgs_engine.durable import write_json_atomically
from cgs_engine.infer.slices import Cancelled
from cgs_engine.method.objective import lambda_schedule, poly_lr
from cgs_engine.store import SliceStore
from cgs_engine.store.fingerprint import same_fingerprint
from cgs_engine.train import hooks
from cgs_engine.train.config import REFERENCE_ITERATIONS, TrainConfig
from cgs_engine.train.distributed import (
    any_rank,
    average_floating_buffers,
    barrier,
    broadcast_float,
    init_distributed,
    shutdown,
    wrap_for_data_parallel,
)
from cgs_engine.train.events import Event, TrainDone, TrainingStep, TrainStarted, Validated
from cgs_engine.train.hooks import StepDone, run_step_hooks
from cgs_engine.train.run_dir import (
    RunError,
    keep_log_until,
    log,
    moved_with_its_folder,
    prepare_run_dir,
    read_run_record,
    run_dir_lock,
)
from cgs_engine.train.session import (
    Session,
    model_checkpoint,
    new_models,
    open_session,
    pseudo_labeler,
    validate,
)
from cgs_engine.train.step import train_step

LOG_EVERY = 10
OPEN_ENDED = 2**62  # step bound of a wall-time-budget run, which stops on time


@dataclass
class TrainResult:
    run_dir: Path
    steps_done: int
    total_steps: int
    best_dice: float | None
    best_checkpoint: Path | None
    final_checkpoint: Path | None
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def scheduled_lr(base_lr: float, done: float, config: TrainConfig) -> float:
    """Linear warm-up over ``warmup_fraction`` of the run, then poly decay over the rest."""
    warmup = config.warmup_fraction
    if warmup and done < warmup:
        return base_lr * (done + 1e-3) / warmup  # never exactly 0: the first step still moves
    return poly_lr(base_lr, (done - warmup) / (1.0 - warmup), 1.0, config.poly_power)


def train_mode(student: torch.nn.Module, config: TrainConfig) -> None:
    """Training mode, with BatchNorm layers in eval mode when ``freeze_batchnorm`` is set."""
    student.train()
    if config.freeze_batchnorm:
        for module in student.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train(
    store_path: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_device: str | None = None,
) -> TrainResult:
    """Train ``config.method`` on a slice store; see the module docstring for the run directory.

    ``resume_device``: a resumed run continues on this device instead of its recorded one (a run
    started on a GPU machine could not be resumed on a CPU: the recorded device was refused there,
    and another one was refused as a changed setting).
    Under torchrun (WORLD_SIZE > 1) every rank calls this; see ``cgs_engine.train.distributed``.
    """
    store_path, run_dir = Path(store_path), Path(run_dir)
    context = init_distributed(config.device if config else (resume_device or "auto"))
    try:
        with run_dir_lock(run_dir, context.is_main):
            result = _train_locked(
                store_path, run_dir, config, resume, on_event, should_stop, context, resume_device
            )
    except BaseException:
        shutdown(context)  # at once: a failed rank's peers may never reach a last barrier
        raise
    shutdown(context, all_ranks_done=True)
    return result


def _train_locked(
    store_path, run_dir, config, resume, on_event, should_stop, context, resume_device=None
) -> TrainResult:
    if context.is_main:
        prepare_run_dir(run_dir, resume)
    barrier(context)
    emit = (on_event or (lambda event: None)) if context.is_main else (lambda event: None)
    if resume:
        recorded = read_run_record(run_dir / "config.json")
        store_path = Path(recorded.get("store", store_path)) if not store_path.exists() else store_path
        settings = moved_with_its_folder(recorded["config"], recorded.get("store"), store_path)
        if resume_device is not None:
            settings = {**settings, "device": resume_device}
        if settings.get("minutes") is not None:
            # a run recorded before both were refused ran on its minutes: resumed so, not refused
            settings = {**settings, "iterations": None}
        config = TrainConfig.from_dict(settings, source=str(run_dir / "config.json"))
    config = config or TrainConfig()
    session = open_session(store_path, config, context)
    if resume:
        total = recorded.get("total_iterations")
        if recorded.get("fingerprint") and not _same_data(store_path, recorded["fingerprint"], session):
            raise RunError(
                f"{store_path}: data changed since the run started (fingerprint differs); start a new run"
            )
    else:
        # With a wall-time budget the schedules follow elapsed time and the step count stays open.
        total = None if config.minutes else (config.iterations or REFERENCE_ITERATIONS)
        if context.is_main:
            write_json_atomically(
                run_dir / "config.json", _run_record(config, total, store_path, session, context)
            )
    emit(
        TrainStarted(
            total=total,
            runtime=session.runtime.describe(),
            world=context.world,
            distributed=context.describe(),
            batch_meaning=_batch_meaning(config, context),
            effective_lr=_base_lr(config, context),
            mirroring=config.mirror_plan(session.class_names).note,
        )
    )
    return _run(_Run(session, run_dir, total, emit, should_stop), resume)


def _same_data(store_path: Path, recorded: str, session: Session) -> bool:
    """Whether the store holds the data of the recorded fingerprint (a run recorded before v2 is
    compared by the scheme it was recorded with)."""
    if recorded == session.fingerprint:
        return True
    with SliceStore.open(store_path) as store:
        return same_fingerprint(store, recorded)


def _run_record(config: TrainConfig, total: int, store_path: Path, session: Session, context) -> dict:
    return {
        "config": config.to_dict(),
        "total_iterations": total,
        "store": str(store_path.resolve()),
        "fingerprint": session.fingerprint,
        "engine_version": __version__,
        "runtime": session.runtime.describe(),
        "class_names": session.class_names,
        "world_size": context.world,
        "distributed": context.describe(),
        "batch_meaning": _batch_meaning(config, context),
        "effective_lr": _base_lr(config, context),
        "mirroring": config.mirror_plan(session.class_names).note,
    }


def _batch_meaning(config: TrainConfig, context) -> str:
    return (
        f"per rank: global batch = {context.world} x ({config.batch_labeled} labeled + "
        f"{config.batch_unlabeled} unlabeled)"
    )


def _base_lr(config: TrainConfig, context) -> float:
    return config.lr * (context.world if config.lr_scaling == "linear" else 1)


@dataclass
class _RunState:
    """What a run carries from step to step; ``step``, ``best``, ``history`` and the elapsed time
    are saved in state.pt."""

    started: float  # perf_counter() at the run's start, moved back by the time of earlier sessions
    step: int = 0  # steps done
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    snapshots_taken: int = 0  # snapshot_minutes: how many so far
    last_snapshot: int = 0  # and the last one's step

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _run(run: _Run, resume: bool) -> TrainResult:
    """prepare, then one step at a time (validating and saving on schedule), then finish."""
    run.prepare(resume)
    total = run.total
    try:
        for step_index, batch in run.session.source.iterate(
            run.state.step, total if total is not None else OPEN_ENDED
        ):
            if not run.may_continue(step_index):
                break
            run.one_step(step_index, batch)
        if total is None and not run.state.stopped_early and run.state.step % run.config.val_every:
            run.evaluate_and_keep()  # the time budget ran out between validations: judge the final teacher
            run.save_state()
    except Cancelled:
        run.state.stopped_early = True
    return run.finish()


class _Run:
    def __init__(self, session: Session, run_dir: Path, total: int | None, emit, should_stop) -> None:
        self.session, self.run_dir, self.total = session, run_dir, total
        self.emit, self.should_stop = emit, should_stop
        self.config, self.context = session.config, session.context
        self.is_main = self.context.is_main
        self.budget_s = None if total is not None else self.config.minutes * 60
        self.base_lr = _base_lr(self.config, self.context)
        self.objective = self.config.objective()
        self.state = _RunState(started=0.0)  # set in prepare()

    def prepare(self, resume: bool) -> None:
        session, state = self.session, self.state
        self.student, self.teacher, self.optimizer = new_models(session)
        elapsed = 0.0
        if resume:
            saved = load_payload(self.run_dir / "state.pt")
            self.student.load_state_dict(saved["student"])
            self.teacher.load_state_dict(saved["teacher"])
            self.optimizer.load_state_dict(saved["optimizer"])
            state.step, state.best, state.history = saved["step"], saved["best"], saved["history"]
            elapsed = saved["elapsed"]
            if self.is_main:
                keep_log_until(self.run_dir, state.step)
        self.labeler = pseudo_labeler(session, self.teacher)
        self.trainee = wrap_for_data_parallel(self.student, self.context, session.runtime)
        state.started = time.perf_counter() - elapsed
        train_mode(self.student, self.config)

    def progress(self, step_index: int) -> float:
        """Share of the run done, in [0, 1]: by steps, or by wall time (same on every rank)."""
        if self.total is not None:
            return step_index / self.total
        by_time = min(1.0, self.state.elapsed() / self.budget_s)
        share = broadcast_float(by_time, self.context, self.session.runtime.device)
        if self.config.max_iterations:
            share = max(share, min(1.0, step_index / self.config.max_iterations))
        return share

    def may_continue(self, step_index: int) -> bool:
        """False when the time budget is spent or any rank was asked to stop (then stopped early)."""
        self._done = self.progress(step_index)
        if self.total is None and self._done >= 1.0:
            return False
        asked = self.should_stop is not None and self.should_stop()
        if any_rank(asked, self.context, self.session.runtime.device):
            self.state.stopped_early = True
            return False
        return True

    def one_step(self, step_index: int, batch) -> None:
        config, state, done = self.config, self.state, self._done
        torch.manual_seed(config.seed * 1_000_003 + step_index)  # dropout reproducible across resume
        lr = scheduled_lr(self.base_lr, done, config)
        _set_lr(self.optimizer, lr)
        lam = lambda_schedule(done, config.ramp_fraction, config.lambda_max)
        unlabeled = lam >= config.unlabeled_start * config.lambda_max
        terms = train_step(
            self.trainee,
            self.labeler,
            self.optimizer,
            batch,
            self.objective,
            lam,
            self.session.runtime,
            config.student_pass == "split",
            unlabeled=unlabeled,
        )
        if not math.isfinite(terms["total"]):
            raise RunError(
                f"{self.run_dir}: loss became {terms['total']} at step {step_index}; lower the learning rate"
            )
        average_floating_buffers(self.student, self.context)
        self.teacher.update(self.student, step_index)
        state.step = step = step_index + 1
        # production installs no hook: nothing is built per step then
        extra = (
            run_step_hooks(StepDone(step, self.context, self.student, self.teacher.module))
            if hooks.STEP_HOOKS
            else {}
        )
        if self.is_main and (step % LOG_EVERY == 0 or step == self.total or extra):
            record = TrainingStep(
                step=step,
                total=self.total,
                lr=lr,
                progress=round(done, 4),
                lam=lam if unlabeled else 0.0,  # the weight the unlabeled terms had: none while skipped
                elapsed_s=round(state.elapsed(), 1),
                extra=extra,
                losses={k if k.startswith("frac_") else f"loss_{k}": round(v, 5) for k, v in terms.items()},
            )
            log(self.run_dir, record.to_dict())
            self.emit(record)
        if self.is_main and _snapshot_due(config, step, state.elapsed(), state.snapshots_taken):
            state.snapshots_taken += 1
            state.last_snapshot = step
            self.save_snapshots()
        if step % config.val_every == 0 or step == self.total:
            self.evaluate_and_keep()
            self.save_state()

    def evaluate_and_keep(self) -> None:
        """Validate the EMA teacher (rank 0); a new best is saved as best.pt."""
        if not self.is_main:
            return
        state, teacher = self.state, self.teacher.module
        metrics = validate(teacher, self.session, self.should_stop)
        record = Validated(step=state.step, elapsed_s=round(state.elapsed(), 1), **(metrics or {}))
        if metrics is not None and (state.best is None or metrics["dice_mean"] > state.best["dice_mean"]):
            state.best = {"step": state.step, **metrics}
            save_checkpoint(
                model_checkpoint(teacher, self.session, {"best": state.best, "history": state.history}),
                self.run_dir / "best.pt",
            )
        kept = record.to_dict()  # plain dicts: saved in state.pt and the checkpoints
        state.history.append(kept)
        log(self.run_dir, kept)
        self.emit(record)

    def save_state(self) -> None:
        if not self.is_main:
            return
        state = self.state
        atomic_torch_save(
            {
                "step": state.step,
                "student": self.student.state_dict(),
                "teacher": self.teacher.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "best": state.best,
                "history": state.history,
                "elapsed": state.elapsed(),
            },
            self.run_dir / "state.pt",
        )

    def save_snapshots(self) -> None:
        step, elapsed_s = self.state.step, self.state.elapsed()
        folder = self.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        when = {"step": step, "elapsed_s": round(elapsed_s, 1), "cpu_s": round(time.process_time(), 1)}
        for role, module in (("teacher", self.teacher.module), ("student", self.student)):
            save_checkpoint(model_checkpoint(module, self.session, when), folder / f"{role}-{step:06d}.pt")

    def finish(self) -> TrainResult:
        """The state of a stopped run, the last snapshot and final.pt saved; the result."""
        state, total, run_dir = self.state, self.total, self.run_dir
        step, best = state.step, state.best
        if state.stopped_early and step > 0:
            self.save_state()
        if self.config.snapshot_minutes and self.is_main and step > state.last_snapshot:
            self.save_snapshots()  # a time curve ends at the end
        final = None
        if step > 0 and self.is_main:
            metrics = {"best": best, "history": state.history, "steps": step}
            final = save_checkpoint(
                model_checkpoint(self.teacher.module, self.session, metrics), run_dir / "final.pt"
            )
        best_path = run_dir / "best.pt"
        result = TrainResult(
            run_dir,
            step,
            total if total is not None else step,
            None if best is None else best["dice_mean"],
            best_path if best_path.exists() else final,
            final,
            state.stopped_early,
            state.history,
        )
        self.emit(TrainDone(step=step, total=total, best=best, stopped_early=state.stopped_early))
        return result


def _snapshot_due(config: TrainConfig, step: int, elapsed_s: float, taken: int) -> bool:
    """Every ``snapshot_every`` steps, or once each ``snapshot_minutes`` of the run has passed."""
    if config.snapshot_every and step % config.snapshot_every == 0:
        return True
    return bool(config.snapshot_minutes) and elapsed_s >= (taken + 1) * 60 * config.snapshot_minutes
