"""A training run's session: the store's data and classes, the runtime, the models and validation."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cgs_engine.checkpoint import ModelCheckpoint, build_network, load_checkpoint, load_payload
from cgs_engine.errors import CGSError
from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.infer.field import FieldPadding
from cgs_engine.infer.slices import predict_label_volume
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.runtime import Runtime, resolve_runtime, usable_cores
from cgs_engine.store import SliceStore
from cgs_engine.train.config import TrainConfig
from cgs_engine.train.data import BatchSource, load_bank, volume_padding
from cgs_engine.train.distributed import DistContext
from cgs_engine.train.ema import EMATeacher
from cgs_engine.train.run_dir import RunError


@dataclass
class Session:
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
    # per val volume: how its slices are widened to the trained field of view (cgs_engine.infer.field)
    val_padding: dict[str, FieldPadding | None] = field(default_factory=dict)


def model_config_for(config: TrainConfig, num_classes: int) -> ModelConfig:
    return ModelConfig(
        num_classes=num_classes,
        widths=config.widths,
        dropouts=config.dropouts,
        heads=config.objective().specialist_heads,
    )


def open_session(store_path: Path, config: TrainConfig, context: DistContext) -> Session:
    threads = config.threads or max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    runtime = resolve_runtime(config.device, config.precision, threads, config.channels_last)
    with SliceStore.open(store_path) as store:
        objective = config.objective()
        scope = store.scope or _fine_tuned_scope(config)
        labeled = load_bank(store, "labeled", config.input_size, with_labels=True, scope=scope)
        if len(labeled) == 0:
            raise RunError(f"{store_path}: the store has no labeled volumes to train on")
        unlabeled = None
        if objective.uses_unlabeled:
            unlabeled = load_bank(store, "unlabeled", config.input_size, with_labels=False, scope=scope)
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
        return Session(
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
            scope,
            {name: volume_padding(store, name, scope) for name, *_ in val},
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


def validate(model: torch.nn.Module, session: Session, should_stop=None) -> dict[str, Any] | None:
    """3D Dice per class on the val volumes, averaged over volumes, then over classes.

    Only a val volume's trusted voxels count where it has a review mask (held-out corrections),
    so this is the figure the retrain's activation rule compares.
    """
    if not session.val_volumes:
        return None
    num_classes = len(session.class_names)
    per_volume = []
    for name, image, label, trusted in session.val_volumes:
        pred = predict_label_volume(
            model,
            image,
            session.config.input_size,
            session.runtime,
            cancel=should_stop,
            padding=session.val_padding.get(name),
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
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def model_checkpoint(teacher: torch.nn.Module, session: Session, metrics: dict[str, Any]) -> ModelCheckpoint:
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


def _initial_network(session: Session) -> torch.nn.Module:
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


def _placed_initial_network(session: Session) -> torch.nn.Module:
    network = _initial_network(session).to(session.runtime.device)
    if session.runtime.channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network


def new_models(session: Session) -> tuple[torch.nn.Module, EMATeacher, torch.optim.Optimizer]:
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


def pseudo_labeler(session: Session, teacher: EMATeacher) -> torch.nn.Module:
    """The EMA teacher, or a frozen copy of the initial model (also after a resume)."""
    if session.config.pseudo_labeler == "ema":
        return teacher.module
    frozen = _placed_initial_network(session)
    frozen.requires_grad_(False)
    return frozen.train(teacher.mode == "train")
