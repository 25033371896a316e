"""Training slices in memory at the input size, and reproducible per-step batches.

Every slice of the labeled and unlabeled splits is resized once to the square input size and
kept as float16 (half the memory of float32; the batch is cast back to float32). A batch is a
pure function of (seed, step): resume after an interruption draws exactly the batch the lost
run would have drawn, and a background thread can prepare batches ahead without changing them.

Volumes stored with a ``sampling_weight`` other than 1 have their labeled slices drawn that
many times as often (each epoch's permutation lists them that many times), e.g. a clinician's
corrections beside the larger prior data a model was first trained on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cgs_engine.errors import CGSError
from cgs_engine.infer.field import FieldPadding, field_padding, trained_field_mm
from cgs_engine.infer.slices import resize_images, resize_labels
from cgs_engine.method import IGNORE_INDEX
from cgs_engine.store import SliceStore
from cgs_engine.train.augment import strong_augment, weak_augment
from cgs_engine.train.cutmix import apply_cutmix, cutmix_boxes

_RESIZE_CHUNK = 64
MAX_POOL_FACTOR = 64  # a weighted epoch lists at most this many times the slices there are


@dataclass
class SliceBank:
    images: torch.Tensor  # [N, 1, S, S] float16
    labels: torch.Tensor | None  # [N, S, S] uint8, IGNORE_INDEX where the label is not trusted
    volume_names: list[str]
    slice_weights: torch.Tensor | None = None  # [N] float32; None = every slice weighs 1

    def __len__(self) -> int:
        return int(self.images.shape[0])


def volume_padding(store: SliceStore, name: str, scope: dict | None) -> FieldPadding | None:
    """How a stored volume's slices are widened to the model's trained field of view (as
    prediction reads them); None where its spacing is unknown or its slices are large enough."""
    info = store.volume_info(name)
    if info.in_plane_mm is None:
        return None
    try:
        return field_padding(info.shape[1:], info.in_plane_mm, trained_field_mm(scope))
    except CGSError as error:
        raise CGSError(f"{store.path}: volume {name!r}: {error}") from None


def load_bank(
    store: SliceStore, split: str, size: int, with_labels: bool, scope: dict | None = None
) -> SliceBank:
    images, labels, weights = [], [], []
    names = store.volume_names(split)
    for name in names:
        stored = store.read_volume(name)
        weights.append(torch.full((stored.image.shape[0],), store.volume_info(name).sampling_weight))
        padding = volume_padding(store, name, scope)
        for start in range(0, stored.image.shape[0], _RESIZE_CHUNK):
            chunk = torch.from_numpy(np.ascontiguousarray(stored.image[start : start + _RESIZE_CHUNK]))
            if padding is not None:
                chunk = padding.pad_images(chunk.float())
            images.append(resize_images(chunk, size).half())
            if not with_labels:
                continue
            label = np.array(stored.label[start : start + _RESIZE_CHUNK], dtype=np.uint8)
            if stored.review is not None:
                label[np.asarray(stored.review[start : start + _RESIZE_CHUNK]) == 0] = IGNORE_INDEX
            label_chunk = torch.from_numpy(label)
            if padding is not None:
                label_chunk = padding.pad_labels(label_chunk)
            labels.append(resize_labels(label_chunk, size))
    if not images:
        return SliceBank(
            torch.zeros((0, 1, size, size), dtype=torch.float16),
            torch.zeros((0, size, size), dtype=torch.uint8) if with_labels else None,
            names,
        )
    slice_weights = torch.cat(weights).float()
    uniform = bool((slice_weights == 1).all())
    return SliceBank(
        torch.cat(images),
        torch.cat(labels) if with_labels else None,
        names,
        None if uniform else slice_weights,
    )


def weighted_pool(slice_weights: torch.Tensor | None) -> torch.Tensor | None:
    """Slice indices repeated in proportion to their weights (the lightest once); None if uniform."""
    if slice_weights is None:
        return None
    counts = torch.round(slice_weights / slice_weights.min()).long().clamp(min=1)
    limit = MAX_POOL_FACTOR * len(slice_weights)
    if int(counts.sum()) > limit:  # extreme weight ratios: scale down, keeping every slice once
        counts = torch.round(counts.float() * limit / float(counts.sum())).long().clamp(min=1)
    return torch.repeat_interleave(torch.arange(len(slice_weights)), counts)


@dataclass
class Batch:
    labeled_images: torch.Tensor  # [B_L, 1, S, S] weak view
    labels: torch.Tensor  # [B_L, S, S] long
    unlabeled_weak: torch.Tensor | None = None  # [B_U, 1, S, S]
    partner_weak: torch.Tensor | None = None  # [B_U, 1, S, S] CutMix partners (also unlabeled)
    boxes: torch.Tensor | None = None  # [B_U, S, S] bool
    strong: torch.Tensor | None = None  # [B_U, 1, S, S] strong view of the mixed images


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    # Distinct, well-mixed streams per (seed, step, stream): large odd multipliers avoid overlaps.
    return torch.Generator().manual_seed(
        (seed * 1_000_003 + step * 7_919 + stream * 104_729 + 12_345) % (2**63 - 1)
    )


def shard_indices(size: int, count: int, step: int, seed: int, stream: int, rank: int = 0, world: int = 1):
    """``count`` item indices for ``rank`` at ``step``.

    Every epoch is a fresh permutation of all ``size`` items cut into ``world`` disjoint shards;
    each rank walks through its own shard, ``count`` items per step (the ``size % world``
    leftover items sit that epoch out). With fewer items than ranks, ranks share items.
    """
    shard = max(1, size // world)
    positions = step * count + torch.arange(count)
    epochs, offsets = positions // shard, positions % shard
    picked = torch.empty(count, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        order = torch.randperm(size, generator=step_generator(seed, epoch, stream))
        here = epochs == epoch
        picked[here] = order[(rank * shard + offsets[here]) % size]
    return picked


class BatchSource:
    """Draws the batch of a given step; ``iterate`` prefetches in a background thread."""

    def __init__(
        self,
        labeled: SliceBank,
        unlabeled: SliceBank | None,
        batch_labeled: int,
        batch_unlabeled: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        foreground_fraction: float = 0.0,
        mirror: bool = True,
        mirror_table: list[int] | None = None,
    ) -> None:
        if len(labeled) == 0:
            raise ValueError("no labeled slices to train on")
        self.labeled, self.unlabeled = labeled, unlabeled
        self.batch_labeled, self.batch_unlabeled = batch_labeled, batch_unlabeled
        self.seed, self.rank, self.world = seed, rank, world
        self.foreground_fraction = foreground_fraction
        # Mirrored labeled samples swap left/right pairs (cgs_engine.classes.laterality); the ignore
        # value and every other id map to themselves.
        self.mirror = mirror
        self.label_table = None
        if mirror_table is not None:
            table = torch.arange(256, dtype=torch.long)
            table[: len(mirror_table)] = torch.tensor(mirror_table, dtype=torch.long)
            self.label_table = table
        self.labeled_pool = weighted_pool(labeled.slice_weights)
        has_foreground = ((labeled.labels > 0) & (labeled.labels != IGNORE_INDEX)).flatten(1).any(dim=1)
        self.foreground_slices = torch.nonzero(has_foreground).flatten()
        if self.labeled_pool is not None:  # foreground picks follow the weights too
            self.foreground_slices = self.labeled_pool[has_foreground[self.labeled_pool]]
        self.uses_unlabeled = unlabeled is not None and batch_unlabeled > 0
        if self.uses_unlabeled and len(unlabeled) == 0:
            raise ValueError("the method needs unlabeled slices but the store has none")

    def batch(self, step: int) -> Batch:
        generator = step_generator(self.seed, step, stream=3 + self.rank)
        pool = self.labeled_pool
        size = len(self.labeled) if pool is None else len(pool)
        pick = shard_indices(size, self.batch_labeled, step, self.seed, 1, self.rank, self.world)
        if pool is not None:
            pick = pool[pick]
        pick = self._oversample_foreground(pick, generator)
        images, labels = weak_augment(
            self.labeled.images[pick].float(),
            self.labeled.labels[pick].long(),
            generator,
            mirror=self.mirror,
            label_table=self.label_table,
        )
        batch = Batch(images, labels)
        if not self.uses_unlabeled:
            return batch
        count = self.batch_unlabeled
        pick = shard_indices(len(self.unlabeled), 2 * count, step, self.seed, 2, self.rank, self.world)
        weak, _ = weak_augment(self.unlabeled.images[pick].float(), None, generator, mirror=self.mirror)
        size = weak.shape[-1]
        boxes = cutmix_boxes(count, size, size, generator)
        batch.unlabeled_weak, batch.partner_weak, batch.boxes = weak[:count], weak[count:], boxes
        batch.strong = apply_cutmix(
            strong_augment(weak[:count], generator), strong_augment(weak[count:], generator), boxes
        )
        return batch

    def _oversample_foreground(self, pick: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Replace about ``foreground_fraction`` of the labeled picks by slices that contain an organ.

        Small organs appear on few slices of a CT; uniform slice sampling (the reference) then shows
        the network little foreground. nnU-Net-style oversampling counters that; 0 keeps the reference.
        """
        if self.foreground_fraction <= 0 or len(self.foreground_slices) == 0:
            return pick
        swap = torch.rand(len(pick), generator=generator) < self.foreground_fraction
        chosen = torch.randint(len(self.foreground_slices), (len(pick),), generator=generator)
        return torch.where(swap, self.foreground_slices[chosen], pick)

    def iterate(self, start: int, stop: int, prefetch: int = 2) -> Iterator[tuple[int, Batch]]:
        """Batches of steps start..stop-1, prepared ``prefetch`` steps ahead in a thread."""
        slots: queue.Queue = queue.Queue(maxsize=prefetch)
        halt = threading.Event()

        def produce() -> None:
            try:
                for step in range(start, stop):
                    if halt.is_set():
                        return
                    slots.put((step, self.batch(step)))
                slots.put(None)
            except BaseException as error:  # handed to the consumer, raised there
                slots.put(error)

        worker = threading.Thread(target=produce, name="cgs-batches", daemon=True)
        worker.start()
        try:
            while True:
                item = slots.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            halt.set()
            while worker.is_alive():
                try:
                    slots.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)
