"""CutMix boxes (one real box per sample, inside the image, right area/aspect) and mixing."""

from __future__ import annotations

import pytest
import torch

from cgs_engine.train.cutmix import apply_cutmix, cutmix_boxes

AREA_TOLERANCE = 0.003  # rounding the box sides to whole pixels


def _box_geometry(boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    rows, columns = boxes.any(2), boxes.any(1)
    height, width = rows.sum(1), columns.sum(1)
    row_index = torch.arange(boxes.shape[1])
    column_index = torch.arange(boxes.shape[2])
    top = torch.where(rows, row_index, boxes.shape[1]).amin(1)
    bottom = torch.where(rows, row_index, -1).amax(1)
    left = torch.where(columns, column_index, boxes.shape[2]).amin(1)
    right = torch.where(columns, column_index, -1).amax(1)
    return {
        "height": height,
        "width": width,
        "pixels": boxes.sum((1, 2)),
        "contiguous": (bottom - top + 1 == height) & (right - left + 1 == width),
        "top": top,
        "left": left,
        "bottom": bottom,
        "right": right,
    }


def _many_boxes(count: int, height: int, width: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    chunks = [_box_geometry(cutmix_boxes(1000, height, width, generator)) for _ in range(count // 1000)]
    return {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}


@pytest.mark.parametrize("size", [256, 224])
def test_every_sample_gets_one_box_with_the_requested_area_and_aspect(size):
    boxes = _many_boxes(10_000, size, size)
    height, width = boxes["height"].double(), boxes["width"].double()

    assert bool((boxes["pixels"] > 0).all())
    # A single filled rectangle: its pixel count is its bounding box.
    assert bool(boxes["contiguous"].all())
    assert torch.equal(boxes["pixels"], boxes["height"] * boxes["width"])

    area = boxes["pixels"].double() / (size * size)
    assert float(area.min()) >= 0.02 - AREA_TOLERANCE
    assert float(area.max()) <= 0.4 + AREA_TOLERANCE
    aspect = height / width
    assert float(aspect.min()) >= 0.3 and float(aspect.max()) <= 3.34

    # Not full-width (or full-height) bands: only large boxes in an extreme aspect touch both sides.
    assert float((boxes["width"] == size).double().mean()) < 0.01
    assert float((boxes["height"] == size).double().mean()) < 0.01

    # Area fraction ~ U(0.02, 0.4).
    assert float(area.mean()) == pytest.approx(0.21, abs=0.005)
    histogram = torch.histc(area.float(), bins=8, min=0.02, max=0.4) / area.numel()
    assert float(histogram.min()) > 0.125 - 0.025 and float(histogram.max()) < 0.125 + 0.025

    # Positions cover the whole image.
    assert int(boxes["top"].min()) == 0 and int(boxes["left"].min()) == 0
    assert int(boxes["bottom"].max()) == size - 1 and int(boxes["right"].max()) == size - 1


def test_non_square_images_and_custom_ranges():
    boxes = _many_boxes(2000, 64, 256, seed=1)
    assert bool((boxes["pixels"] > 0).all()) and bool(boxes["contiguous"].all())
    area = boxes["pixels"].double() / (64 * 256)
    assert float(area.min()) >= 0.02 - AREA_TOLERANCE and float(area.max()) <= 0.4 + AREA_TOLERANCE

    generator = torch.Generator().manual_seed(2)
    square = _box_geometry(cutmix_boxes(500, 100, 100, generator, area=(0.25, 0.25), aspect=(1.0, 1.0)))
    assert bool((square["height"] == 50).all()) and bool((square["width"] == 50).all())

    with pytest.raises(ValueError):
        cutmix_boxes(2, 32, 32, generator, area=(0.5, 0.1))


def test_boxes_are_reproducible():
    first = cutmix_boxes(64, 96, 96, torch.Generator().manual_seed(3))
    second = cutmix_boxes(64, 96, 96, torch.Generator().manual_seed(3))
    other = cutmix_boxes(64, 96, 96, torch.Generator().manual_seed(4))
    assert first.dtype == torch.bool and first.shape == (64, 96, 96)
    assert torch.equal(first, second) and not torch.equal(first, other)


@pytest.mark.parametrize(
    "shape",
    [(6, 20, 24), (6, 1, 20, 24), (6, 4, 20, 24), (6, 3, 3, 20, 24)],
    ids=["labels", "images", "probabilities", "specialist-probabilities"],
)
def test_apply_cutmix_takes_partner_inside_the_box(shape):
    generator = torch.Generator().manual_seed(5)
    boxes = cutmix_boxes(6, 20, 24, generator)
    if len(shape) == 3:
        x = torch.randint(0, 4, shape, generator=generator)
        partner = torch.randint(0, 4, shape, generator=generator) + 10
    else:
        x = torch.rand(shape, generator=generator)
        partner = torch.rand(shape, generator=generator) + 10
    mixed = apply_cutmix(x, partner, boxes)

    assert mixed.shape == x.shape and mixed.dtype == x.dtype
    expanded = boxes.reshape(6, *([1] * (len(shape) - 3)), 20, 24).expand(shape)
    assert torch.equal(mixed[expanded], partner[expanded])
    assert torch.equal(mixed[~expanded], x[~expanded])


def test_apply_cutmix_rejects_mismatched_shapes():
    boxes = torch.zeros(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError):
        apply_cutmix(torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 8, 8), boxes)
    with pytest.raises(ValueError):
        apply_cutmix(torch.zeros(2, 1, 8, 9), torch.zeros(2, 1, 8, 9), boxes)
