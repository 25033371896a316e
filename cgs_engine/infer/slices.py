"""Slice-batched forward passes over a normalised [z, y, x] volume at the model's input size.

Slices are resized to the square input size (bilinear), run through the network, and the
generalist's softmax probabilities are resized back to the slice's own size (bilinear) before
the argmax, so that the label map lies exactly on the input grid (``upsampled_argmax`` does that
without resizing every class channel). Of the specialists only what
is shown is resized: each head's own-class probability and the IHED disagreement, plus the three
generalist maps the review's error model reads (``EVIDENCE``), computed at the
network's resolution (resizing all K x 3 head channels cost about twice as much). These shown maps
are quantised to uint8 (255 = 1.0, the stored map format) at the network's resolution and resized
as uint8: at most 1/255 from resizing the floats first, and about half the time, because turning
full-size float maps into uint8 cost more than resizing them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cgs_engine.infer.field import FieldPadding
from cgs_engine.infer.upsample import upsampled_argmax
from cgs_engine.method.ihed import disagreement_map
from cgs_engine.method.labels import BACKGROUND, MINE
from cgs_engine.runtime import Runtime


class Cancelled(Exception):
    """Raised when the cancel callback asks a long computation to stop."""


@dataclass
class SliceBatchProbs:
    start: int
    stop: int
    labels: torch.Tensor  # [b, H, W] uint8 generalist argmax on the slice grid
    confidence: torch.Tensor  # [b, H, W] float32 generalist top probability on the slice grid
    foreground: torch.Tensor | None = None  # [b, K, H, W] uint8 p_k(own class) of each head, 255 = 1
    disagreement: torch.Tensor | None = None  # [b, H, W] uint8 soft IHED disagreement, 255 = 1
    # [b, len(EVIDENCE), H, W] uint8: what the error model reads besides the maps above (see EVIDENCE)
    evidence: torch.Tensor | None = None


# Generalist maps the review's error model needs (cgs_engine.review.error_features), with the heads.
EVIDENCE = ("background", "margin", "generalist_vs_specialists")


def evidence_maps(generalist: torch.Tensor, spec_probs: torch.Tensor) -> torch.Tensor:
    """[b, 3, h, w] float: P(background), top minus second probability, and generalist-vs-heads distance.

    The last is half the L1 distance between the generalist's distribution and the heads' own
    view of the classes ([mean background of the heads, p_1(mine), ..., p_K(mine)], clipped to 1).
    """
    top = generalist.topk(2, dim=1).values
    heads = torch.cat([spec_probs[:, :, BACKGROUND].mean(dim=1, keepdim=True), spec_probs[:, :, MINE]], dim=1)
    apart = ((generalist - heads).abs().sum(dim=1) / 2).clamp(0.0, 1.0)
    return torch.stack([generalist[:, 0], top[:, 0] - top[:, 1], apart], dim=1)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """[b, H, W] or [b, 1, H, W] -> [b, 1, size, size] float32 (bilinear; no-op at the same size)."""
    if images.dim() == 3:
        images = images[:, None]
    if images.shape[-2:] == (size, size):
        return images.float()
    return F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """[b, H, W] integer -> [b, size, size] uint8 (nearest)."""
    if labels.shape[-2:] == (size, size):
        return labels.to(torch.uint8)
    resized = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")
    return resized[:, 0].to(torch.uint8)


def to_uint8(probabilities: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> uint8 with 255 = 1.0 (rounded; out-of-range values clipped)."""
    return (probabilities.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


def _to_grid(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if probs.shape[-2:] == (height, width):
        return probs
    if probs.dtype == torch.uint8:
        # torch's CPU uint8 bilinear kernel is about 3x faster on one-channel images, same values
        batch, channels = probs.shape[:2]
        single = F.interpolate(
            probs.flatten(0, 1)[:, None], size=(height, width), mode="bilinear", align_corners=False
        )
        return single.view(batch, channels, height, width)
    return F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)


@torch.inference_mode()
def iterate_slice_probs(
    model: torch.nn.Module,
    image: np.ndarray | torch.Tensor,
    input_size: int,
    runtime: Runtime,
    batch_size: int = 16,
    specialists: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
    padding: FieldPadding | None = None,
) -> Iterator[SliceBatchProbs]:
    """Yield per-batch probabilities of a volume indexed [z, y, x].

    The volume is already normalised, or ``normalize`` turns each batch of raw slices into model
    input (``Normalization.slab_normalizer``), so no float copy of the whole volume is made.
    ``padding`` (:mod:`cgs_engine.infer.field`) widens slices smaller than the trained field of
    view before they are resized; the outputs are cropped back to the slice.
    """
    if normalize is not None:
        raw = np.asarray(image)
        depth, height, width = raw.shape
    else:
        volume = torch.as_tensor(np.asarray(image, dtype=np.float32)) if not torch.is_tensor(image) else image
        depth, height, width = volume.shape
    want_specialists = specialists and getattr(model, "specialists", None) is not None
    for start in range(0, depth, batch_size):
        if cancel is not None and cancel():
            raise Cancelled("prediction cancelled")
        stop = min(start + batch_size, depth)
        slab = torch.from_numpy(normalize(raw[start:stop])) if normalize is not None else volume[start:stop]
        if padding is not None:
            slab = padding.pad_images(slab.float())
        inputs = runtime.prepare(resize_images(slab, input_size))
        with runtime.autocast():
            output = model(inputs, specialists=want_specialists)
        generalist = torch.softmax(output.generalist.float(), dim=1)
        labels, confidence = upsampled_argmax(generalist, *slab.shape[-2:])
        if padding is not None:
            labels, confidence = padding.crop(labels), padding.crop(confidence)
        foreground = disagreement = evidence = None
        if output.specialists is not None:
            spec_probs = torch.softmax(output.specialists.float(), dim=2)
            heads = spec_probs.shape[1]
            shown = torch.cat(
                [
                    spec_probs[:, :, MINE],
                    disagreement_map(spec_probs, soft=True)[:, None],
                    evidence_maps(generalist, spec_probs),
                ],
                dim=1,
            )
            # CUDA has no uint8 bilinear kernel; there the float resize is cheap anyway
            grid = slab.shape[-2:]
            shown = (
                to_uint8(_to_grid(shown, *grid)).cpu() if shown.is_cuda else _to_grid(to_uint8(shown), *grid)
            )
            if padding is not None:
                shown = padding.crop(shown)
            foreground, disagreement, evidence = shown[:, :heads], shown[:, heads], shown[:, heads + 1 :]
        yield SliceBatchProbs(start, stop, labels.cpu(), confidence.cpu(), foreground, disagreement, evidence)
        if progress is not None:
            progress(stop, depth)


def predict_label_volume(
    model,
    image,
    input_size: int,
    runtime: Runtime,
    batch_size: int = 16,
    progress=None,
    cancel=None,
    padding: FieldPadding | None = None,
) -> np.ndarray:
    """Generalist argmax label map [z, y, x] uint8 (the validation path: no specialist maps)."""
    labels = np.zeros(np.shape(image), dtype=np.uint8)
    for batch in iterate_slice_probs(
        model,
        image,
        input_size,
        runtime,
        batch_size,
        specialists=False,
        progress=progress,
        cancel=cancel,
        padding=padding,
    ):
        labels[batch.start : batch.stop] = batch.labels.numpy()
    return labels
