"""The saved prediction beside a session (maps, generalist labels), and a session's colours and link to it."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.errors import CGSError
from cgs_engine.review import ReviewState, SessionError, load_session, save_session
from cgs_engine.review.prediction_file import load_prediction, prediction_path_for, save_prediction
from cgs_engine.volume import Geometry

SHAPE = (4, 9, 7)
NAMES = ["background", "liver", "spleen"]
COLOURS = [[0, 0, 0], [230, 25, 75], [60, 180, 75]]


def maps():
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 256, SHAPE, dtype=np.uint8) for name in NAMES[1:]}


def test_prediction_path_sits_beside_the_session(tmp_path):
    assert prediction_path_for(tmp_path / "ct.cgs-session.h5") == tmp_path / "ct.cgs-prediction.h5"


def test_round_trip_keeps_every_map_the_labels_and_the_colours(tmp_path):
    labels = np.arange(np.prod(SHAPE)).reshape(SHAPE).astype(np.uint8) % 3
    disagreement = np.full(SHAPE, 7, np.uint8)
    written = maps()
    path = save_prediction(
        tmp_path / "p.h5", "run-1", "finger", labels, written, disagreement, NAMES, COLOURS
    )
    saved = load_prediction(path, expected_fingerprint="finger", expected_id="run-1")
    np.testing.assert_array_equal(saved.labels, labels)
    np.testing.assert_array_equal(saved.disagreement, disagreement)
    assert list(saved.specialist_maps) == NAMES[1:]  # in class order
    for name, array in written.items():
        np.testing.assert_array_equal(saved.specialist_maps[name], array)
    assert saved.class_names == NAMES and saved.class_colors == COLOURS


@pytest.mark.parametrize(
    ("fingerprint", "run", "words"),
    [("other", "run-1", "different image"), ("finger", "run-2", "earlier or later run")],
)
def test_a_prediction_of_another_image_or_run_is_refused_in_one_line(tmp_path, fingerprint, run, words):
    labels = np.zeros(SHAPE, np.uint8)
    path = save_prediction(tmp_path / "p.h5", "run-1", "finger", labels, maps(), None, NAMES, COLOURS)
    with pytest.raises(SessionError) as error:
        load_prediction(path, expected_fingerprint=fingerprint, expected_id=run)
    assert words in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_bad_input_is_refused_and_the_previous_file_survives(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    path = save_prediction(tmp_path / "p.h5", "run-1", "finger", labels, maps(), None, NAMES, COLOURS)
    with pytest.raises(CGSError, match="shape"):
        save_prediction(
            path, "run-2", "finger", labels, {"liver": np.zeros((2, 2, 2), np.uint8)}, None, NAMES, []
        )
    with pytest.raises(CGSError, match="not in the class table"):
        save_prediction(path, "run-2", "finger", labels, {"kidney": labels}, None, NAMES, [])
    assert load_prediction(path).prediction_id == "run-1"
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SessionError, match="not a saved prediction"):
        load_prediction(tmp_path / "junk.h5")


def test_a_session_keeps_its_colours_and_its_prediction_id(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    state = ReviewState([], SHAPE)
    path = save_session(
        tmp_path / "s.cgs-session.h5", labels, state, "finger", Geometry(), NAMES, None, COLOURS, "run-1"
    )
    session = load_session(path)
    assert session.class_colors == COLOURS and session.prediction_id == "run-1"
    older = load_session(
        save_session(tmp_path / "o.cgs-session.h5", labels, state, "finger", Geometry(), NAMES)
    )
    assert older.class_colors is None and older.prediction_id == ""
