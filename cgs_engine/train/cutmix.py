"""CutMix boxes for the strong view: one rectangle per sample, always fully inside the image.

Sampling, per sample (fixes reference defect 3: real boxes, and every sample gets one):

1. area fraction a ~ U(area);
2. aspect ratio r = box_h / box_w ~ U over the part of ``aspect`` for which a box of area a fits
   in the image, i.e. r in [max(r_lo, a H / W), min(r_hi, H / (a W))]. The area distribution is
   therefore exactly the requested one; only for large areas is the aspect range narrowed, instead
   of shrinking the box (which would bias the area) or rejecting draws (which would bias both);
3. box_h = round(sqrt(a H W r)), box_w = round(a H W / box_h), then box_w is clamped so that
   box_h / box_w stays inside ``aspect`` exactly; the area fraction is exact up to that rounding;
4. the top-left corner is uniform over the positions that keep the box inside the image.

If the image is so elongated that no aspect in the range fits, the aspect is clamped and the
box clipped to the image (smaller area); this does not happen for square images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cutmix_boxes(
    batch: int,
    height: int,
    width: int,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1.0 / 0.3),
) -> Tensor:
    """Boolean masks [B, H, W], True inside each sample's box. Created on the generator's device."""
    area_low, area_high = area
    aspect_low, aspect_high = aspect
    if not (0.0 < area_low <= area_high <= 1.0) or not (0.0 < aspect_low <= aspect_high):
        raise ValueError(f"invalid CutMix ranges area={area}, aspect={aspect}")

    device = generator.device
    draws = torch.rand((4, batch), generator=generator, device=device, dtype=torch.float64)
    area_fraction = area_low + (area_high - area_low) * draws[0]

    fitting_low = torch.clamp(area_fraction * height / width, min=aspect_low)
    fitting_high = torch.clamp(height / (area_fraction * width), max=aspect_high)
    fitting_high = torch.maximum(fitting_high, fitting_low)
    aspect_ratio = fitting_low + (fitting_high - fitting_low) * draws[1]

    box_pixels = area_fraction * height * width
    box_height = torch.sqrt(box_pixels * aspect_ratio).round().clamp(1, height)
    box_width = (box_pixels / box_height).round()
    box_width = torch.minimum(box_width, torch.floor(box_height / aspect_low + 1e-9))
    box_width = torch.maximum(box_width, torch.ceil(box_height / aspect_high - 1e-9))
    box_width = box_width.clamp(1, width)

    top = torch.floor(draws[2] * (height - box_height + 1)).clamp(max=height - box_height)
    left = torch.floor(draws[3] * (width - box_width + 1)).clamp(max=width - box_width)

    rows = torch.arange(height, device=device, dtype=torch.float64)
    columns = torch.arange(width, device=device, dtype=torch.float64)
    inside_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < (top + box_height)[:, None])
    inside_columns = (columns[None, :] >= left[:, None]) & (columns[None, :] < (left + box_width)[:, None])
    return inside_rows[:, :, None] & inside_columns[:, None, :]


def apply_cutmix(x: Tensor, partner: Tensor, boxes: Tensor) -> Tensor:
    """``partner`` inside each sample's box, ``x`` elsewhere.

    ``x`` and ``partner`` share a shape [B, ..., H, W] (images [B,1,H,W], probabilities [B,C,H,W]
    or [B,K,S,H,W], labels [B,H,W]); ``boxes`` is [B, H, W] bool.
    """
    if x.shape != partner.shape:
        raise ValueError(f"x {tuple(x.shape)} and partner {tuple(partner.shape)} differ in shape")
    if x.dim() < 3 or boxes.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"boxes {tuple(boxes.shape)} do not match [B, ..., H, W] = {tuple(x.shape)}")
    middle_axes = (1,) * (x.dim() - 3)
    mask = boxes.to(device=x.device, dtype=torch.bool).reshape(x.shape[0], *middle_axes, *x.shape[-2:])
    return torch.where(mask, partner, x)
