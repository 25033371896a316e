"""Tiny synthetic segmentation data: three organs of very different sizes in noisy slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cgs_engine.normalize import Normalization
from cgs_engine.store import SliceStore

CLASS_NAMES = ["background", "big", "medium", "small"]


def synthetic_volume(
    rng: np.random.Generator, depth: int = 6, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    image = rng.normal(0.2, 0.05, (depth, size, size)).astype(np.float32)
    label = np.zeros((depth, size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for z in range(depth):
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        label[z][(yy - cy) ** 2 + (xx - cx) ** 2 < (size // 5) ** 2] = 1
        oy, ox = rng.integers(2, size // 4, 2)
        label[z, oy : oy + 5, ox : ox + 5] = 2
        ty, tx = rng.integers(size - size // 4, size - 3, 2)
        label[z, ty : ty + 2, tx : tx + 2] = 3
    image += np.array([0.0, 0.5, 0.3, 0.7], np.float32)[label]
    return np.clip(image, 0, 1), label


def make_store(
    path: Path, labeled: int = 2, unlabeled: int = 2, val: int = 1, size: int = 32, seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    store = SliceStore.create(path, CLASS_NAMES, Normalization(mode="identity"))
    with store:
        for split, count in (("labeled", labeled), ("unlabeled", unlabeled), ("val", val)):
            for index in range(count):
                image, label = synthetic_volume(rng, size=size)
                store.add_volume(
                    f"{split}_{index}", image, None if split == "unlabeled" else label, split=split
                )
    return path


def tiny_checkpoint(class_names, normalization: dict | None = None, **extra):
    """An untrained two-level network of ``class_names`` at input size 32 (``extra``: more fields)."""
    from cgs_engine.checkpoint import ModelCheckpoint
    from cgs_engine.model import ModelConfig, build_model

    config = ModelConfig(num_classes=len(class_names), widths=(4, 8), dropouts=(0.0, 0.0))
    return ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=list(class_names),
        input_size=32,
        normalization=normalization or {"mode": "identity"},
        **extra,
    )
