"""Running Pre-segment again, or Re-predict, keeps the review queue where the user left it.

Bug: 3 accepted, 1 skipped, at position 4 became 0, 0, position 0, the accepted regions pending.
"""

from __future__ import annotations

import panel_fixtures as fx
import pytest

from napari_cgs.panel.review_queue import STATUS_MARKS

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def review_half_way(panel):
    for _ in range(3):
        panel.queue.accept_button.click()
    panel.queue.skip_button.click()
    state = panel.review.state
    assert state.counts()["accepted"] == 3 and state.counts()["skipped"] == 1
    return dict(state.status), state.position


def rows(panel):
    return [panel.queue.list.item(i).text() for i in range(panel.queue.list.count())]


def test_a_second_presegmentation_and_a_repredict_keep_the_queue(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    assert len(result.regions) >= 6
    status, position = review_half_way(panel)
    assert position == 4
    shown = rows(panel)

    fx.presegment(qtbot, panel)  # Pre-segment again (fill only untouched voxels, the default)
    state = panel.review.state
    assert dict(state.status) == status and state.position == position
    assert rows(panel) == shown and STATUS_MARKS["accepted"] in shown[0]
    assert "3 accepted, 1 skipped" in panel.queue.summary.text()

    with qtbot.waitSignal(panel.prediction_finished, timeout=fx.WAIT_MS):
        assert panel.retrain_section.repredict() is not None  # the retrain section's Re-predict
    fx.wait_until_finished(panel)
    assert dict(panel.review.state.status) == status and panel.review.state.position == position
