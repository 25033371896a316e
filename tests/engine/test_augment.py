"""Weak and strong augmentation: geometry, image/label alignment, jitter ranges, determinism."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cgs_engine.train.augment import (
    IDENTITY,
    ROT90_FLIP,
    ROTATION,
    WeakAugmentParams,
    _rotation_grid,
    apply_weak_geometry,
    strong_augment,
    weak_augment,
    weak_augment_params,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blob_labels(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Label maps with a few large rectangles of classes 1..3 and an ignore (255) patch."""
    generator = _generator(seed)
    labels = torch.zeros((batch, size, size), dtype=torch.long)
    for sample in range(batch):
        for value in (1, 2, 3, 255):
            extent = size // 4 if value != 255 else size // 8
            top, left = (torch.randint(0, size - extent, (2,), generator=generator)).tolist()
            labels[sample, top : top + extent, left : left + extent] = value
    return labels


def _forced(params: WeakAugmentParams, branch: int, **overrides: torch.Tensor) -> WeakAugmentParams:
    forced = torch.full_like(params.branch, branch)
    return dataclasses.replace(params, branch=forced, **overrides)


def test_branch_frequencies_and_ranges():
    params = weak_augment_params(40_000, 32, 32, _generator())
    fractions = [float((params.branch == b).float().mean()) for b in (ROT90_FLIP, ROTATION, IDENTITY)]
    assert fractions == pytest.approx([0.5, 0.25, 0.25], abs=0.015)
    assert set(params.rot90_k.tolist()) == {0, 1, 2, 3}
    assert 0.45 < float(params.flip_vertical.float().mean()) < 0.55
    assert float(params.angle_degrees.abs().max()) <= 20.0
    assert float(params.angle_degrees.abs().max()) > 19.0


def test_rot90_flip_is_exact_and_keeps_alignment():
    labels = _blob_labels(16, 48)
    images = labels.float()[:, None]
    params = weak_augment_params(16, 48, 48, _generator(1))
    params = _forced(params, ROT90_FLIP, rot90_k=torch.arange(16) % 4, flip_vertical=torch.arange(16) % 8 < 4)

    out_images = apply_weak_geometry(images, params)
    out_labels = apply_weak_geometry(labels, params)

    assert out_labels.dtype == labels.dtype
    assert torch.equal(out_images[:, 0], out_labels.float())
    for sample in range(16):
        k = int(params.rot90_k[sample])
        flip_dim = -2 if bool(params.flip_vertical[sample]) else -1
        expected = torch.flip(torch.rot90(labels[sample], k, dims=(-2, -1)), dims=(flip_dim,))
        assert torch.equal(out_labels[sample], expected)
        # Same label set with the same pixel counts: nothing interpolated, nothing lost.
        assert torch.equal(
            torch.bincount(out_labels[sample].flatten()), torch.bincount(labels[sample].flatten())
        )


def test_rotation_keeps_image_label_alignment():
    generator = _generator(4)
    labels = torch.zeros((12, 128, 128), dtype=torch.long)
    for sample in range(12):
        top, left = torch.randint(16, 64, (2,), generator=generator).tolist()
        labels[sample, top : top + 48, left : left + 48] = 1
    params = _forced(weak_augment_params(12, 128, 128, _generator(2)), ROTATION)
    params = dataclasses.replace(params, angle_degrees=torch.linspace(-20, 20, 12))

    image_mask = apply_weak_geometry(labels.float()[:, None], params)[:, 0] > 0.5
    label_mask = apply_weak_geometry(labels, params).bool()

    assert float((image_mask == label_mask).float().mean()) > 0.99
    # Per-sample IoU is sharper: a one-pixel shift gives about 0.95.
    iou = (image_mask & label_mask).sum((1, 2)) / (image_mask | label_mask).sum((1, 2))
    assert float(iou.min()) > 0.99


def test_rotation_keeps_label_values_including_ignore():
    labels = _blob_labels(12, 96, seed=3)
    params = _forced(weak_augment_params(12, 96, 96, _generator(2)), ROTATION)
    out_labels = apply_weak_geometry(labels, params)
    assert set(out_labels.unique().tolist()) == {0, 1, 2, 3, 255}


def test_rotation_by_zero_is_identity():
    images = torch.rand(3, 2, 40, 40)
    labels = _blob_labels(3, 40)
    params = _forced(weak_augment_params(3, 40, 40, _generator()), ROTATION, angle_degrees=torch.zeros(3))
    assert torch.allclose(apply_weak_geometry(images, params), images, atol=1e-5)
    assert torch.equal(apply_weak_geometry(labels, params), labels)


def test_rotation_grid_matches_affine_grid_on_square_images():
    angles = torch.tensor([-17.0, 3.0, 20.0])
    like = torch.zeros(3, 1, 64, 64)
    radians = angles * math.pi / 180
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(radians), -torch.sin(radians)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(radians), torch.cos(radians)
    reference = F.affine_grid(theta, [3, 1, 64, 64], align_corners=False)
    assert torch.allclose(_rotation_grid(angles, 64, 64, like), reference, atol=1e-5)


def test_rotation_is_rigid_on_non_square_images():
    height, width = 48, 160
    grid = _rotation_grid(torch.tensor([15.0]), height, width, torch.zeros(1, 1, height, width))[0]
    # Back to pixel units (align_corners=False), measured from the image centre.
    source_x = (grid[..., 0] + 1) * width / 2 - width / 2
    source_y = (grid[..., 1] + 1) * height / 2 - height / 2
    target_y, target_x = torch.meshgrid(
        torch.arange(height) + 0.5 - height / 2, torch.arange(width) + 0.5 - width / 2, indexing="ij"
    )
    assert torch.allclose(source_x**2 + source_y**2, target_x**2 + target_y**2, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("label_fill", [0, 255])
def test_pixels_from_outside_are_zero_in_images_and_fill_in_labels(label_fill):
    images = torch.ones(2, 1, 64, 64)
    labels = torch.ones(2, 64, 64, dtype=torch.long)
    params = _forced(
        weak_augment_params(2, 64, 64, _generator()), ROTATION, angle_degrees=torch.tensor([20.0, -20.0])
    )
    out_images = apply_weak_geometry(images, params)[:, 0]
    out_labels = apply_weak_geometry(labels, params, label_fill=label_fill)
    assert float(out_images[:, 0, 0].abs().max()) == 0.0
    assert bool((out_labels[out_images == 0] == label_fill).all())
    assert bool((out_labels[out_images == 1] == 1).all())
    assert set(out_labels.unique().tolist()) == {1, label_fill}


def test_identity_branch_is_unchanged_and_inputs_are_not_modified():
    images = torch.rand(4, 1, 32, 32)
    labels = _blob_labels(4, 32)
    saved_images, saved_labels = images.clone(), labels.clone()
    params = _forced(weak_augment_params(4, 32, 32, _generator()), IDENTITY)
    assert torch.equal(apply_weak_geometry(images, params), images)
    assert torch.equal(apply_weak_geometry(labels, params), labels)
    weak_augment(images, labels, _generator())
    assert torch.equal(images, saved_images) and torch.equal(labels, saved_labels)


def test_all_channels_and_extra_axes_get_the_same_geometry():
    base = torch.rand(8, 1, 32, 32)
    stacked = base[:, :, None].expand(8, 3, 2, 32, 32).contiguous()
    params = weak_augment_params(8, 32, 32, _generator(5))
    expected = apply_weak_geometry(base, params)
    out = apply_weak_geometry(stacked, params)
    assert out.shape == stacked.shape
    assert torch.equal(out, expected[:, :, None].expand_as(out))


def test_non_square_images_only_use_half_turns():
    params = weak_augment_params(2000, 40, 64, _generator())
    assert set(params.rot90_k.tolist()) == {0, 2}
    images, labels = weak_augment(torch.rand(32, 1, 40, 64), torch.randint(0, 3, (32, 40, 64)), _generator())
    assert images.shape == (32, 1, 40, 64) and labels is not None and labels.shape == (32, 40, 64)


def test_weak_augment_without_labels_and_shape_errors():
    images, labels = weak_augment(torch.rand(2, 1, 16, 16), None, _generator())
    assert labels is None and images.shape == (2, 1, 16, 16)
    params = weak_augment_params(2, 16, 16, _generator())
    with pytest.raises(ValueError):
        apply_weak_geometry(torch.rand(3, 1, 16, 16), params)
    with pytest.raises(ValueError):
        apply_weak_geometry(torch.rand(2, 1, 16, 8), params)


def test_same_seed_same_views_and_different_seed_different_views():
    images = torch.rand(16, 1, 32, 32)
    labels = _blob_labels(16, 32)

    def views(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        generator = _generator(seed)
        weak, weak_labels = weak_augment(images, labels, generator)
        assert weak_labels is not None
        return weak, weak_labels, strong_augment(weak, generator)

    first, second, other = views(7), views(7), views(8)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], other[0])


def _affine_fit(weak: torch.Tensor, strong: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample least-squares slope, intercept and max residual of strong ~ slope * weak + intercept."""
    x = weak.reshape(weak.shape[0], -1).double()
    y = strong.reshape(strong.shape[0], -1).double()
    x_centred = x - x.mean(1, keepdim=True)
    slope = (x_centred * (y - y.mean(1, keepdim=True))).sum(1) / (x_centred**2).sum(1)
    intercept = y.mean(1) - slope * x.mean(1)
    residual = (y - (slope[:, None] * x + intercept[:, None])).abs().amax(1)
    return slope, intercept, residual


def test_strong_view_is_an_intensity_map_of_the_weak_view():
    """Identical geometry: each strong sample is an increasing affine function of its weak sample."""
    weak, _ = weak_augment(torch.rand(4000, 1, 8, 8), None, _generator(11))
    strong = strong_augment(weak, _generator(12), p_jitter=0.8, brightness=0.2, contrast=0.2)

    slope, intercept, residual = _affine_fit(weak, strong)
    assert float(residual.max()) < 1e-5
    assert float(slope.min()) >= 0.8 - 1e-5 and float(slope.max()) <= 1.2 + 1e-5

    flat = weak.reshape(4000, -1).double()
    intensity_range = flat.amax(1) - flat.amin(1)
    brightness = (intercept - flat.mean(1) * (1 - slope)) / intensity_range
    assert float(brightness.abs().max()) <= 0.2 + 1e-5

    unchanged = (strong == weak).reshape(4000, -1).all(1)
    assert float(unchanged.float().mean()) == pytest.approx(0.2, abs=0.03)


def test_strong_view_without_jitter_is_the_weak_view():
    weak = torch.rand(6, 1, 16, 16)
    assert torch.equal(strong_augment(weak, _generator(), p_jitter=0.0), weak)
    jittered = strong_augment(weak, _generator(), p_jitter=1.0)
    assert jittered.shape == weak.shape
    assert not (jittered == weak).reshape(6, -1).all(1).any()
