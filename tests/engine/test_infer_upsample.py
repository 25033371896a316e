"""Resizing to the slice grid: exact label upsampling and uint8 map resizing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cgs_engine.infer.slices import _to_grid
from cgs_engine.infer.upsample import source_grid, upsampled_argmax


def _reference(probs: torch.Tensor, height: int, width: int):
    top, labels = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False).max(1)
    return labels.to(torch.uint8), top


def _organ_like_probs(batch: int, classes: int, size: int, seed: int) -> torch.Tensor:
    """Smooth class probabilities with compact blobs, as a segmentation network gives."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    labels = torch.zeros(batch, size, size, dtype=torch.long)
    for c in range(1, classes):
        cy, cx = torch.randint(0, size, (2,), generator=generator).tolist()
        radius = int(torch.randint(1, max(2, size // 4), (1,), generator=generator))
        labels[:, (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = c
    logits = F.one_hot(labels, classes).permute(0, 3, 1, 2).float() * 6
    logits = logits + 0.5 * torch.randn(logits.shape, generator=generator)
    return F.avg_pool2d(logits, 3, 1, 1).softmax(1)


@pytest.mark.parametrize(
    "size_in, size_out",
    [
        ((32, 32), (128, 128)),
        ((32, 48), (100, 130)),
        ((16, 16), (37, 53)),
        ((64, 64), (40, 36)),
        ((8, 8), (8, 8)),
    ],
)
def test_matches_resizing_every_channel(size_in, size_out):
    generator = torch.Generator().manual_seed(sum(size_in) + sum(size_out))
    probs = torch.rand(2, 5, *size_in, generator=generator).softmax(1)  # noisy: many class borders
    labels, top = upsampled_argmax(probs, *size_out)
    expected_labels, expected_top = _reference(probs, *size_out)
    assert labels.dtype == torch.uint8 and labels.shape == (2, *size_out)
    assert torch.equal(labels, expected_labels)
    torch.testing.assert_close(top, expected_top, rtol=0, atol=1e-6)


def test_matches_on_organ_like_maps_with_many_classes():
    probs = _organ_like_probs(3, 8, 64, seed=1)
    labels, top = upsampled_argmax(probs, 256, 256)
    expected_labels, expected_top = _reference(probs, 256, 256)
    assert torch.equal(labels, expected_labels)
    torch.testing.assert_close(top, expected_top, rtol=0, atol=1e-6)
    assert len(labels.unique()) >= 5  # several organs, so several kinds of border


def test_source_grid_follows_interpolate():
    # resizing the index ramp itself gives back the interpolation positions
    for size_in, size_out in [(4, 10), (128, 512), (50, 17)]:
        lower, upper, weight = source_grid(size_in, size_out)
        ramp = torch.arange(size_in, dtype=torch.float32)[None, None, :, None].repeat(1, 1, 1, 2)
        positions = F.interpolate(ramp, size=(size_out, 2), mode="bilinear", align_corners=False)[0, 0, :, 0]
        torch.testing.assert_close(lower.float() * (1 - weight) + upper.float() * weight, positions)
        assert (lower >= 0).all() and (upper <= size_in - 1).all() and ((weight >= 0) & (weight <= 1)).all()


@pytest.mark.parametrize("size_out", [(512, 512), (97, 61), (40, 40)])
def test_uint8_maps_resize_channel_by_channel_to_the_same_values(size_out):
    maps = torch.randint(0, 256, (3, 5, 40, 32), dtype=torch.uint8)
    expected = F.interpolate(maps, size=size_out, mode="bilinear", align_corners=False)
    got = _to_grid(maps, *size_out)
    assert got.dtype == torch.uint8 and torch.equal(got, expected)
