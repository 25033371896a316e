"""SliceStore refuses bad data and bad files with one-line errors, and never damages a store."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cgs_engine.errors import CGSError
from cgs_engine.normalize import Normalization
from cgs_engine.store import SliceStore, SliceStoreError

CLASSES = ["background", "organ"]


def small_image(shape=(2, 4, 4)) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def make_store(path, names=("a",)):
    with SliceStore.create(path, CLASSES, Normalization(mode="identity")) as store:
        for name in names:
            store.add_volume(name, small_image(), split="unlabeled")


def assert_one_line_naming(error: pytest.ExceptionInfo, text: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    assert text in message
    assert isinstance(error.value, CGSError)


def leftovers(folder) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.endswith(".partial"))


def test_create_refuses_an_existing_file(tmp_path):
    path = tmp_path / "store.h5"
    path.write_bytes(b"precious")
    with pytest.raises(SliceStoreError) as error:
        SliceStore.create(path, CLASSES, Normalization())
    assert_one_line_naming(error, str(path))
    assert path.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_only_when_the_new_store_is_complete(tmp_path):
    path = tmp_path / "store.h5"
    make_store(path, names=("old",))
    with (
        pytest.raises(RuntimeError),
        SliceStore.create(path, CLASSES, Normalization(), overwrite=True) as store,
    ):
        store.add_volume("new", small_image(), split="unlabeled")
        raise RuntimeError("import failed half-way")
    with SliceStore.open(path) as store:
        assert store.volume_names() == ["old"]
    assert leftovers(tmp_path) == []
    make_store_with_overwrite = SliceStore.create(path, CLASSES, Normalization(), overwrite=True)
    make_store_with_overwrite.add_volume("new", small_image(), split="unlabeled")
    with SliceStore.open(path) as store:  # still the old one until close()
        assert store.volume_names() == ["old"]
    make_store_with_overwrite.close()
    with SliceStore.open(path) as store:
        assert store.volume_names() == ["new"]


def test_file_that_appears_during_create_is_not_clobbered(tmp_path):
    path = tmp_path / "store.h5"
    store = SliceStore.create(path, CLASSES, Normalization())
    path.write_bytes(b"someone else's")
    with pytest.raises(SliceStoreError, match="appeared"):
        store.close()
    assert path.read_bytes() == b"someone else's"


def test_missing_file(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(SliceStoreError) as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


def test_random_bytes_are_not_a_store(tmp_path):
    path = tmp_path / "corrupt.h5"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SliceStoreError) as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


def test_truncated_store_gives_one_line_error(tmp_path):
    path = tmp_path / "store.h5"
    make_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(SliceStoreError) as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


def test_other_hdf5_file_is_not_a_store(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file["image"] = np.zeros(3)
    with pytest.raises(SliceStoreError, match="not a napari-cgs slice store") as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


def test_unsupported_format_version(tmp_path):
    path = tmp_path / "store.h5"
    make_store(path)
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = 99
    with pytest.raises(SliceStoreError, match="version 99") as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


def test_damaged_metadata(tmp_path):
    path = tmp_path / "store.h5"
    make_store(path)
    with h5py.File(path, "r+") as file:
        file.attrs["class_names"] = "not json ["
    with pytest.raises(SliceStoreError, match="damaged") as error:
        SliceStore.open(path)
    assert_one_line_naming(error, str(path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": np.full((2, 4, 4), 2, np.uint8), "split": "labeled"}, r"values \[2\] are outside 0..1"),
        ({"label": np.full((2, 4, 4), -1, np.int16), "split": "labeled"}, "outside"),
        ({"label": np.zeros((2, 4, 5), np.uint8), "split": "labeled"}, "label shape"),
        ({"label": np.zeros((2, 4, 4), np.float32), "split": "labeled"}, "integer"),
        ({"label": np.zeros((2, 4, 4), np.uint8), "split": "unlabeled"}, "must not carry a label"),
        ({"split": "val"}, "need a label"),
        ({"split": "train"}, "unknown split"),
        (
            {"label": np.zeros((2, 4, 4), np.uint8), "review": np.full((2, 4, 4), 2), "split": "labeled"},
            "0 and 1",
        ),
        ({"review": np.ones((2, 4, 4), bool), "split": "unlabeled"}, "needs a label"),
    ],
)
def test_add_volume_validation_names_the_volume(tmp_path, kwargs, message):
    with SliceStore.create(tmp_path / "store.h5", CLASSES, Normalization()) as store:
        with pytest.raises(SliceStoreError, match=message) as error:
            store.add_volume("patient_7", small_image(), **kwargs)
        assert_one_line_naming(error, "patient_7")
        assert "patient_7" not in store


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4), np.float32), "3D"),
        (np.zeros((2, 4, 4), np.int16), "normalised floats"),
        (np.full((2, 4, 4), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_images_are_rejected(tmp_path, image, message):
    store = SliceStore.create(tmp_path / "store.h5", CLASSES, Normalization())
    with store, pytest.raises(SliceStoreError, match=message):
        store.add_volume("x", image, split="unlabeled")


def test_duplicate_and_bad_volume_names(tmp_path):
    with SliceStore.create(tmp_path / "store.h5", CLASSES, Normalization()) as store:
        store.add_volume("a", small_image(), split="unlabeled")
        with pytest.raises(SliceStoreError, match="already exists"):
            store.add_volume("a", small_image(), split="unlabeled")
        for bad in ("", "a/b", ".."):
            with pytest.raises(SliceStoreError, match="volume name"):
                store.add_volume(bad, small_image(), split="unlabeled")


@pytest.mark.parametrize(
    ("class_names", "colors"),
    [(["background"], None), (["background", "a", "a"], None), (["background", "a"], [[0, 0, 0]])],
)
def test_bad_class_definitions(tmp_path, class_names, colors):
    with pytest.raises(SliceStoreError):
        SliceStore.create(tmp_path / "store.h5", class_names, Normalization(), colors=colors)
    assert list(tmp_path.iterdir()) == []


def test_closed_store_refuses_reads(tmp_path):
    path = tmp_path / "store.h5"
    make_store(path)
    store = SliceStore.open(path)
    store.close()
    store.close()  # idempotent
    with pytest.raises(SliceStoreError, match="closed"):
        store.read_volume("a")


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), "2"])
def test_sampling_weight_must_be_a_positive_number(tmp_path, weight):
    store = SliceStore.create(tmp_path / "s.h5", ["background", "organ"], Normalization(mode="identity"))
    with store, pytest.raises(SliceStoreError, match="sampling_weight must be a positive number"):
        store.add_volume(
            "v",
            np.zeros((2, 4, 4), np.float32),
            np.zeros((2, 4, 4), np.uint8),
            split="labeled",
            sampling_weight=weight,
        )
