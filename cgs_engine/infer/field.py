"""The field of view the network reads: a slice smaller than any it was trained on is padded first.

Every slice is resized to the square input size, so what decides how large an organ looks to the
network is the slice's extent in mm, not its voxel spacing. The bundled model was trained on
OpenKBP slices 480-694 mm across; a neck CT reconstructed at a 250 mm field of view reached it
stretched twice as large and came back almost empty (5.5 mL of organs where the same anatomy at
600 mm gave 150.8 mL, Dice 0.00-0.10 per organ, measured by an audit on pt_222; a 300 x 225 mm
crop alike). A slice whose larger side is below the smallest field in the model's training scope
(``TrainingScope.field_mm``) is padded, centred, to that field in both directions (with the
slice's lowest value: air in a CT) and the outputs are cropped back, so the anatomy has the size
the network learned; a slice that is not square in mm is padded to a square along its short side.
Square slices at least that large are read as before, so square training data are never padded
by the scope measured on them (others are padded in training as in prediction). A model without a
recorded field (older checkpoints, data sets without spacing) reads every slice as before.

The same padding serves prediction, *Adapt to this scan* (its training and re-prediction),
validation, the retrain's gate and the training bank (slices cut out of a correction keep their
pixel spacing for it, ``in_plane_mm``), so a model fine-tuned on a clinic's small-field scans
learns them as it will read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cgs_engine.errors import CGSError

# A padded slice larger than this along a side is refused: a pixel spacing in another unit than mm
# (0.0098 "mm" pixels) asked for 49,130 x 49,130 pixels, about 72 GB of probabilities per slice.
MAX_PADDED_PIXELS = 4096


@dataclass(frozen=True)
class FieldPadding:
    """Pixels added above, below, left and right of a [.., H, W] slice."""

    top: int
    bottom: int
    left: int
    right: int

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return height + self.top + self.bottom, width + self.left + self.right

    def pad_images(self, images: torch.Tensor) -> torch.Tensor:
        """[b, H, W] or [b, 1, H, W] float, each slice padded with its own lowest value."""
        flat = images.reshape(images.shape[0], -1)
        lowest = flat.amin(dim=1) if flat.shape[1] else torch.zeros(images.shape[0], dtype=images.dtype)
        padded = F.pad(images, (self.left, self.right, self.top, self.bottom), value=0.0)
        shape = (-1,) + (1,) * (images.dim() - 1)
        inside = torch.zeros(padded.shape[-2:], dtype=torch.bool)
        inside[self.top : self.top + images.shape[-2], self.left : self.left + images.shape[-1]] = True
        return torch.where(inside, padded, lowest.view(shape).to(padded.dtype))

    def pad_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """[b, H, W] integer labels, padded with background (0)."""
        return F.pad(labels, (self.left, self.right, self.top, self.bottom), value=0)

    def crop(self, tensor: torch.Tensor) -> torch.Tensor:
        """The original slice's pixels of a [.., Hp, Wp] tensor on the padded grid."""
        height, width = tensor.shape[-2:]
        return tensor[..., self.top : height - self.bottom, self.left : width - self.right]


def trained_field_mm(scope: Mapping[str, Any] | None) -> float | None:
    """The smallest slice extent (mm, larger side) in a training scope, or None if not recorded."""
    field = (scope or {}).get("field_mm") if isinstance(scope, Mapping) else None
    try:
        value = float(field["min"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def field_padding(
    shape_hw: Sequence[int], spacing_yx: Sequence[float], trained_mm: float | None
) -> FieldPadding | None:
    """How to pad slices of ``shape_hw`` pixels (row, column spacing in mm) to a square field at
    least as large as the trained one, or None where they are already that or nothing is known.

    Square, because every slice is resized to the square input: a 300 x 600 mm crop of a neck
    reached the network stretched 2x along its short side and came back with a third of its
    organs (mean Dice 0.42 against the whole slice's prediction, where a 300 x 300 mm crop,
    padded, gave 0.75; measured by a review on pt_222). Padded to 600 x 600 mm it keeps its shape.
    """
    if trained_mm is None:
        return None
    height, width = int(shape_hw[0]), int(shape_hw[1])
    row_mm, column_mm = float(spacing_yx[0]), float(spacing_yx[1])
    if not (row_mm > 0 and column_mm > 0 and math.isfinite(row_mm) and math.isfinite(column_mm)):
        return None
    field = max(height * row_mm, width * column_mm, trained_mm)
    rows = max(height, math.ceil(field / row_mm - 1e-6))
    columns = max(width, math.ceil(field / column_mm - 1e-6))
    if (rows, columns) == (height, width):
        return None
    if max(rows, columns) > MAX_PADDED_PIXELS:
        raise CGSError(
            f"slices of {height} x {width} pixels at {row_mm:g} x {column_mm:g} mm are "
            f"{height * row_mm:.3g} x {width * column_mm:.3g} mm across, the model learnt fields of "
            f"at least {trained_mm:.0f} mm: padding them would take {max(rows, columns)} pixels a "
            "side; check the pixel spacing in the file (a unit other than mm?)"
        )
    top, left = (rows - height) // 2, (columns - width) // 2
    return FieldPadding(top, rows - height - top, left, columns - width - left)


def padding_for_volume(shape_zyx: Sequence[int], spacing_xyz: Sequence[float], scope) -> FieldPadding | None:
    """:func:`field_padding` of the axial slices of a canonical [z, y, x] volume."""
    return field_padding(shape_zyx[1:], (spacing_xyz[1], spacing_xyz[0]), trained_field_mm(scope))
