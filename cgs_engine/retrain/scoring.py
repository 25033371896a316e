"""Scoring on the held-out data and the activation rule (see the package docstring)."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.checkpoint import build_network, load_checkpoint
from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.infer.slices import predict_label_volume
from cgs_engine.store import SliceStore
from cgs_engine.train.data import volume_padding


@dataclass
class HeldoutScore:
    dice_mean: float | None
    dice_per_class: dict[str, float | None]
    volumes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
            padding = volume_padding(store, name, checkpoint.scope)  # as prediction reads it
            predicted = predict_label_volume(
                model, stored.image, checkpoint.input_size, runtime, padding=padding
            )
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
    if new.dice_mean <= 0.0:
        # finds none of what was reviewed there: 0 >= 0 would activate a model on no evidence
        # (held-out data the models cannot read, e.g. an MR scan given to a CT model)
        return (
            "unverified",
            False,
            "not activated: held-out Dice 0.0, it finds none of the held-out organs (activate it by hand "
            "if it looks right)",
        )
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
