"""Batch sampling: sharded epochs, determinism per step, foreground oversampling."""

from __future__ import annotations

import torch

from cgs_engine.train.data import BatchSource, SliceBank, shard_indices


def test_shards_are_disjoint_and_cover_an_epoch():
    size, world, count = 20, 2, 5
    per_rank = [
        torch.cat([shard_indices(size, count, step, 0, 1, rank, world) for step in range(2)])
        for rank in range(world)
    ]
    assert set(per_rank[0].tolist()).isdisjoint(per_rank[1].tolist())
    assert sorted(torch.cat(per_rank).tolist()) == list(range(size))


def test_indices_depend_only_on_seed_and_step():
    assert torch.equal(shard_indices(50, 7, 13, 3, 1), shard_indices(50, 7, 13, 3, 1))
    assert not torch.equal(shard_indices(50, 7, 13, 3, 1), shard_indices(50, 7, 14, 3, 1))


def _bank(size: int = 32) -> SliceBank:
    labels = torch.zeros((10, size, size), dtype=torch.uint8)
    labels[7, 3:6, 3:6] = 2
    labels[9, 14:18, 14:18] = 1
    return SliceBank(torch.rand(10, 1, size, size).half(), labels, ["v"])


def test_foreground_oversampling():
    source = BatchSource(_bank(), None, batch_labeled=6, batch_unlabeled=0, seed=0, foreground_fraction=1.0)
    assert sorted(source.foreground_slices.tolist()) == [7, 9]
    for step in range(5):
        assert (source.batch(step).labels.flatten(1) > 0).any(dim=1).all()
    plain = BatchSource(_bank(), None, batch_labeled=6, batch_unlabeled=0, seed=0)
    assert torch.equal(plain.batch(3).labeled_images, plain.batch(3).labeled_images)
