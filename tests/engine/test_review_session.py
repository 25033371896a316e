"""Review sessions: atomic save, faithful load, one-line errors naming the file, image fingerprints."""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest

from cgs_engine.errors import CGSError
from cgs_engine.review import (
    ReviewState,
    SessionError,
    find_regions_with_map,
    image_fingerprint,
    load_session,
    save_session,
    session_path_for,
)
from cgs_engine.review import session as session_module
from cgs_engine.volume import Geometry

SHAPE = (6, 12, 10)
GEOMETRY = Geometry(spacing=(0.8, 0.8, 2.5), origin=(-100.0, 20.0, 5.0))
CLASS_NAMES = ["background", "liver", "spleen"]


@pytest.fixture
def reviewed():
    disagreement = np.zeros(SHAPE, np.uint8)
    disagreement[1:3, 2:6, 2:6] = 200
    disagreement[4, 8:11, 5:9] = 255
    regions, component_map = find_regions_with_map(disagreement)
    state = ReviewState(regions, SHAPE)
    state.accept(regions[0].id, component_map)
    state.next()
    labels = np.zeros(SHAPE, np.uint8)
    labels[1:4, 2:7, 2:7] = 2
    return labels, state, component_map


def _save(path, labels, state, component_map=None, fingerprint="abc"):
    return save_session(path, labels, state, fingerprint, GEOMETRY, CLASS_NAMES, component_map)


def _one_line_naming(error: pytest.ExceptionInfo, path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(error.value, CGSError)
    return message


def test_session_path_for():
    assert session_path_for("/data/ct/case_01.nii.gz").as_posix() == "/data/ct/case_01.cgs-session.h5"
    assert session_path_for("/data/ct/case_01.nrrd").name == "case_01.cgs-session.h5"


def test_session_path_for_a_dicom_folder_named_dot(tmp_path, monkeypatch):
    # `napari .` inside a series folder: "." has no name (ValueError) and ".." gave "...cgs-session.h5"
    series = tmp_path / "series"
    (series / "inner").mkdir(parents=True)
    monkeypatch.chdir(series)
    assert session_path_for(".") == tmp_path / "series.cgs-session.h5"
    assert session_path_for("./") == tmp_path / "series.cgs-session.h5"
    monkeypatch.chdir(series / "inner")
    assert session_path_for("..") == tmp_path / "series.cgs-session.h5"


def test_round_trip(tmp_path, reviewed):
    labels, state, component_map = reviewed
    path = _save(tmp_path / "case.cgs-session.h5", labels, state, component_map)
    session = load_session(path, expected_fingerprint="abc")
    assert np.array_equal(session.labels, labels) and session.labels.dtype == np.uint8
    assert np.array_equal(session.review_state.review_mask, state.review_mask)
    assert session.review_state.regions == state.regions
    assert session.review_state.status == state.status and session.review_state.position == 1
    assert np.array_equal(session.component_map, component_map) and session.component_map.dtype == np.int32
    assert session.geometry == GEOMETRY and session.class_names == CLASS_NAMES
    assert session.fingerprint == "abc" and session.saved
    with h5py.File(path, "r") as file:
        assert file["labels"].chunks == (1, 12, 10) and file["labels"].compression == "gzip"
    assert list(tmp_path.iterdir()) == [path]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a bare temporary file


def test_uint16_labels_and_no_component_map(tmp_path, reviewed):
    _, state, _ = reviewed
    labels = np.zeros(SHAPE, np.int32)
    labels[0, 0, 0] = 300
    session = load_session(_save(tmp_path / "s.h5", labels, state))
    assert session.labels.dtype == np.uint16 and session.labels[0, 0, 0] == 300
    assert session.component_map is None


def test_failed_save_keeps_previous_session_and_leaves_no_temp(tmp_path, reviewed, monkeypatch):
    labels, state, component_map = reviewed
    path = _save(tmp_path / "case.cgs-session.h5", labels, state, component_map)
    before = path.read_bytes()
    real_dataset = session_module._dataset

    def fail_on_mask(file, name, array):
        if name == "review_mask":
            raise OSError("No space left on device")
        real_dataset(file, name, array)

    monkeypatch.setattr(session_module, "_dataset", fail_on_mask)
    with pytest.raises(SessionError) as error:
        _save(path, labels + 1, state, component_map, fingerprint="changed")
    assert "No space left on device" in _one_line_naming(error, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]

    def fail_rename(*_):
        raise OSError("rename failed")

    monkeypatch.setattr(session_module, "_dataset", real_dataset)
    monkeypatch.setattr(session_module.os, "replace", fail_rename)
    with pytest.raises(SessionError):
        _save(path, labels + 1, state)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_load_errors_are_one_line_and_name_the_file(tmp_path, reviewed):
    labels, state, _ = reviewed
    missing = tmp_path / "missing.h5"
    with pytest.raises(SessionError) as error:
        load_session(missing)
    assert "no such session file" in _one_line_naming(error, missing)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all\n" * 10)
    with pytest.raises(SessionError) as error:
        load_session(garbage)
    assert "not HDF5" in _one_line_naming(error, garbage)

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(_save(tmp_path / "whole.h5", labels, state).read_bytes()[:3000])
    with pytest.raises(SessionError) as error:
        load_session(truncated)
    _one_line_naming(error, truncated)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file["x"] = 1
    with pytest.raises(SessionError) as error:
        load_session(foreign)
    assert "not a napari-cgs review session" in _one_line_naming(error, foreign)

    future = _save(tmp_path / "future.h5", labels, state)
    with h5py.File(future, "a") as file:
        file.attrs["format_version"] = 99
    with pytest.raises(SessionError) as error:
        load_session(future)
    assert "version 99" in _one_line_naming(error, future)

    incomplete = _save(tmp_path / "incomplete.h5", labels, state)
    with h5py.File(incomplete, "a") as file:
        del file["review_mask"]
    with pytest.raises(SessionError) as error:
        load_session(incomplete)
    assert "incomplete" in _one_line_naming(error, incomplete)


def _damaged(path, change):
    with h5py.File(path, "a") as file:
        change(file)
    return path


def _replace(name, array):
    def change(file):
        del file[name]
        file[name] = array

    return change


def test_a_session_holding_what_no_save_writes_is_refused_in_one_line(tmp_path, reviewed):
    """A review state of the wrong shape crashed the panel when the image was opened (AttributeError);
    float labels, a review mask of 257 (read as ACCEPTED) or 0.9 (read as not reviewed), a component
    map of -1 and class names given as one string came back in silence."""
    import json

    labels, state, component_map = reviewed
    status_list = json.dumps({**state.to_dict(), "status": [1]})
    damages = {
        "review state of the wrong shape": (
            lambda file: file.attrs.__setitem__("review_state", status_list),
            "corrupt",
        ),
        "float labels": (_replace("labels", labels.astype(np.float32) + 0.5), "labels must hold integer ids"),
        "review mask 257": (_replace("review_mask", np.full(SHAPE, 257, np.int16)), "review mask"),
        "review mask 0.9": (_replace("review_mask", np.full(SHAPE, 0.9, np.float32)), "review mask"),
        "component map -1": (_replace("component_map", np.full(SHAPE, -1, np.int32)), "component map"),
        "class names as a string": (
            lambda file: file.attrs.__setitem__("class_names", '"abc"'),
            "class names",
        ),
    }
    for index, (case, (change, words)) in enumerate(damages.items()):
        path = _damaged(_save(tmp_path / f"s{index}.h5", labels, state, component_map), change)
        with pytest.raises(SessionError) as error:
            load_session(path)
        assert words in _one_line_naming(error, path), case


def test_fingerprint_mismatch(tmp_path, reviewed):
    labels, state, _ = reviewed
    path = _save(tmp_path / "case.cgs-session.h5", labels, state)
    with pytest.raises(SessionError) as error:
        load_session(path, expected_fingerprint="other")
    assert "session belongs to a different image" in _one_line_naming(error, path)


def test_save_refuses_mismatched_shapes(tmp_path, reviewed):
    labels, state, _ = reviewed
    with pytest.raises(SessionError, match="review mask shape"):
        _save(tmp_path / "s.h5", labels[:2], state)
    with pytest.raises(SessionError, match="negative|0..65535"):
        _save(tmp_path / "s.h5", labels.astype(np.int8) - 1, state)
    assert list(tmp_path.iterdir()) == []


def test_image_fingerprint():
    rng = np.random.default_rng(1)
    image = rng.integers(-1000, 2000, SHAPE).astype(np.int16)
    reference = image_fingerprint(image, GEOMETRY)
    assert reference == image_fingerprint(image.copy(), GEOMETRY)
    assert reference == image_fingerprint(image.astype(">i2"), GEOMETRY)  # byte order does not matter
    assert reference != image_fingerprint(image + 1, GEOMETRY)
    assert reference != image_fingerprint(image.astype(np.int32), GEOMETRY)
    assert reference != image_fingerprint(image, Geometry(spacing=(0.8, 0.8, 3.0)))
    assert reference != image_fingerprint(image.reshape(12, 6, 10), GEOMETRY)


def test_image_fingerprint_is_fast_on_a_ct_sized_volume():
    image = np.zeros((300, 512, 512), np.int16)
    started = time.perf_counter()
    image_fingerprint(image, GEOMETRY)
    assert time.perf_counter() - started < 0.5  # about 0.03 s; loose for busy machines


def test_a_session_of_other_voxels_is_never_overwritten_by_another_images_review(tmp_path, reviewed):
    """ct.nii.gz and ct.nrrd in one folder, or the image rewritten on disk: the usual file name is
    another image's review; this image's goes beside it, and the note says so."""
    from cgs_engine.review.session import session_fingerprint, session_path_of_image

    labels, state, _ = reviewed
    image = tmp_path / "ct.nii.gz"
    usual = session_path_for(image)
    assert session_path_of_image(image, "fp-a") == (usual, "")  # nothing there yet
    _save(usual, labels, state, fingerprint="fp-a")
    assert session_path_of_image(image, "fp-a") == (usual, "")  # its own
    assert session_fingerprint(usual) == "fp-a"
    other, note = session_path_of_image(tmp_path / "ct.nrrd", "fp-b" * 8)
    assert other == tmp_path / f"ct.{('fp-b' * 8)[:12]}.cgs-session.h5" and other != usual
    assert note == (
        f"ct.cgs-session.h5 belongs to other voxels (the image changed, or another scan has its name); "
        f"it is kept as it is, and this image's review is saved in {other.name}"
    )
    usual.write_bytes(usual.read_bytes()[:100])  # damaged: still nobody's to overwrite
    assert session_fingerprint(usual) is None
    damaged, note = session_path_of_image(image, "fp-a")
    assert damaged != usual and note.startswith("ct.cgs-session.h5 cannot be read;")


def test_two_windows_saving_at_once_do_not_both_win(tmp_path, reviewed, monkeypatch):
    """Both read the file's write id, then saved at the same moment: each passed the check while the
    other was still writing (seconds for a large scan), both were told "saved", and the later file
    replaced the other's work in silence. One is saved, the other refused (threads of one process
    here, two napari windows of one napari; two processes wait for each other alike)."""
    import threading

    labels, state, _ = reviewed
    path = tmp_path / "case.cgs-session.h5"
    save_session(path, labels, state, "abc", GEOMETRY, CLASS_NAMES, write_id="w0", replaces=None)
    real_write = session_module.write_h5_atomically

    def slow_write(*args, **kwargs):  # a large scan's compression and fsync
        time.sleep(0.5)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(session_module, "write_h5_atomically", slow_write)
    outcomes = {}

    def window(name, value):
        try:
            save_session(
                path, labels * value, state, "abc", GEOMETRY, CLASS_NAMES, write_id=name, replaces="w0"
            )
            outcomes[name] = "saved"
        except session_module.SessionConflictError:
            outcomes[name] = "refused"

    threads = [threading.Thread(target=window, args=(name, v)) for name, v in (("a", 0), ("b", 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == ["refused", "saved"], outcomes
    saved = next(name for name, outcome in outcomes.items() if outcome == "saved")
    assert load_session(path).write_id == saved


def test_a_writer_that_did_not_see_the_last_write_does_not_overwrite_it(tmp_path, reviewed):
    """Two windows on one image: each saved over the other's work, the last one winning in silence."""
    labels, state, _ = reviewed
    path = tmp_path / "case.cgs-session.h5"
    first = save_session(path, labels, state, "abc", GEOMETRY, CLASS_NAMES, write_id="w1", replaces=None)
    assert load_session(first).write_id == "w1" and session_module.session_write_id(path) == "w1"
    with pytest.raises(session_module.SessionConflictError) as error:  # it must not exist yet
        save_session(path, labels, state, "abc", GEOMETRY, CLASS_NAMES, replaces=None)
    _one_line_naming(error, path)
    # the other window wrote meanwhile (w2): this one, which last saw w1, is refused
    save_session(path, labels * 0, state, "abc", GEOMETRY, CLASS_NAMES, write_id="w2", replaces="w1")
    with pytest.raises(session_module.SessionConflictError, match="another window"):
        save_session(path, labels, state, "abc", GEOMETRY, CLASS_NAMES, write_id="w3", replaces="w1")
    assert load_session(path).write_id == "w2" and not load_session(path).labels.any()
    # unchecked writes (headless callers) and files from before write ids behave as ever
    save_session(path, labels, state, "abc", GEOMETRY, CLASS_NAMES)
    assert session_module.session_write_id(tmp_path / "none.h5") is None
    (tmp_path / "junk.cgs-session.h5").write_bytes(b"not hdf5")
    assert session_module.session_write_id(tmp_path / "junk.cgs-session.h5") == "unreadable"
