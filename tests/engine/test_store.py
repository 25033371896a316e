"""SliceStore: layout, round trip, indexing, in-memory loading and fingerprint."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest

from cgs_engine.normalize import Normalization
from cgs_engine.store import FORMAT_VERSION, SliceStore, SliceStoreError
from cgs_engine.volume import Geometry

CLASSES = ["background", "liver", "spleen"]
GEOMETRY = Geometry(spacing=(0.8, 0.7, 3.0), origin=(-10.0, 5.0, 100.0))


def image(shape=(4, 6, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def label(shape=(4, 6, 5), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, len(CLASSES), size=shape).astype(np.uint8)


def build(path, volumes=None):
    """A store with: a (labeled, with review), b (unlabeled, other shape), v (val)."""
    volumes = volumes or {
        "a": dict(image=image(), label=label(), review=label() > 0, geometry=GEOMETRY, split="labeled"),
        "b": dict(image=image((3, 8, 7), seed=1), split="unlabeled"),
        "v": dict(image=image(seed=2), label=label(seed=2), geometry=GEOMETRY, split="val"),
    }
    with SliceStore.create(path, CLASSES, Normalization(), colors=None) as store:
        for name, kwargs in volumes.items():
            store.add_volume(name, source=f"/data/{name}.nii.gz", **kwargs)
    return volumes


def test_round_trip(tmp_path):
    path = tmp_path / "store.h5"
    written = build(path)
    with SliceStore.open(path) as store:
        assert store.class_names == CLASSES
        assert len(store.class_colors) == 3 and store.class_colors[0] == [0, 0, 0]
        assert store.normalization == Normalization()
        assert store.format_version == FORMAT_VERSION
        assert store.created.endswith("+00:00")
        assert len(store) == 3 and "a" in store and "zz" not in store
        stored = store.read_volume("a")
        np.testing.assert_array_equal(stored.image, written["a"]["image"])
        np.testing.assert_array_equal(stored.label, written["a"]["label"])
        np.testing.assert_array_equal(stored.review, written["a"]["review"].astype(np.uint8))
        assert stored.geometry == GEOMETRY and stored.split == "labeled"
        unlabeled = store.read_volume("b")
        assert unlabeled.label is None and unlabeled.review is None
        assert unlabeled.image.shape == (3, 8, 7)
        info = store.volume_info("b")
        assert (info.spacing_known, info.has_label, info.original_dtype) == (False, False, "float32")
        assert info.source == "/data/b.nii.gz"
        assert store.volume_info("a").spacing_known is True


def test_slices_are_chunked_one_per_chunk(tmp_path):
    path = tmp_path / "store.h5"
    build(path)
    with h5py.File(path, "r") as file:
        volume = file["volumes/a"]
        assert volume["image"].dtype == np.float32 and volume["label"].dtype == np.uint8
        for dataset in ("image", "label", "review"):
            assert volume[dataset].chunks == (1, 6, 5)
        assert file["volumes/b/image"].chunks == (1, 8, 7)


def test_read_slice_and_slice_index(tmp_path):
    path = tmp_path / "store.h5"
    written = build(path)
    with SliceStore.open(path) as store:
        assert store.volume_names() == ["a", "b", "v"]
        assert store.volume_names("labeled") == ["a"]
        index = store.slice_index("labeled")
        assert index.dtype == np.int64
        np.testing.assert_array_equal(index, [[0, z] for z in range(4)])
        assert store.slice_index("unlabeled").shape == (3, 2)
        one = store.read_slice("a", 2)
        np.testing.assert_array_equal(one.image, written["a"]["image"][2])
        np.testing.assert_array_equal(one.label, written["a"]["label"][2])
        assert store.read_slice("b", 0).label is None
        with pytest.raises(IndexError):
            store.read_slice("a", 4)
        with pytest.raises(KeyError, match="nope"):
            store.read_volume("nope")
        with pytest.raises(SliceStoreError, match="split"):
            store.slice_index("training")


def test_load_split_to_memory_follows_volume_names(tmp_path):
    path = tmp_path / "store.h5"
    volumes = {
        f"vol{i}": dict(
            image=image((2, 4 + i, 3), seed=i), label=label((2, 4 + i, 3), seed=i), split="labeled"
        )
        for i in (2, 0, 1)
    }
    build(path, volumes)
    with SliceStore.open(path) as store:
        in_memory = store.load_split_to_memory("labeled")
        assert [v.image.shape[1] for v in in_memory] == [4, 5, 6]
        for name, stored in zip(store.volume_names("labeled"), in_memory, strict=True):
            np.testing.assert_array_equal(stored.label, volumes[name]["label"])
        assert store.load_split_to_memory("val") == []


def test_append_mode_adds_volumes(tmp_path):
    path = tmp_path / "store.h5"
    build(path)
    with SliceStore.open(path, mode="a") as store:
        store.add_volume("c", image(seed=5), split="unlabeled")
    with SliceStore.open(path) as store:
        assert store.volume_names("unlabeled") == ["b", "c"]
        with pytest.raises(SliceStoreError, match="read-only"):
            store.add_volume("d", image(), split="unlabeled")


def test_read_only_store_pickles_for_dataloader_workers(tmp_path):
    path = tmp_path / "store.h5"
    build(path)
    with SliceStore.open(path) as store:
        clone = pickle.loads(pickle.dumps(store))
        try:
            np.testing.assert_array_equal(clone.read_slice("a", 1).image, store.read_slice("a", 1).image)
        finally:
            clone.close()
    with SliceStore.open(path, mode="a") as store, pytest.raises(TypeError):
        pickle.dumps(store)


def test_fingerprint_is_stable_across_reopen(tmp_path):
    path = tmp_path / "store.h5"
    build(path)
    with SliceStore.open(path) as store:
        first = store.fingerprint()
    with SliceStore.open(path) as store:
        assert store.fingerprint() == first
    assert first.startswith("v2:") and len(first) == 3 + 64
    copy = tmp_path / "copy.h5"
    build(copy)  # same content written again at another time
    with SliceStore.open(copy) as store:
        assert store.fingerprint() == first


@pytest.mark.parametrize("change", ["label_voxel", "image_slice", "split", "added_volume"])
def test_fingerprint_changes_with_content(tmp_path, change):
    reference = tmp_path / "reference.h5"
    build(reference)
    volumes = {
        "a": dict(image=image(), label=label(), review=label() > 0, geometry=GEOMETRY, split="labeled"),
        "b": dict(image=image((3, 8, 7), seed=1), split="unlabeled"),
        "v": dict(image=image(seed=2), label=label(seed=2), geometry=GEOMETRY, split="val"),
    }
    if change == "label_voxel":
        volumes["a"]["label"][1, 2, 3] = (volumes["a"]["label"][1, 2, 3] + 1) % len(CLASSES)
    elif change == "image_slice":
        volumes["b"]["image"][1, 0, 0] += 0.5
    elif change == "split":
        volumes["v"]["split"] = "labeled"
    else:
        volumes["c"] = dict(image=image(seed=9), split="unlabeled")
    changed = tmp_path / "changed.h5"
    build(changed, volumes)
    with SliceStore.open(reference) as one, SliceStore.open(changed) as other:
        assert one.fingerprint() != other.fingerprint()


def test_an_image_edited_between_the_sampled_slices_changes_the_fingerprint(tmp_path):
    """Fingerprints sampled 4 image slices per volume: a scan edited on others (defaced, +300 HU on
    slices 50-70) kept its fingerprint, and `cgs train --resume` trained on the changed data. A
    fingerprint recorded that way still matches the unchanged store (runs started before)."""
    from cgs_engine.store.fingerprint import same_fingerprint

    def volumes(edited: bool):
        scan = image((12, 8, 7), seed=4)
        if edited:
            scan[5] += 0.25  # not among the slices 0, 4, 7, 11 the old scheme read
        return {
            "a": dict(image=image(), label=label(), split="labeled"),
            "u": dict(image=scan, split="unlabeled"),
        }

    build(tmp_path / "before.h5", volumes(False))
    build(tmp_path / "after.h5", volumes(True))
    with SliceStore.open(tmp_path / "before.h5") as before, SliceStore.open(tmp_path / "after.h5") as after:
        assert before.fingerprint() != after.fingerprint()
        legacy = before.fingerprint(sampled=True)
        assert legacy == after.fingerprint(sampled=True) and not legacy.startswith("v2:")
        assert same_fingerprint(before, legacy) and same_fingerprint(before, before.fingerprint())
        assert not same_fingerprint(after, before.fingerprint())


def test_fingerprint_updates_after_append(tmp_path):
    path = tmp_path / "store.h5"
    build(path)
    with SliceStore.open(path, mode="a") as store:
        before = store.fingerprint()
        store.add_volume("c", image(seed=5), split="unlabeled")
        assert store.fingerprint() != before


# A sagittal volume stored with x reversed: array axes (z, y, x) run along world (x, z, y).
TURNED = Geometry(spacing=(0.8, 0.7, 3.0), origin=(-10.0, 5.0, 100.0), direction=(0, 0, -1, 1, 0, 0, 0, 1, 0))


def test_volumes_are_stored_in_the_canonical_layout_the_network_reads(tmp_path):
    """add_volume turns a volume given in another layout; image, label, review and geometry alike."""
    from cgs_engine.orientation import canonical_volume
    from cgs_engine.volume import Volume

    path = tmp_path / "store.h5"
    given = dict(image=image(), label=label(), review=label(seed=3) > 0, geometry=TURNED, split="labeled")
    build(path, {"s": given})
    expected, turn = canonical_volume(Volume(given["image"], TURNED))
    assert not turn.is_identity
    with SliceStore.open(path) as store:
        stored = store.read_volume("s")
        np.testing.assert_array_equal(stored.image, expected.array)
        np.testing.assert_array_equal(stored.label, turn.to_canonical(given["label"]))
        np.testing.assert_array_equal(stored.review, turn.to_canonical(given["review"].astype(np.uint8)))
        assert stored.geometry.is_close(expected.geometry)
        assert store.volume_info("s").shape == expected.array.shape
        assert store.volume_info("s").stored_turn is None
    with h5py.File(path) as raw:  # on disk too: the canonical arrays, not the given ones
        np.testing.assert_array_equal(raw["volumes/s/image"][()], expected.array)


def test_a_volume_an_older_store_kept_in_its_files_layout_is_read_canonical(tmp_path):
    """Stores written before the rule hold such volumes (SegTHOR imports): training must not
    learn them in a layout predictions never use."""
    from cgs_engine.orientation import canonical_volume
    from cgs_engine.store.layout import write_volume_attributes
    from cgs_engine.volume import Volume

    path = tmp_path / "store.h5"
    build(path)
    given_image, given_label = image(), label()
    with h5py.File(path, "a") as raw:  # what the old add_volume wrote: the arrays as given
        group = raw["volumes"].create_group("old")
        group.create_dataset("image", data=given_image)
        group.create_dataset("label", data=given_label)
        write_volume_attributes(group, "labeled", TURNED, True, "float32", "/data/old.nii.gz", 1.0)
    expected, turn = canonical_volume(Volume(given_image, TURNED))
    with SliceStore.open(path) as store:
        info = store.volume_info("old")
        assert info.shape == expected.array.shape and info.geometry.is_close(expected.geometry)
        stored = store.read_volume("old")
        np.testing.assert_array_equal(stored.image, expected.array)
        np.testing.assert_array_equal(stored.label, turn.to_canonical(given_label))
        one = store.read_slice("old", 2)
        np.testing.assert_array_equal(one.image, expected.array[2])
        np.testing.assert_array_equal(one.label, turn.to_canonical(given_label)[2])
        with pytest.raises(IndexError):
            store.read_slice("old", expected.array.shape[0])
        assert len(store.slice_index("labeled")) == 4 + expected.array.shape[0]
