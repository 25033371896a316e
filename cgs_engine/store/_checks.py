"""Input validation for the slice store; every error says which volume or setting is wrong."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cgs_engine.errors import CGSError

MAX_CLASSES = 256  # labels are stored as uint8

# Background black, then well-separated hues; extended by a golden-angle walk when a data set
# has more classes than listed here.
BASE_COLORS = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
)


class SliceStoreError(CGSError, ValueError):
    """A slice store cannot be opened or written, or data does not fit into it.

    The message is one line and names the file or the volume concerned.
    """


def check_volume_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise SliceStoreError(f"volume name must be a non-empty string, got {name!r}")
    if "/" in name or name in (".", ".."):
        raise SliceStoreError(f"volume name {name!r} must not contain '/' or be '.' or '..'")
    return name


def check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str):
        raise SliceStoreError("class names must be a list of strings, not a single string")
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise SliceStoreError(f"need background plus at least one class, got {names}")
    if len(names) > MAX_CLASSES:
        raise SliceStoreError(f"at most {MAX_CLASSES} classes fit in uint8 labels, got {len(names)}")
    if any(not name.strip() for name in names):
        raise SliceStoreError(f"class names must not be empty: {names}")
    if len(set(names)) != len(names):
        raise SliceStoreError(f"class names must be unique: {names}")
    return names


def default_colors(count: int) -> list[list[int]]:
    colors = [list(color) for color in BASE_COLORS[:count]]
    for index in range(len(colors), count):
        hue = (index * 0.618033988749895) % 1.0
        colors.append(_hsv_to_rgb(hue, 0.75, 0.95))
    return colors


def check_colors(colors: Sequence[Sequence[int]] | None, count: int) -> list[list[int]]:
    if colors is None:
        return default_colors(count)
    checked = [[int(channel) for channel in color] for color in colors]
    if len(checked) != count:
        raise SliceStoreError(f"need one colour per class ({count}), got {len(checked)}")
    for color in checked:
        if len(color) != 3 or not all(0 <= channel <= 255 for channel in color):
            raise SliceStoreError(f"colours must be RGB triples in 0..255, got {color}")
    return checked


def check_image(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or 0 in image.shape:
        raise SliceStoreError(
            f"volume {name!r}: image must be a non-empty 3D array [z, y, x], got {image.shape}"
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise SliceStoreError(
            f"volume {name!r}: image must be normalised floats, got {image.dtype}; normalise it first"
        )
    image = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise SliceStoreError(f"volume {name!r}: image contains NaN or infinite values")
    return image


def check_label(name: str, label: np.ndarray, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    label = np.asarray(label)
    if label.shape != shape:
        raise SliceStoreError(f"volume {name!r}: label shape {label.shape} differs from image shape {shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        raise SliceStoreError(f"volume {name!r}: label must hold integer class ids, got {label.dtype}")
    low, high = int(label.min()), int(label.max())
    if low < 0 or high >= num_classes:
        present = np.unique(label)
        bad = present[(present < 0) | (present >= num_classes)]
        raise SliceStoreError(
            f"volume {name!r}: label values {_short_list(bad)} are outside 0..{num_classes - 1} "
            f"({num_classes} classes)"
        )
    return np.ascontiguousarray(label, dtype=np.uint8)


def check_review(name: str, review: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    review = np.asarray(review)
    if review.shape != shape:
        raise SliceStoreError(
            f"volume {name!r}: review mask shape {review.shape} differs from image shape {shape}"
        )
    if review.dtype != bool:
        if not np.issubdtype(review.dtype, np.integer):
            raise SliceStoreError(f"volume {name!r}: review mask must be boolean or 0/1, got {review.dtype}")
        if review.min() < 0 or review.max() > 1:
            raise SliceStoreError(f"volume {name!r}: review mask must hold only 0 and 1")
    return np.ascontiguousarray(review, dtype=np.uint8)


def _short_list(values: np.ndarray, limit: int = 6) -> str:
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> list[int]:
    sector = int(hue * 6.0) % 6
    fraction = hue * 6.0 - int(hue * 6.0)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
    return [round(channel * 255) for channel in rgb]
