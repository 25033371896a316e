"""A tiny untrained CGS model that still draws every class on a tiny test image (review tests)."""

from __future__ import annotations

import numpy as np
import torch

from cgs_engine.checkpoint import ModelCheckpoint
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.volume import Geometry

NAMES = ["background", "a", "b", "c"]
GEOMETRY = Geometry(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.normal(0.2, 0.05, (8, 32, 32)).astype(np.float32)
    values[2:6, 8:20, 8:20] += 0.6
    return values


def checkpoint() -> ModelCheckpoint:
    """An untrained model whose generalist draws every class somewhere on the test image.

    Untrained, its class logits differ by nearly constant offsets (one class everywhere);
    amplified and centred on their medians over the test image, each class wins in places.
    """
    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, widths=(4, 8), dropouts=(0.0, 0.0))
    model = build_model(config).eval()
    with torch.no_grad():
        model.generalist.weight.mul_(100.0)
        model.generalist.bias.mul_(100.0)
        logits = model(torch.from_numpy(image())[:, None], specialists=False).generalist
        model.generalist.bias.sub_(logits.transpose(0, 1).flatten(1).median(dim=1).values)
    return ModelCheckpoint(
        model_config=config,
        state_dict=model.state_dict(),
        class_names=NAMES,
        input_size=32,
        normalization={"mode": "identity"},
    )
