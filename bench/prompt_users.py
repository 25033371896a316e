"""Simulated users of the prompts (click, box) and of "Adapt to this scan", for annotation_effort.py.

Click protocol of the interactive-segmentation literature: each click lands at the centre of the
largest remaining error region of the organ (its voxel farthest from the region's border, the one
nearest the region's centroid among ties), positive in a missed region, negative in a false one;
every voxel an earlier prompt changed is the user's and locked. NoC@85 / NoC@90: clicks until the
organ's Dice reaches 0.85 / 0.90 (20 when it never does within 20 clicks).

The prompts user draws the organ's box (the reference's extent, as a user who sees the organ
would) and keeps it if Dice rises, clicks while each click raises Dice (at most 20), then
brushes the worst slices as the brush-alone user. Edited slices: the brushed ones plus one per
prompt (a prompt is made on a slice), so prompts are not free. The prompts + adapt user first
redraws every 8th slice of each organ (counted as edited), adapts the model, then goes on as the
prompts user.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage

FULL = np.ones((3, 3, 3), dtype=bool)
MAX_CLICKS = 20


def dice(labels: np.ndarray, reference: np.ndarray, organ: int) -> float:
    a, b = labels == organ, reference == organ
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def organ_box(labels, reference, organ, margin=2):
    found = ndimage.find_objects(((labels == organ) | (reference == organ)).astype(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(found[0], labels.shape, strict=True)
    )


def next_click(labels, reference, organ, spacing):
    """(voxel, positive) at the centre of the largest error region, or None when there is none."""
    box = organ_box(labels, reference, organ)
    if box is None:
        return None
    mine, truth = labels[box] == organ, reference[box] == organ
    best = None
    for positive, error in ((True, truth & ~mine & (labels[box] == 0)), (False, mine & ~truth)):
        pieces, count = ndimage.label(error, FULL)
        if count == 0:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        if best is None or sizes.max() > best[0]:
            best = (int(sizes.max()), positive, pieces == 1 + int(sizes.argmax()))
    if best is None:
        return None
    _, positive, region = best
    depth = ndimage.distance_transform_edt(np.pad(region, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    points = np.argwhere(region)
    centre = points.mean(axis=0)
    off_centre = np.sqrt((((points - centre) * np.asarray(spacing)) ** 2).sum(axis=1))
    best_point = points[np.lexsort((off_centre, -np.round(depth[tuple(points.T)], 3)))[0]]
    return tuple(int(i + s.start) for i, s in zip(best_point, box, strict=True)), positive


def click_sequence(labels, reference, organ, probability, image, spacing, locked, stop_when_worse=False):
    """Clicks on ``labels`` in place; returns the Dice after 0..n clicks and seconds per click."""
    from cgs_engine.edit import click

    dices, seconds = [dice(labels, reference, organ)], []
    for _ in range(MAX_CLICKS):
        if dices[-1] >= 0.999:
            break
        where = next_click(labels, reference, organ, spacing)
        if where is None:
            break
        started = time.perf_counter()
        result = click(labels, organ, where[0], where[1], probability, spacing, image=image, locked=locked)
        seconds.append(time.perf_counter() - started)
        after = dice(result.labels, reference, organ)
        if stop_when_worse and after <= dices[-1]:
            break  # the user undoes it and turns to the brush
        labels[...] = result.labels
        locked |= result.changed
        dices.append(after)
    return dices, seconds


def noc(dices, target):
    return next((clicks for clicks, value in enumerate(dices) if value >= target), MAX_CLICKS)


def prompts_user(labels, reference, organ, probability, image, spacing, target, brush_until):
    """Box, clicks while they help, then the brush; labels edited in place."""
    from cgs_engine.edit import box_prompt

    locked = np.zeros(labels.shape, bool)
    prompts, seconds = 0, []
    extent = ndimage.find_objects((reference == organ).astype(np.uint8))
    if extent and extent[0] is not None and dice(labels, reference, organ) < target:
        started = time.perf_counter()
        boxed = box_prompt(labels, organ, extent[0], probability)
        seconds.append(time.perf_counter() - started)
        prompts += 1
        if dice(boxed.labels, reference, organ) > dice(labels, reference, organ):
            labels[...] = boxed.labels
            locked |= boxed.changed
    clicks = []
    if dice(labels, reference, organ) < target:
        clicks, click_seconds = click_sequence(
            labels, reference, organ, probability, image, spacing, locked, stop_when_worse=True
        )
        prompts += len(click_seconds)
        seconds += click_seconds
    brushed = brush_until(labels, reference, organ, target)
    return {
        "prompts": prompts,
        "brushed_slices": brushed.slices,
        "slices": brushed.slices + prompts,
        "voxels": brushed.voxels,
        "seconds": seconds,
        "dice": dice(labels, reference, organ),
    }


def correct_key_slices(labels, reference, every):
    """Redraw every ``every``-th slice of each organ from the reference; (slices per organ, reviewed)."""
    reviewed = np.zeros(labels.shape, bool)
    keys = {}
    for organ in range(1, int(reference.max()) + 1):
        slices = np.flatnonzero((reference == organ).reshape(len(reference), -1).any(axis=1))[::every]
        keys[organ] = slices
        for z in slices:
            before = labels[z].copy()
            labels[z][(labels[z] == organ) & (reference[z] != organ)] = 0
            labels[z][(reference[z] == organ) & (labels[z] == 0)] = organ
            reviewed[z] |= (labels[z] != before) | (reference[z] == organ)
    return keys, reviewed


def adapt_experiment(checkpoint, image, start, reference, spacing, every, seconds, names):
    """Every ``every``-th slice corrected, then adapted: Dice on the slices NOT corrected, per organ,
    for the unadapted model, the adapted one and contour interpolation between the corrected slices."""
    from cgs_engine.edit import fill_between_slices
    from cgs_engine.edit.adapt import adapt_to_scan, trusted_voxels

    labels = start.copy()
    keys, reviewed = correct_key_slices(labels, reference, every)
    trusted = trusted_voxels(labels, reviewed, spacing)
    started = time.perf_counter()
    result = adapt_to_scan(checkpoint, image, labels, trusted, keep=reviewed, seconds=seconds)
    wall = time.perf_counter() - started
    organs = {}
    for organ, slices in keys.items():
        other = np.ones(len(reference), bool)
        other[slices] = False
        drawn = np.zeros(reference.shape, np.uint8)
        drawn[slices] = np.where(reference[slices] == organ, organ, 0)
        interpolated = fill_between_slices(drawn, organ).labels if drawn.any() else drawn
        versions = (("unadapted", start), ("adapted", result.labels), ("interpolated", interpolated))
        organs[names[organ]] = {
            name: round(dice(volume[other], reference[other], organ), 4) for name, volume in versions
        }
        # voxels of the organ on those slices: an adaptation that grows (or shrinks) organs shows here
        organs[names[organ]]["voxels"] = {
            name: int((volume[other] == organ).sum())
            for name, volume in (*versions[:2], ("reference", reference))
        }
    summary = {
        "steps": result.steps,
        "seconds": round(wall, 1),
        "trained_slices": result.trained_slices,
        "key_slices": int(sum(len(s) for s in keys.values())),
        "organs": organs,
    }
    return summary, result.labels
