"""Settings for fine-tuning a trained model: LR warm-up, a teacher that starts as the model,
BatchNorm statistics kept, and validation on trusted voxels only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import CLASS_NAMES, make_store, synthetic_volume

from cgs_engine.store import SliceStore
from cgs_engine.train.config import ConfigError, TrainConfig
from cgs_engine.train.ema import ema_decay
from cgs_engine.train.loop import scheduled_lr, train, train_mode

TINY = dict(
    input_size=32,
    widths=(4, 8, 16),
    dropouts=(0.0, 0.1, 0.2),
    batch_labeled=2,
    batch_unlabeled=2,
    precision="fp32",
    threads=1,
    device="cpu",
    optimizer="adamw",
    lr=1e-3,
)


def test_warmup_then_poly_decay():
    config = TrainConfig(warmup_fraction=0.2, poly_power=1.0)
    assert 0 < scheduled_lr(1.0, 0.0, config) < 0.01
    assert scheduled_lr(1.0, 0.1, config) == pytest.approx(0.5, abs=0.01)
    assert scheduled_lr(1.0, 0.2, config) == pytest.approx(1.0)
    assert scheduled_lr(1.0, 0.6, config) == pytest.approx(0.5)
    assert scheduled_lr(1.0, 1.0, config) == pytest.approx(0.0)
    reference = TrainConfig(poly_power=1.0)
    assert scheduled_lr(1.0, 0.0, reference) == 1.0 and scheduled_lr(1.0, 0.5, reference) == 0.5
    with pytest.raises(ConfigError, match="warmup_fraction"):
        TrainConfig(warmup_fraction=1.0)


def test_teacher_without_warmup_moves_at_the_full_decay_from_the_first_step():
    assert ema_decay(0) == 0.0 and ema_decay(3) == 0.75
    assert ema_decay(0, 0.99, warmup=False) == 0.99 == ema_decay(500, 0.99, warmup=False)


def test_frozen_batchnorm_keeps_running_statistics_and_trains_affine():
    from cgs_engine.model import ModelConfig, build_model

    model = build_model(ModelConfig(num_classes=4, widths=(4, 8, 16), dropouts=(0.0, 0.1, 0.2)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    train_mode(model, TrainConfig(freeze_batchnorm=True))
    assert model.training and norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    model(torch.randn(2, 1, 32, 32) * 5 + 3).generalist.sum().backward()
    assert torch.equal(norms[0].running_mean, before) and norms[0].weight.grad is not None
    train_mode(model, TrainConfig())
    assert all(m.training for m in norms)


def test_validation_counts_only_the_trusted_voxels_of_a_val_volume(tmp_path):
    """A val volume with a review mask is scored on its reviewed voxels, as the retrain's gate does."""
    rng = np.random.default_rng(0)
    path = make_store(tmp_path / "s.h5", labeled=1, unlabeled=1, val=0)
    image, label = synthetic_volume(rng)
    trusted = np.zeros(label.shape, bool)
    trusted[:, :16] = True
    wrong = label.copy()
    wrong[:, 16:] = 0  # outside the trusted half the label says "background" everywhere
    with SliceStore.open(path, "a") as store:
        store.add_volume("judged", image, wrong, trusted, split="val")
    events = []
    train(path, tmp_path / "run", TrainConfig(iterations=2, val_every=2, **TINY), on_event=events.append)
    from cgs_engine.checkpoint import build_network, load_checkpoint
    from cgs_engine.evaluate.metrics import dice_per_class
    from cgs_engine.infer.slices import predict_label_volume
    from cgs_engine.runtime import resolve_runtime

    checkpoint = load_checkpoint(tmp_path / "run" / "final.pt")
    model = build_network(checkpoint, "final.pt")
    predicted = predict_label_volume(model, image, 32, resolve_runtime("cpu", "fp32", 1))
    expected = dice_per_class(predicted[trusted], wrong[trusted], len(CLASS_NAMES))[1:]
    val = [e for e in events if e["kind"] == "val"][-1]
    got = [np.nan if v is None else v for v in val["dice_per_class"].values()]
    np.testing.assert_allclose(got, expected, atol=1e-6)
