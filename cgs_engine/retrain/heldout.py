"""The held-out rule: which corrected volumes, or which block of slices, judge the new model."""

from __future__ import annotations

import hashlib

import numpy as np

from cgs_engine.review.state import EDITED

MIN_VOLUMES_FOR_VOLUME_HOLDOUT = 3


def choose_heldout_volumes(names: list[str], fraction: float, scans: list[str] | None = None) -> list[str]:
    """Whole held-out volumes (empty below 3 volumes): the lowest name hashes, stable over time.

    ``scans`` (one per name: the image's fingerprint, "" where unknown) keeps the corrections of one
    scan together: the same scan saved under a second name was trained on while the first was held
    out, and the gate judged the model on an image it had learnt."""
    if len(names) < MIN_VOLUMES_FOR_VOLUME_HOLDOUT:
        return []
    count = min(len(names) - 1, max(1, int(len(names) * fraction)))
    groups: dict[str, list[str]] = {}
    for name, scan in zip(names, scans or [""] * len(names), strict=True):
        groups.setdefault(scan or f"name:{name}", []).append(name)
    ranked = sorted(groups.values(), key=lambda group: min(_rank(name) for name in group))
    chosen: list[str] = []
    for group in ranked[:-1]:  # at least one scan stays for training
        if len(chosen) >= count:
            break
        chosen += group
    return sorted(chosen)


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def heldout_slices(reviewed: np.ndarray, fraction: float, weights: np.ndarray | None = None) -> np.ndarray:
    """A contiguous block of the reviewed slice indices to hold out (empty with fewer than 2).

    ``weights`` (one per reviewed slice: the voxels of organs the user drew or corrected) pick
    the block that holds the most of them, so the held-out part can judge a model; without
    weights, or where every block weighs 0, it is the top block.
    """
    if len(reviewed) < 2:
        return reviewed[:0]
    count = min(len(reviewed) - 1, max(1, round(len(reviewed) * fraction)))
    start = len(reviewed) - count
    if weights is not None and np.any(weights):
        sums = np.convolve(np.asarray(weights, dtype=np.float64), np.ones(count), mode="valid")
        start = int(len(sums) - 1 - np.argmax(sums[::-1]))  # the highest block wins ties
    return reviewed[start : start + count]


def judging_weights(labels: np.ndarray, review: np.ndarray, slices: np.ndarray) -> np.ndarray:
    return ((labels[slices] > 0) & (review[slices] == EDITED)).reshape(len(slices), -1).sum(axis=1)
