"""The panel under inputs it was not made for: no traceback reaches the user, nothing is lost."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_cgs.panel.prediction_layers import focus_layer_name

PLUGIN_TESTS = Path(__file__).resolve().parents[1] / "plugin"
if str(PLUGIN_TESTS) not in sys.path:
    sys.path.insert(0, str(PLUGIN_TESTS))

import panel_fixtures as fx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")

tiny_checkpoint = fx.tiny_checkpoint
viewer_and_panel = fx.viewer_and_panel
sample_slab_path = fx.sample_slab_path
home_sessions = fx.home_sessions


def test_opening_a_png_with_the_panel_docked(viewer_and_panel, tmp_path):
    viewer, panel = viewer_and_panel
    png = tmp_path / "photo.png"
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[5:10, 5:10] = 200
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(png))
    (layer,) = viewer.open(str(png))
    assert panel.image_layer is None  # not offered: napari reads it as 20 x 30 x 3, not a CT
    assert "not offered for pre-segmentation" in panel.status_label.text()
    assert panel.presegment() is None
    grey = tmp_path / "grey.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb[..., 0]), str(grey))
    viewer.open(str(grey))
    assert panel.image_layer is None and "grey" in panel.status_label.text()
    slab = fx.open_image(viewer, sample_slab_path_of(tmp_path))
    assert panel.image_layer is slab  # a volume opened next is chosen as usual


def sample_slab_path_of(folder):
    from napari_cgs._sample_data import SAMPLE_CT

    image = sitk.ReadImage(str(SAMPLE_CT))[:, :, 60:64]
    path = folder / "slab.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_review_navigation_in_the_3d_view(qtbot, viewer_and_panel, sample_slab_path):
    viewer, panel = viewer_and_panel
    image = fx.open_image(viewer, sample_slab_path)
    result = fx.presegment(qtbot, panel, image)
    assert len(result.regions) >= 2
    viewer.dims.ndisplay = 3
    panel.review.next()
    panel.review.previous()
    panel.review.accept()
    assert panel.review.state.status[result.regions[0].id] == "accepted"
    viewer.dims.ndisplay = 2
    # the review box, a 2D layer not drawn in the 3D view, is drawn on the region's slices again
    region = panel.review.state.current()
    viewer.dims.set_point(0, image.data_to_world(region.centroid)[0])
    focus = viewer.layers[focus_layer_name(image)]
    assert focus.visible and len(focus.data) == 1
    panel.review.next()
