"""The training run: data, model, EMA teacher, schedule, validation, checkpoints and resume.

Run directory (never overwritten; ``resume=True`` continues it):
  config.json   the resolved configuration, the fixed iteration count, store and data fingerprint
  state.pt      everything needed to continue exactly where the run stopped (atomic writes)
  best.pt       the EMA teacher with the best validation Dice (a model checkpoint)
  final.pt      the EMA teacher at the end of the run (a model checkpoint)
  log.jsonl     one JSON line per logged step and per validation
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgs_engine import __version__
from cgs_engine.checkpoint import (
    ModelCheckpoint,
    atomic_torch_save,
    build_network,
    load_checkpoint,
    load_payload,
    save_checkpoint,
)
from cgs_engine.durable import (
    append_line,
    remove_stale_temp_files,
    write_json_atomically,
    write_text_atomically,
)
from cgs_engine.errors import CGSError
from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.infer.slices import Cancelled, predict_label_volume
from cgs_engine.locks import exclusive
from cgs_engine.method.objective import lambda_schedule, poly_lr
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.runtime import Runtime, resolve_runtime, usable_cores
from cgs_engine.store import SliceStore
from cgs_engine.train.config import REFERENCE_ITERATIONS, TrainConfig
from cgs_engine.train.data import BatchSource, load_bank
from cgs_engine.train.distributed import (
    DistContext,
    any_rank,
    average_floating_buffers,
    barrier,
    broadcast_float,
    check_replicas_identical,
    init_distributed,
    shutdown,
    wrap_for_data_parallel,
)
from cgs_engine.train.ema import EMATeacher
from cgs_engine.train.step import train_step

Event = dict[str, Any]
LOG_EVERY = 10
OPEN_ENDED = 2**62  # step bound of a wall-time-budget run, which stops on time


class RunError(CGSError):
    """A run directory that cannot be started or resumed; one line."""


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


@dataclass
class _Session:
    config: TrainConfig
    runtime: Runtime
    store_path: Path
    class_names: list[str]
    class_colors: list[list[int]]
    normalization: dict[str, Any]
    fingerprint: str
    val_volumes: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]  # name, image, label, trusted
    source: BatchSource
    context: DistContext
    scope: dict[str, Any] = field(default_factory=dict)  # what the raw training images were


def model_config_for(config: TrainConfig, num_classes: int) -> ModelConfig:
    return ModelConfig(
        num_classes=num_classes,
        widths=config.widths,
        dropouts=config.dropouts,
        heads=config.objective().specialist_heads,
    )


def _open_session(store_path: Path, config: TrainConfig, context: DistContext) -> _Session:
    threads = config.threads or max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    runtime = resolve_runtime(config.device, config.precision, threads, config.channels_last)
    with SliceStore.open(store_path) as store:
        objective = config.objective()
        labeled = load_bank(store, "labeled", config.input_size, with_labels=True)
        if len(labeled) == 0:
            raise RunError(f"{store_path}: the store has no labeled volumes to train on")
        unlabeled = None
        if objective.uses_unlabeled:
            unlabeled = load_bank(store, "unlabeled", config.input_size, with_labels=False)
            if len(unlabeled) == 0:
                raise RunError(
                    f"{store_path}: method {config.method} needs unlabeled volumes; the store has none"
                )
        names = store.volume_names("val")[: config.val_max_volumes]
        val = [
            (n, s.image, s.label, None if s.review is None else s.review > 0)
            for n in names
            for s in [store.read_volume(n)]
            if s.label is not None
        ]
        try:
            mirror, mirror_table = config.mirror_policy(store.class_names)
        except CGSError as error:
            raise RunError(f"{store_path}: {error}") from None
        source = BatchSource(
            labeled,
            unlabeled,
            config.batch_labeled,
            config.batch_unlabeled,
            config.seed,
            context.rank,
            context.world,
            config.foreground_fraction,
            mirror,
            mirror_table,
        )
        return _Session(
            config,
            runtime,
            store_path,
            store.class_names,
            store.class_colors,
            store.normalization.to_dict(),
            store.fingerprint(),
            val,
            source,
            context,
            store.scope or _fine_tuned_scope(config),
        )


def _fine_tuned_scope(config: TrainConfig) -> dict[str, Any]:
    """A store without a recorded scope fine-tuning a model: the model keeps the scope it had."""
    if not config.init_checkpoint:
        return {}
    try:
        payload = load_payload(config.init_checkpoint)
    except CGSError:
        return {}  # reported where the network is built
    scope = payload.get("scope") if isinstance(payload, dict) else None
    return dict(scope) if isinstance(scope, dict) else {}


def validate(model: torch.nn.Module, session: _Session, should_stop=None) -> dict[str, Any] | None:
    """3D Dice per class on the val volumes, averaged over volumes, then over classes.

    Only a val volume's trusted voxels count where it has a review mask (held-out corrections),
    so this is the figure the retrain's activation rule compares.
    """
    if not session.val_volumes:
        return None
    num_classes = len(session.class_names)
    per_volume = []
    for _name, image, label, trusted in session.val_volumes:
        pred = predict_label_volume(
            model, image, session.config.input_size, session.runtime, cancel=should_stop
        )
        label = np.asarray(label)
        if trusted is not None:
            pred, label = pred[trusted], label[trusted]
        per_volume.append(dice_per_class(pred, label, num_classes)[1:])
    with np.errstate(all="ignore"), _quiet_nan():
        per_class = np.nanmean(np.stack(per_volume), axis=0)
    return {
        "dice_mean": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0,
        "dice_per_class": {
            name: _finite(v) for name, v in zip(session.class_names[1:], per_class, strict=True)
        },
    }


class _quiet_nan:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _model_checkpoint(
    teacher: torch.nn.Module, session: _Session, metrics: dict[str, Any]
) -> ModelCheckpoint:
    return ModelCheckpoint(
        model_config=teacher.config,
        state_dict=teacher.state_dict(),
        class_names=session.class_names,
        input_size=session.config.input_size,
        normalization=session.normalization,
        class_colors=session.class_colors,
        method=session.config.method,
        train_config=session.config.to_dict(),
        metrics=metrics,
        data_fingerprint=session.fingerprint,
        scope=session.scope,
    )


def _initial_network(session: _Session) -> torch.nn.Module:
    config = session.config
    if not config.init_checkpoint:
        return build_model(model_config_for(config, len(session.class_names)))
    source = config.init_checkpoint
    checkpoint = load_checkpoint(source)
    problems = []
    if checkpoint.class_names != session.class_names:
        problems.append(
            f"its classes {checkpoint.class_names[1:]} differ from the store's {session.class_names[1:]}"
        )
    if checkpoint.model_config.heads != config.objective().specialist_heads:
        problems.append(f"its heads ({checkpoint.model_config.heads}) do not suit method {config.method}")
    if checkpoint.normalization != session.normalization:
        problems.append("its intensity normalisation differs from the store's")
    if problems:
        raise RunError(f"{source}: cannot fine-tune from this model: {'; '.join(problems)}")
    return build_network(checkpoint, source).train()


def _placed_initial_network(session: _Session) -> torch.nn.Module:
    network = _initial_network(session).to(session.runtime.device)
    if session.runtime.channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network


def _new_models(session: _Session) -> tuple[torch.nn.Module, EMATeacher, torch.optim.Optimizer]:
    config = session.config
    torch.manual_seed(config.seed)
    student = _placed_initial_network(session)
    student.save_memory(config.saves_memory)
    teacher = EMATeacher(
        student, decay_max=config.ema_decay, mode=config.teacher_mode, warmup=config.ema_warmup
    )
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            student.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return student, teacher, optimizer


def _pseudo_labeler(session: _Session, teacher: EMATeacher) -> torch.nn.Module:
    """The EMA teacher, or a frozen copy of the initial model (also after a resume)."""
    if session.config.pseudo_labeler == "ema":
        return teacher.module
    frozen = _placed_initial_network(session)
    frozen.requires_grad_(False)
    return frozen.train(teacher.mode == "train")


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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_json_atomically(path, data)


ABANDONED_START_FILES = ("config.json", "log.jsonl")  # what a run writes before its first saved state


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    """Check the run folder can be used (the caller holds its lock).

    A folder holding only what a run writes before its first saved state (killed or failed in its
    first steps: nothing to resume, nothing of value) is started afresh.
    """
    if resume:
        if not (run_dir / "state.pt").is_file():
            raise RunError(f"{run_dir}: nothing to resume (no state.pt); start a new run without --resume")
        return
    present = [p for p in run_dir.iterdir() if not p.name.startswith(".")] if run_dir.is_dir() else []
    if present and all(p.name in ABANDONED_START_FILES for p in present):
        for path in present:
            path.unlink()
        present = []
    if present:
        raise RunError(f"{run_dir}: run directory exists and is not empty (use --resume or another -o)")


@contextmanager
def _run_dir_lock(run_dir: Path, is_main: bool) -> Iterator[None]:
    """One training run at a time per folder (two `cgs train -o SAME` would mix their files)."""
    if not is_main:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"{run_dir}: cannot create the run folder ({error.strerror or error})") from None
    remove_stale_temp_files(run_dir)
    message = f"{run_dir}: another training run is writing to this folder; use another -o"
    with exclusive(run_dir / ".run.lock", lambda: RunError(message)):
        yield


def _keep_log_until(run_dir: Path, step: int) -> None:
    """On resume: drop log records of steps after the saved state, which are run (and logged) again."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    write_text_atomically(path, "".join(f"{line}\n" for line in kept))


def train(
    store_path: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train ``config.method`` on a slice store; see the module docstring for the run directory.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; see ``cgs_engine.train.distributed``.
    """
    store_path, run_dir = Path(store_path), Path(run_dir)
    context = init_distributed(config.device if config else "auto")
    try:
        with _run_dir_lock(run_dir, context.is_main):
            result = _train_locked(store_path, run_dir, config, resume, on_event, should_stop, context)
    except BaseException:
        shutdown(context)  # at once: a failed rank's peers may never reach a last barrier
        raise
    shutdown(context, all_ranks_done=True)
    return result


def _train_locked(store_path, run_dir, config, resume, on_event, should_stop, context) -> TrainResult:
    if context.is_main:
        _prepare_run_dir(run_dir, resume)
    barrier(context)
    emit = (on_event or (lambda event: None)) if context.is_main else (lambda event: None)
    if resume:
        recorded = _read_run_record(run_dir / "config.json")
        config = TrainConfig.from_dict(recorded["config"], source=str(run_dir / "config.json"))
        store_path = Path(recorded.get("store", store_path)) if not store_path.exists() else store_path
    config = config or TrainConfig()
    session = _open_session(store_path, config, context)
    if resume:
        total = recorded.get("total_iterations")
        if recorded.get("fingerprint") and recorded["fingerprint"] != session.fingerprint:
            raise RunError(
                f"{store_path}: data changed since the run started (fingerprint differs); start a new run"
            )
    else:
        # With a wall-time budget the schedules follow elapsed time and the step count stays open.
        total = None if config.minutes else (config.iterations or REFERENCE_ITERATIONS)
        if context.is_main:
            _write_json(run_dir / "config.json", _run_record(config, total, store_path, session, context))
    emit(
        {
            "kind": "start",
            "total": total,
            "runtime": session.runtime.describe(),
            "world": context.world,
            "distributed": context.describe(),
            "batch_meaning": _batch_meaning(config, context),
            "effective_lr": _base_lr(config, context),
        }
    )
    return _run(session, run_dir, total, resume, emit, should_stop)


def _read_run_record(path: Path) -> dict:
    """The ``config.json`` a run wrote at its start, checked: a damaged one is one line, not a KeyError."""
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path}: missing; this run cannot be resumed") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path}: not readable ({' '.join(str(error).split())}); cannot resume") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        raise RunError(f"{path}: holds no run record (no 'config' table); this run cannot be resumed")
    total = recorded.get("total_iterations")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise RunError(f"{path}: total_iterations {total!r} is not a positive whole number; cannot resume")
    store = recorded.get("store")
    if store is not None and not isinstance(store, str):
        raise RunError(f"{path}: store {store!r} is not a path; cannot resume")
    return recorded


def _run_record(config: TrainConfig, total: int, store_path: Path, session: _Session, context) -> dict:
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
    }


def _batch_meaning(config: TrainConfig, context) -> str:
    return (
        f"per rank: global batch = {context.world} x ({config.batch_labeled} labeled + "
        f"{config.batch_unlabeled} unlabeled)"
    )


def _base_lr(config: TrainConfig, context) -> float:
    return config.lr * (context.world if config.lr_scaling == "linear" else 1)


def _run(session: _Session, run_dir: Path, total: int | None, resume: bool, emit, should_stop) -> TrainResult:
    config, runtime, context = session.config, session.runtime, session.context
    objective = config.objective()
    student, teacher, optimizer = _new_models(session)
    step, best, history, elapsed = 0, None, [], 0.0
    if resume:
        state = load_payload(run_dir / "state.pt")
        student.load_state_dict(state["student"])
        teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, history, elapsed = state["step"], state["best"], state["history"], state["elapsed"]
        if context.is_main:
            _keep_log_until(run_dir, step)
    labeler = _pseudo_labeler(session, teacher)
    trainee = wrap_for_data_parallel(student, context, runtime)
    base_lr = _base_lr(config, context)
    check_replicas = os.environ.get("CGS_CHECK_REPLICAS") == "1"
    started = time.perf_counter() - elapsed
    budget_s = None if total is not None else config.minutes * 60

    def progress(step_index: int) -> float:
        """Share of the run done, in [0, 1]: by steps, or by wall time (same on every rank)."""
        if total is not None:
            return step_index / total
        share = broadcast_float(min(1.0, (time.perf_counter() - started) / budget_s), context, runtime.device)
        if config.max_iterations:
            share = max(share, min(1.0, step_index / config.max_iterations))
        return share

    stopped_early = False
    snapshots_taken, last_snapshot = 0, 0  # snapshot_minutes: how many so far, and the last one's step

    def save_state() -> None:
        if not context.is_main:
            return
        atomic_torch_save(
            {
                "step": step,
                "student": student.state_dict(),
                "teacher": teacher.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best": best,
                "history": history,
                "elapsed": time.perf_counter() - started,
            },
            run_dir / "state.pt",
        )

    def evaluate_and_keep() -> None:
        nonlocal best
        if not context.is_main:
            return
        metrics = validate(teacher.module, session, should_stop)
        record = {"kind": "val", "step": step, "elapsed_s": round(time.perf_counter() - started, 1)}
        if metrics is not None:
            record.update(metrics)
            if best is None or metrics["dice_mean"] > best["dice_mean"]:
                best = {"step": step, **metrics}
                save_checkpoint(
                    _model_checkpoint(teacher.module, session, {"best": best, "history": history}),
                    run_dir / "best.pt",
                )
        history.append(record)
        _log(run_dir, record)
        emit(record)

    train_mode(student, config)
    try:
        for step_index, batch in session.source.iterate(step, total if total is not None else OPEN_ENDED):
            done = progress(step_index)
            if total is None and done >= 1.0:
                break
            if any_rank(should_stop is not None and should_stop(), context, runtime.device):
                stopped_early = True
                break
            torch.manual_seed(config.seed * 1_000_003 + step_index)  # dropout reproducible across resume
            lr = scheduled_lr(base_lr, done, config)
            _set_lr(optimizer, lr)
            lam = lambda_schedule(done, config.ramp_fraction, config.lambda_max)
            terms = train_step(
                trainee,
                labeler,
                optimizer,
                batch,
                objective,
                lam,
                runtime,
                config.student_pass == "split",
            )
            if not math.isfinite(terms["total"]):
                raise RunError(
                    f"{run_dir}: loss became {terms['total']} at step {step_index}; lower the learning rate"
                )
            _injected_fault(context, step_index)
            average_floating_buffers(student, context)
            teacher.update(student, step_index)
            step = step_index + 1
            replicas = (
                check_replicas_identical(step, context, student, teacher.module) if check_replicas else None
            )
            if context.is_main and (step % LOG_EVERY == 0 or step == total or replicas):
                record = {
                    "kind": "step",
                    "step": step,
                    "total": total,
                    "lr": lr,
                    "progress": round(done, 4),
                    "lambda": lam,
                    "elapsed_s": round(time.perf_counter() - started, 1),
                    **({"replica_hash": replicas} if replicas else {}),
                    **{k if k.startswith("frac_") else f"loss_{k}": round(v, 5) for k, v in terms.items()},
                }
                _log(run_dir, record)
                emit(record)
            if context.is_main and _snapshot_due(
                config, step, time.perf_counter() - started, snapshots_taken
            ):
                snapshots_taken += 1
                last_snapshot = step
                _save_snapshots(
                    run_dir, step, session, teacher.module, student, time.perf_counter() - started
                )
            if step % config.val_every == 0 or step == total:
                evaluate_and_keep()
                save_state()
        if total is None and not stopped_early and step % config.val_every:
            evaluate_and_keep()  # the time budget ran out between validations: judge the final teacher
            save_state()
    except Cancelled:
        stopped_early = True
    if stopped_early and step > 0:
        save_state()
    if config.snapshot_minutes and context.is_main and step > last_snapshot:  # a time curve ends at the end
        _save_snapshots(run_dir, step, session, teacher.module, student, time.perf_counter() - started)
    final = None
    if step > 0 and context.is_main:
        final = save_checkpoint(
            _model_checkpoint(teacher.module, session, {"best": best, "history": history, "steps": step}),
            run_dir / "final.pt",
        )
    best_path = run_dir / "best.pt"
    result = TrainResult(
        run_dir,
        step,
        total if total is not None else step,
        None if best is None else best["dice_mean"],
        best_path if best_path.exists() else final,
        final,
        stopped_early,
        history,
    )
    emit({"kind": "done", "step": step, "total": total, "best": best, "stopped_early": stopped_early})
    return result


def _snapshot_due(config: TrainConfig, step: int, elapsed_s: float, taken: int) -> bool:
    """Every ``snapshot_every`` steps, or once each ``snapshot_minutes`` of the run has passed."""
    if config.snapshot_every and step % config.snapshot_every == 0:
        return True
    return bool(config.snapshot_minutes) and elapsed_s >= (taken + 1) * 60 * config.snapshot_minutes


def _save_snapshots(run_dir: Path, step: int, session: _Session, teacher, student, elapsed_s: float) -> None:
    folder = run_dir / "snapshots"
    folder.mkdir(exist_ok=True)
    when = {"step": step, "elapsed_s": round(elapsed_s, 1), "cpu_s": round(time.process_time(), 1)}
    for role, module in (("teacher", teacher), ("student", student)):
        save_checkpoint(_model_checkpoint(module, session, when), folder / f"{role}-{step:06d}.pt")


def _injected_fault(context: DistContext, step_index: int) -> None:
    """Fault injection for the crash-safety tests: CGS_FAULT_INJECT="RANK:STEP" fails that rank there."""
    spec = os.environ.get("CGS_FAULT_INJECT")
    if spec and spec == f"{context.rank}:{step_index}":
        raise RuntimeError(f"injected fault on rank {context.rank} at step {step_index}")


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    append_line(run_dir / "log.jsonl", json.dumps(record))
