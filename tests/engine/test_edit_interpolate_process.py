"""Fill between slices with ITK in a helper process gives what the in-process filter gives."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.edit import fill_between_slices
from cgs_engine.edit.interpolate_process import InterpolationProcess

pytest.importorskip("itk")


def test_the_helper_fills_like_the_filter_in_process_and_survives_being_killed():
    labels = np.zeros((7, 24, 24), np.uint8)
    labels[0, 6:12, 6:12] = 3
    labels[6, 8:16, 8:16] = 3
    helper = InterpolationProcess()
    helper.start()
    try:
        through_helper = fill_between_slices(labels, 3, interpolate=helper)
        assert helper.ready
        in_process = fill_between_slices(labels, 3)
        np.testing.assert_array_equal(through_helper.labels, in_process.labels)
        assert through_helper.changed[1:6].any()

        helper._process.kill()  # the helper dies (out of memory, killed by the user) ...
        helper._process.wait()
        again = fill_between_slices(labels, 3, interpolate=helper)  # ... and the next call starts a new one
        np.testing.assert_array_equal(again.labels, in_process.labels)
    finally:
        helper.shutdown()
    assert helper._process is None
