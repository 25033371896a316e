"""Input validation for the slice store; every error says which volume or setting is wrong."""

from __future__ import annotations

import numpy as np

from cgs_engine.errors import CGSError


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
