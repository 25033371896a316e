"""Batched, torch-native weak and strong augmentation for 2D slices.

Weak view, per sample (the reference recipe):

- with p = 0.5 a rot90 by k in {0, 1, 2, 3} followed by a flip, horizontal or vertical;
- otherwise with p = 0.5 a rotation by an angle in [-20, 20] degrees about the image centre;
- otherwise unchanged.

Overall: 50 % rot90 + flip, 25 % free rotation, 25 % identity.

Geometry is drawn once by :func:`weak_augment_params` and applied by :func:`apply_weak_geometry`,
so the identical transform can be applied to any number of tensors of the same batch (image,
label, teacher probabilities). Floating tensors are resampled bilinearly, integer and bool tensors
(label maps) with nearest neighbour, so label values, including the ignore value 255, are never
blended. rot90 and flips are exact index operations, never interpolation.

Pixels rotated in from outside the image: images are zero-padded, labels get ``label_fill``
(default 0, background). Background matches the zero-padded image; pass 255 to ignore them in
the loss instead.

Mirror images and left/right classes: every rot90 + flip is a mirror image. Where the classes
include a left/right pair (left and right parotid), the label of a mirrored sample must swap the
pair (``label_table``), or mirrors must not be drawn (``mirror=False``: the rot90 part then turns
the slice without flipping it); see ``cgs_engine.classes.laterality``.

Non-square images: a 90 or 270 degree turn would change the shape, so for H != W the rot90 part
draws k from {0, 2} only (the flip is unchanged). The free rotation is rigid in pixel space for
any aspect ratio.

Strong view (:func:`strong_augment`): the weak view plus, with p = 0.8 per sample, a
brightness/contrast jitter ``(x - mean) * c + mean + o * (max - min)`` with c ~ U(1 - contrast,
1 + contrast) and o ~ U(-brightness, brightness); mean, max and min are taken over the sample.
Both defaults are 0.2. The jitter is an increasing affine map of intensities, scale-free so it
suits [0, 1] and zero-mean data alike, and it never touches geometry. Values are not clipped.

All random draws come from the caller's ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IDENTITY = 0
ROT90_FLIP = 1
ROTATION = 2


@dataclass(frozen=True)
class WeakAugmentParams:
    """Per-sample geometry of one weak view; all tensors are [B] on the CPU."""

    branch: Tensor  # long: IDENTITY, ROT90_FLIP or ROTATION
    rot90_k: Tensor  # long: quarter turns, used where branch == ROT90_FLIP
    flip_vertical: Tensor  # bool: flip along H (else along W), used where branch == ROT90_FLIP
    mirrored: Tensor  # bool: the rot90 is followed by the flip (a mirror image); False = a plain turn
    angle_degrees: Tensor  # float: used where branch == ROTATION
    height: int
    width: int

    @property
    def batch(self) -> int:
        return int(self.branch.shape[0])


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> Tensor:
    draws = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return (low + (high - low) * draws).cpu()


def weak_augment_params(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    p_rot90_flip: float = 0.5,
    p_rotation: float = 0.5,
    max_angle_degrees: float = 20.0,
    mirror: bool = True,
) -> WeakAugmentParams:
    """Draw the weak-view geometry for a batch.

    ``p_rotation`` is conditional: the probability of a free rotation for samples that did not
    get rot90 + flip. The same number of draws is made whatever the outcome, so a seed fixes the
    whole sequence of batches. ``mirror=False`` keeps the rot90 but never flips (no mirror image).
    """
    first = _uniform((batch,), 0.0, 1.0, generator)
    second = _uniform((batch,), 0.0, 1.0, generator)
    quarter_turns = torch.randint(0, 4, (batch,), generator=generator, device=generator.device).cpu()
    flip_vertical = torch.randint(0, 2, (batch,), generator=generator, device=generator.device).cpu()
    angles = _uniform((batch,), -max_angle_degrees, max_angle_degrees, generator).float()

    if height != width:
        quarter_turns = (quarter_turns // 2) * 2

    branch = torch.full((batch,), IDENTITY, dtype=torch.long)
    branch[second < p_rotation] = ROTATION
    branch[first < p_rot90_flip] = ROT90_FLIP
    return WeakAugmentParams(
        branch=branch,
        rot90_k=quarter_turns.long(),
        flip_vertical=flip_vertical.bool(),
        mirrored=torch.full((batch,), bool(mirror)),
        angle_degrees=angles,
        height=height,
        width=width,
    )


def _rotation_grid(angles_degrees: Tensor, height: int, width: int, like: Tensor) -> Tensor:
    """Sampling grid [N,H,W,2] of a rotation about the centre, rigid in pixel space.

    Equivalent to ``affine_grid`` with ``align_corners=False``, built by broadcasting because
    ``affine_grid`` is several times slower on the CPU.
    """
    radians = angles_degrees.to(torch.float64) * (math.pi / 180.0)
    cos = torch.cos(radians).to(device=like.device, dtype=like.dtype)[:, None, None]
    sin = torch.sin(radians).to(device=like.device, dtype=like.dtype)[:, None, None]
    # Pixel centres in grid_sample's per-axis normalised coordinates.
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) * 2 + 1) / height - 1
    xs, ys = xs[None, None, :], ys[None, :, None]
    # Rotating in pixel space and rescaling the cross terms by the aspect ratio keeps the rotation
    # free of shear on non-square images.
    source_x = cos * xs - sin * (height / width) * ys
    source_y = sin * (width / height) * xs + cos * ys
    return torch.stack((source_x, source_y), dim=-1)


def _apply_rot90_flip(x: Tensor, params: WeakAugmentParams) -> Tensor:
    """rot90 by k then a flip, as exact index operations; other samples pass through.

    Every element of the dihedral group is an optional transpose followed by optional flips of H
    and W (torch.rot90 with k=1 is flip_H(T x), k=2 flip_H(flip_W x), k=3 flip_W(T x)), so the
    samples fall into at most 8 groups that each need one copy-out, one flip and one copy-back.
    That moves less memory than per-sample torch.where over the whole batch.
    """
    selected = params.branch == ROT90_FLIP
    k = params.rot90_k
    transpose = k % 2 == 1
    flip_h = ((k == 1) | (k == 2)) ^ (params.mirrored & params.flip_vertical)
    flip_w = ((k == 2) | (k == 3)) ^ (params.mirrored & ~params.flip_vertical)
    group_keys = transpose.long() * 4 + flip_h.long() * 2 + flip_w.long()

    out = x.clone()
    for key in torch.unique(group_keys[selected]).tolist():
        indices = torch.nonzero(selected & (group_keys == key)).flatten().to(x.device)
        group = x.index_select(0, indices)
        if key & 4:
            group = group.transpose(-2, -1)
        flip_dims = [dim for dim, bit in ((-2, 2), (-1, 1)) if key & bit]
        if flip_dims:
            group = group.flip(flip_dims)
        out.index_copy_(0, indices, group)
    return out


def _rotated_subset(x: Tensor, params: WeakAugmentParams, label_fill: int) -> tuple[Tensor, Tensor] | None:
    """Indices of the rotated samples and their rotated version of ``x``, or None if there are none."""
    selected = params.branch == ROTATION
    if not bool(selected.any()):
        return None
    indices_cpu = torch.nonzero(selected).flatten()
    indices = indices_cpu.to(x.device)
    group = x.index_select(0, indices)
    if group.is_floating_point():
        grid = _rotation_grid(params.angle_degrees[indices_cpu], params.height, params.width, group)
        return indices, F.grid_sample(group, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Shift labels by one so that the zero padding of grid_sample marks outside pixels; float32
    # represents every label value exactly, and nearest sampling never mixes two of them.
    shifted = group.to(torch.float32) + 1.0
    grid = _rotation_grid(params.angle_degrees[indices_cpu], params.height, params.width, shifted)
    sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    labels = sampled.round_().to(torch.long) - 1
    labels = labels.masked_fill_(labels < 0, label_fill)
    return indices, labels.to(x.dtype)


def apply_weak_geometry(x: Tensor, params: WeakAugmentParams, label_fill: int = 0) -> Tensor:
    """Apply drawn weak geometry to ``x`` of shape [B, ..., H, W]; returns a new tensor.

    Floating tensors: bilinear, zero padding. Integer/bool tensors: nearest, pixels from outside
    the image set to ``label_fill``.
    """
    if x.dim() < 3 or x.shape[0] != params.batch or tuple(x.shape[-2:]) != (params.height, params.width):
        raise ValueError(
            f"expected [B={params.batch}, ..., {params.height}, {params.width}], got {tuple(x.shape)}"
        )
    original_shape = x.shape
    flat = x.reshape(params.batch, -1, params.height, params.width)
    out = _apply_rot90_flip(flat, params)
    rotated = _rotated_subset(flat, params, label_fill)
    if rotated is not None:
        out.index_copy_(0, *rotated)
    return out.reshape(original_shape)


def mirrored_samples(params: WeakAugmentParams) -> Tensor:
    """[B] bool: the samples whose weak view is a mirror image of the slice."""
    return (params.branch == ROT90_FLIP) & params.mirrored


def swap_mirrored_labels(labels: Tensor, params: WeakAugmentParams, label_table: Tensor) -> Tensor:
    """Relabel the mirrored samples of ``labels`` [B, ...] through ``label_table`` (id -> id).

    ``label_table`` covers every value labels can hold (the ignore value included, mapped to itself).
    """
    mirrored = mirrored_samples(params).to(labels.device)
    if not bool(mirrored.any()):
        return labels
    swapped = label_table.to(labels.device)[labels.long()].to(labels.dtype)
    shape = (-1,) + (1,) * (labels.dim() - 1)
    return torch.where(mirrored.view(shape), swapped, labels)


def weak_augment(
    images: Tensor,
    labels: Tensor | None,
    generator: torch.Generator,
    label_fill: int = 0,
    max_angle_degrees: float = 20.0,
    mirror: bool = True,
    label_table: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Weak view of images [B,C,H,W] and, with identical geometry, labels [B,H,W] (or None).

    ``label_table`` (id -> id, e.g. left and right parotid swapped) relabels mirrored samples;
    ``mirror=False`` draws no mirror images at all.
    """
    batch, height, width = images.shape[0], images.shape[-2], images.shape[-1]
    params = weak_augment_params(
        batch, height, width, generator, max_angle_degrees=max_angle_degrees, mirror=mirror
    )
    augmented_images = apply_weak_geometry(images, params)
    augmented_labels = None if labels is None else apply_weak_geometry(labels, params, label_fill)
    if augmented_labels is not None and label_table is not None:
        augmented_labels = swap_mirrored_labels(augmented_labels, params, label_table)
    return augmented_images, augmented_labels


def strong_augment(
    weak_images: Tensor,
    generator: torch.Generator,
    p_jitter: float = 0.8,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> Tensor:
    """Brightness/contrast jitter of the weak view [B, ..., H, W]; geometry is left untouched."""
    batch = weak_images.shape[0]
    apply = _uniform((batch,), 0.0, 1.0, generator) < p_jitter
    contrast_factor = _uniform((batch,), 1.0 - contrast, 1.0 + contrast, generator)
    brightness_offset = _uniform((batch,), -brightness, brightness, generator)

    flat = weak_images.reshape(batch, -1)
    stats_dtype = torch.promote_types(flat.dtype, torch.float32)
    mean = flat.mean(dim=1, dtype=stats_dtype)
    intensity_range = (flat.amax(dim=1) - flat.amin(dim=1)).to(stats_dtype)

    device = weak_images.device
    scale = contrast_factor.to(device=device, dtype=stats_dtype)
    shift = mean * (1.0 - scale) + brightness_offset.to(device=device, dtype=stats_dtype) * intensity_range
    jittered = (flat.to(stats_dtype) * scale[:, None] + shift[:, None]).to(weak_images.dtype)
    # torch.where keeps untouched samples bit-identical to the weak view.
    out = torch.where(apply.to(device)[:, None], jittered, flat)
    return out.reshape(weak_images.shape)
