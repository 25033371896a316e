"""Folding BatchNorm into convolutions for inference changes nothing but rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cgs_engine.model import ModelConfig, build_model
from cgs_engine.model.fold import fold_batch_norm


def _trained_looking(heads: str) -> nn.Module:
    """A model whose BN layers hold non-trivial statistics and affine parameters."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=4, widths=(8, 16, 32), dropouts=(0.1, 0.2, 0.3), heads=heads))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("heads", ["three-class", "binary", "none"])
def test_folded_model_gives_the_same_outputs_without_batch_norm(heads):
    model = _trained_looking(heads)
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    torch.testing.assert_close(got.generalist, expected.generalist, rtol=1e-4, atol=1e-4)
    if heads == "none":
        assert got.specialists is None and expected.specialists is None
    else:
        torch.testing.assert_close(got.specialists, expected.specialists, rtol=1e-4, atol=1e-4)


def test_folding_leaves_the_original_model_untouched():
    model = _trained_looking("three-class")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batch_norm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
