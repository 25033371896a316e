"""`make demo` without a display: a clear message, a geometry-checked round trip, exit code 0."""

from __future__ import annotations

import numpy as np

from cgs_engine.io import read_volume
from napari_cgs import demo
from napari_cgs._sample_data import SAMPLE_CT


def test_headless_demo_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert "no display" in out and "identical after the trip" in out
    written = read_volume(tmp_path / "demo-output" / SAMPLE_CT.name)
    source = read_volume(SAMPLE_CT)
    assert np.array_equal(written.array, source.array) and written.geometry.is_close(source.geometry)


def test_display_detection(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    assert demo.has_display()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.has_display() is (demo.sys.platform != "linux")


def test_sample_data_opens_with_geometry(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cgs", "openkbp-ct-contours")
    image, labels = viewer.layers
    assert image.data.shape == (128, 128, 128) and labels.data.shape == (128, 128, 128)
    assert np.allclose(image.scale, (3.0, 4.688, 4.688), atol=1e-3)
    assert np.allclose(labels.scale, image.scale) and labels.data.max() == 7
    assert tuple(image.contrast_limits) == (-160.0, 240.0)
