import pytest
import torch
from torch import nn

from cgs_engine.model import (
    CGSNet,
    ModelConfig,
    NetOutput,
    SpecialistHead,
    SpecialistHeads,
    UNet,
    build_backbone,
    build_model,
    count_parameters,
    register_backbone,
)

TINY = dict(widths=(4, 8, 16), dropouts=(0.0, 0.1, 0.2))


@pytest.mark.parametrize(
    ("widths", "size"),
    [((4, 8, 16, 32, 64), (32, 48)), ((4, 8, 16, 32), (24, 40))],
    ids=["depth5", "depth4"],
)
@pytest.mark.parametrize(("heads", "channels"), [("three-class", 3), ("binary", 2)])
def test_forward_shapes(widths, size, heads, channels):
    config = ModelConfig(num_classes=4, widths=widths, dropouts=(0.1,) * len(widths), heads=heads)
    model = build_model(config)
    out = model(torch.randn(2, 1, *size))
    assert isinstance(out, NetOutput)
    assert out.generalist.shape == (2, 4, *size)
    assert out.specialists.shape == (2, 3, channels, *size)
    assert model.size_divisor == 2 ** (len(widths) - 1)


def test_specialists_skipped_when_not_wanted():
    model = build_model(ModelConfig(num_classes=3, **TINY))
    assert model(torch.randn(1, 1, 8, 8), specialists=False).specialists is None
    generalist_only = build_model(ModelConfig(num_classes=3, heads="none", **TINY))
    assert generalist_only.specialists is None
    assert generalist_only(torch.randn(1, 1, 8, 8)).specialists is None


@pytest.mark.parametrize("size", [(30, 32), (32, 36), (17, 17)])
def test_input_size_not_divisible_raises(size):
    model = build_model(ModelConfig(num_classes=3))  # 5 levels: multiples of 16
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.randn(1, 1, *size))


def _randomise_batch_norm(module: nn.Module) -> None:
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            with torch.no_grad():
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
                norm.running_mean.uniform_(-0.5, 0.5)
                norm.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("out_channels", [3, 2])
def test_grouped_specialist_heads_equal_separate_heads(out_channels):
    torch.manual_seed(0)
    features, num_heads = 6, 3
    separate = nn.ModuleList(SpecialistHead(features, out_channels) for _ in range(num_heads))
    _randomise_batch_norm(separate)
    grouped = SpecialistHeads(features, num_heads, out_channels)
    grouped.load_from_separate(list(separate))
    x = torch.randn(2, features, 8, 8)
    for train in (False, True):
        separate.train(train)
        grouped.train(train)
        expected = torch.stack([head(x) for head in separate], dim=1)
        actual = grouped(x)
        assert actual.shape == (2, num_heads, out_channels, 8, 8)
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # BN running statistics were updated identically in train mode too
    for k, head in enumerate(separate):
        group = slice(k * features, (k + 1) * features)
        torch.testing.assert_close(grouped.norm.running_mean[group], head[1].running_mean)


def test_parameter_counts_default_network():
    model = build_model(ModelConfig(num_classes=4))
    base = count_parameters(model.backbone) + count_parameters(model.generalist)
    heads = count_parameters(model.specialists)
    assert 1_800_000 <= base <= 1_950_000
    assert count_parameters(model) == base + heads
    assert 0.0005 < heads / base < 0.005  # the paper: about 0.1-0.3 %
    no_heads = build_model(ModelConfig(num_classes=4, heads="none"))
    assert count_parameters(no_heads) == base


def test_bf16_autocast_channels_last_forward():
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=4, widths=(8, 16, 32, 64), dropouts=(0.0,) * 4)).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.generalist.dtype == torch.bfloat16
    assert out.specialists.shape == (2, 3, 3, 32, 32)
    assert torch.isfinite(out.generalist.float()).all() and torch.isfinite(out.specialists.float()).all()
    torch.testing.assert_close(out.generalist.float(), reference.generalist, rtol=0.1, atol=0.1)


def test_config_round_trip_and_validation():
    config = ModelConfig(num_classes=5, widths=(8, 16), dropouts=(0.0, 0.5), heads="binary")
    data = config.to_dict()
    assert data["widths"] == [8, 16]
    assert ModelConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(heads="four-class")
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(num_classes=1)
    with pytest.raises(ValueError, match="differ in length"):
        ModelConfig(widths=(8, 16, 32))


def test_backbone_registry_swaps_backbone():
    class Flat(nn.Module):
        out_channels = 5

        def __init__(self, in_channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 5, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    register_backbone("flat-test", lambda cfg: Flat(cfg.in_channels), overwrite=True)
    model = build_model(ModelConfig(in_channels=2, num_classes=3, backbone="flat-test"))
    assert isinstance(model, CGSNet) and isinstance(model.backbone, Flat)
    assert model.size_divisor == 1
    out = model(torch.randn(1, 2, 7, 9))
    assert out.generalist.shape == (1, 3, 7, 9) and out.specialists.shape == (1, 2, 3, 7, 9)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("flat-test", lambda cfg: Flat(1))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(ModelConfig(backbone="nope"))
    assert isinstance(build_backbone(ModelConfig(**TINY)), UNet)


def test_memory_saving_keeps_gradients_and_batchnorm_statistics():
    import torch

    from cgs_engine.model import ModelConfig, build_model

    config = ModelConfig(num_classes=3, widths=(4, 8, 16), dropouts=(0.1, 0.2, 0.0))  # masks replayed
    torch.manual_seed(0)
    plain = build_model(config)
    saving = build_model(config)
    saving.load_state_dict(plain.state_dict())
    saving.save_memory(True)
    assert saving.backbone.checkpoint_levels == 2  # full and half resolution recomputed
    x = torch.rand(2, 1, 16, 16)
    for model in (plain, saving):
        torch.manual_seed(1)  # the same dropout masks: the recomputation must replay them
        output = model(x)
        (output.generalist.square().mean() + output.specialists.square().mean()).backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), saving.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    for (name, a), (_, b) in zip(plain.named_buffers(), saving.named_buffers(), strict=True):
        assert torch.equal(a, b), name
