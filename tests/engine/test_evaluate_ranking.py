import numpy as np
import pytest

from cgs_engine.evaluate.ranking import average_precision, error_band, recall_at


def test_perfect_ranking_has_ap_one_and_catches_all_errors_in_their_share():
    positive = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    score = np.arange(10, 0, -1)  # the two positives first
    assert average_precision(score, positive) == pytest.approx(1.0)
    assert recall_at(score, positive, [0.1, 0.2, 0.5]) == pytest.approx([0.5, 1.0, 1.0])


def test_worst_ranking_and_known_average_precision():
    positive = np.array([0, 1, 0, 1], dtype=bool)
    score = np.array([4, 3, 2, 1])  # hits at ranks 2 and 4: AP = (1/2 + 2/4) / 2
    assert average_precision(score, positive) == pytest.approx(0.5)
    assert recall_at(score, positive, [0.25, 0.5]) == pytest.approx([0.0, 0.5])


def test_a_constant_score_scores_the_base_rate_whatever_the_voxel_order():
    rng = np.random.default_rng(0)
    positive = rng.random(1000) < 0.1
    constant = np.zeros(1000)
    assert average_precision(constant, positive) == pytest.approx(positive.mean())
    assert recall_at(constant, positive, [0.1, 0.37]) == pytest.approx([0.1, 0.37])
    # sorting the positives first changes nothing: ties are one group
    order = np.argsort(~positive, kind="stable")
    assert average_precision(constant, positive[order]) == pytest.approx(positive.mean())


def test_a_tie_group_split_by_the_cut_counts_in_proportion():
    positive = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    score = np.array([2, 1, 1, 1, 1, 0, 0, 0])  # one sure hit, then 4 tied voxels holding 2 hits
    # top 3 of 8: the sure hit plus 2 of the 4 tied voxels (half their 2 hits)
    assert recall_at(score, positive, [3 / 8]) == pytest.approx([(1 + 1) / 3])
    # AP: step 1 precision 1 (1 hit), step 2 precision 3/5 (2 more hits)
    assert average_precision(score, positive) == pytest.approx((1 * 1 + 2 * 3 / 5) / 3)


def test_no_positives_gives_nan_and_bad_input_is_refused():
    assert np.isnan(average_precision(np.arange(3), np.zeros(3, bool)))
    with pytest.raises(ValueError, match="values"):
        recall_at(np.arange(3), np.zeros(4, bool), [0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        recall_at(np.arange(3), np.ones(3, bool), [1.5])


def test_error_band_reaches_width_voxels_from_either_label_map():
    prediction = np.zeros((1, 1, 20), np.uint8)
    reference = np.zeros((1, 1, 20), np.uint8)
    prediction[0, 0, 5] = 1
    reference[0, 0, 15] = 2
    band = error_band(prediction, reference, width=3)
    assert np.flatnonzero(band[0, 0]).tolist() == [2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16, 17, 18]
    assert not error_band(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2), np.uint8)).any()
