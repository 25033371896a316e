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


def test_sampling_weights_draw_heavier_volumes_more_often(tmp_path):
    from synthetic import make_store

    from cgs_engine.store import SliceStore
    from cgs_engine.train.data import load_bank, weighted_pool

    path = make_store(tmp_path / "s.h5", labeled=0, unlabeled=0, val=0)
    rng_image = torch.rand(4, 16, 16).numpy()
    labels = torch.zeros(4, 16, 16, dtype=torch.uint8).numpy()
    with SliceStore.open(path, "a") as store:
        store.add_volume("light", rng_image, labels, split="labeled")
        store.add_volume("heavy", rng_image, labels, split="labeled", sampling_weight=3.0)
        assert store.volume_info("heavy").sampling_weight == 3.0
    with SliceStore.open(path) as store:
        bank = load_bank(store, "labeled", 16, with_labels=True)
    # volume_names are sorted: heavy's slices come first
    assert bank.slice_weights.tolist() == [3.0] * 4 + [1.0] * 4
    pool = weighted_pool(bank.slice_weights)
    assert torch.bincount(pool).tolist() == [3] * 4 + [1] * 4
    source = BatchSource(bank, None, batch_labeled=4, batch_unlabeled=0, seed=0)
    drawn = torch.cat([source.labeled_pool[shard_indices(len(pool), 4, s, 0, 1)] for s in range(4)])
    assert (drawn < 4).sum() == 12  # one epoch of the pool: 3 of 4 draws from the heavy volume


def test_uniform_weights_keep_the_reference_sampling(tmp_path):
    from synthetic import make_store

    from cgs_engine.store import SliceStore
    from cgs_engine.train.data import load_bank

    with SliceStore.open(make_store(tmp_path / "s.h5")) as store:
        bank = load_bank(store, "labeled", 32, with_labels=True)
    assert bank.slice_weights is None
    assert BatchSource(bank, None, 2, 0, seed=0).labeled_pool is None
