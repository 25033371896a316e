"""Edit tracking that follows undo and redo, and the review mask that tells edits from accepts."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.review.edits import EditTracker, combined_review_mask
from cgs_engine.review.state import ACCEPTED, EDITED


def test_a_stroke_is_an_edit_until_it_is_undone():
    predicted = np.zeros((3, 8, 8), np.uint8)
    predicted[1, 2:5, 2:5] = 4
    labels = predicted.copy()
    tracker = EditTracker(labels)
    box = (slice(1, 2), slice(0, 4), slice(0, 4))
    before = labels[box].copy()
    labels[box] = 7  # the stroke
    tracker.touch(box)
    assert tracker.edited(labels).sum() == 16
    labels[box] = before  # undo: the viewer restores the old values and says nothing
    assert not tracker.edited(labels).any()
    labels[box] = 7  # redo
    assert tracker.edited(labels).sum() == 16


def test_painting_a_label_over_itself_is_no_edit_and_index_strokes_count():
    labels = np.full((2, 4, 4), 3, np.uint8)
    tracker = EditTracker(labels)
    tracker.touch((slice(0, 1), slice(0, 2), slice(0, 2)), np.array([[[1, 1], [0, 1]]]))
    assert not tracker.edited(labels).any()  # same label: nothing changed
    labels[1, 2, 3] = 0  # erasing is an edit too
    tracker.touch((np.array([1]), np.array([2]), np.array([3])))
    assert np.argwhere(tracker.edited(labels)).tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="shape"):
        tracker.edited(np.zeros((1, 4, 4), np.uint8))


def test_combined_mask_keeps_accepts_and_marks_edits():
    marks = np.array([0, ACCEPTED, ACCEPTED, EDITED, 0], np.uint8)
    edited = np.array([True, True, False, False, False])
    assert combined_review_mask(marks, edited).tolist() == [EDITED, EDITED, ACCEPTED, EDITED, 0]


def test_a_tracker_continued_across_a_renumbering_rerun_keeps_edits_and_accepts_apart():
    """The baseline stayed in the old model's ids while the kept labels were renumbered: a stroke
    whose new id equalled its old baseline dropped out of the edits, an accept became an edit."""
    from cgs_engine.classes.relabel import kept_in_new_classes

    before, now = ["background", "Brainstem", "Mandible"], ["background", "Mandible", "Brainstem"]
    first = np.array([[[2, 1, 0]]], np.uint8)  # Mandible, Brainstem, background
    accepted = np.array([[[0, 1, 0]]], np.uint8)
    tracker = EditTracker(first)
    labels = first.copy()
    labels[0, 0, 0] = 1  # Brainstem painted over the Mandible
    tracker.touch((np.array([0]), np.array([0]), np.array([0])))
    keep = combined_review_mask(accepted, tracker.edited(labels)) > 0
    kept = kept_in_new_classes(labels, keep, before, now)
    written = np.where(keep, kept, np.array([[[1, 2, 0]]], np.uint8))
    baseline = kept_in_new_classes(tracker.baseline, keep, before, now, strict=False)
    following = tracker.continued(written, keep, baseline)
    np.testing.assert_array_equal(written.ravel(), [2, 2, 0])  # Brainstem both, in the new ids
    np.testing.assert_array_equal(
        combined_review_mask(accepted, following.edited(written)).ravel(), [2, 1, 0]
    )
