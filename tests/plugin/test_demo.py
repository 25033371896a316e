"""`make demo`: the headless loop writes every promised file on the CT's grid; clear failures; samples."""

from __future__ import annotations

import csv
import json

import numpy as np
import panel_fixtures as fx
import pytest

import napari_cgs.demo.launch as demo
import napari_cgs.demo.pipeline as _demo_pipeline
import napari_cgs.demo.render as _demo_render
from cgs_engine.io import read_volume
from napari_cgs._sample_data import BUNDLED_MODEL, SAMPLE_CLASS_NAMES, SAMPLE_CT

tiny_checkpoint = fx.tiny_checkpoint  # a real CGS checkpoint trained in seconds (see panel_fixtures)
ORGANS = SAMPLE_CLASS_NAMES[1:]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def headless(tmp_path, monkeypatch):
    """No display, the working folder in tmp: where `make demo` on a server would be."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return tmp_path / "demo-output"


def test_headless_demo_writes_every_file_on_the_ct_grid(headless, monkeypatch, capsys):
    monkeypatch.delenv(demo.MODEL_ENV, raising=False)  # `make demo` as shipped: the bundled model
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    assert "no display" in out and "pre-segmentation of the 128 x 128 x 128 CT took" in out
    stem = headless / "openkbp_pt_222"
    ct = read_volume(SAMPLE_CT)
    parts = ["labels", *(f"map_{organ}" for organ in ORGANS), "disagreement"]
    for path in [headless / f"openkbp_pt_222_{part}.nii.gz" for part in parts]:
        volume = read_volume(path)
        assert volume.shape == ct.shape and volume.geometry.is_close(ct.geometry), path.name
        assert str(path.resolve()) in out
    with open(f"{stem}_volumes.csv") as handle:
        volumes = list(csv.DictReader(handle))
    assert [row["organ"] for row in volumes] == list(ORGANS)
    assert all(float(row["millilitres"]) > 0 for row in volumes), volumes  # every organ is found
    with open(f"{stem}_review_regions.csv") as handle:
        regions = list(csv.DictReader(handle))
    assert [int(row["rank"]) for row in regions] == list(range(1, len(regions) + 1))
    assert f"{len(regions)} uncertain regions to review" in out
    classes = json.loads(headless.joinpath("openkbp_pt_222_classes.json").read_text())["classes"]
    assert [entry["name"] for entry in classes] == list(SAMPLE_CLASS_NAMES)
    assert headless.joinpath("openkbp_pt_222_viewer.png").read_bytes()[:8] == PNG_MAGIC
    rendered = "rendered by napari under Xvfb" if _demo_render.xvfb_run() else "composed without a display"
    assert f"viewer picture {rendered}" in out


def test_picture_is_composed_without_xvfb(tmp_path, tiny_checkpoint, monkeypatch, qapp):
    from qtpy.QtGui import QImage

    monkeypatch.setattr(_demo_render, "xvfb_run", lambda: None)
    run = _demo_pipeline.presegment(SAMPLE_CT, tiny_checkpoint, device="cpu")
    how = _demo_render.render_picture(run, tiny_checkpoint, tmp_path / "viewer.png")
    assert how.startswith("composed without a display")
    picture = QImage(str(tmp_path / "viewer.png"))
    panel = _demo_render.PANEL_PIXELS  # 128 x 128 voxels of 4.688 mm square: square panels
    assert (picture.width(), picture.height()) == (2 * panel + 8, panel + _demo_render.CAPTION_PIXELS)


def test_bundled_model_missing_from_an_install_is_one_clear_line(headless, monkeypatch, capsys):
    monkeypatch.delenv(demo.MODEL_ENV, raising=False)
    missing = headless.parent / "models" / "default.pt"
    monkeypatch.setattr(demo, "default_model_path", lambda: missing)
    assert demo.main([]) == demo.EXIT_NO_MODEL
    assert capsys.readouterr().err.strip() == demo.missing_model_message(missing)
    assert not headless.exists()


def test_missing_model_is_one_clear_line_and_exit_code(headless, monkeypatch, capsys):
    missing = headless.parent / "no-such-model.pt"
    monkeypatch.setenv(demo.MODEL_ENV, str(missing))
    assert demo.main([]) == demo.EXIT_NO_MODEL
    captured = capsys.readouterr()
    assert captured.err.strip() == demo.missing_model_message(missing)
    assert f"no model at {missing}" in captured.err and not headless.exists()


def test_unreadable_model_is_reported(headless, monkeypatch, capsys):
    broken = headless.parent / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(demo.MODEL_ENV, str(broken))
    assert demo.main([]) == demo.EXIT_NO_MODEL
    assert f"cannot use the model {broken}" in capsys.readouterr().err


def test_default_model_is_the_bundled_one_unless_overridden(monkeypatch, tmp_path):
    monkeypatch.delenv(demo.MODEL_ENV, raising=False)
    assert demo.default_model_path() == BUNDLED_MODEL
    assert demo.default_model_path().parts[-3:] == ("napari_cgs", "models", "default.pt")
    monkeypatch.setenv(demo.MODEL_ENV, str(tmp_path / "other.pt"))
    assert demo.default_model_path() == tmp_path / "other.pt"


def test_display_detection(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    assert demo.has_display()
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert demo.has_display() is (demo.sys.platform != "linux")


@pytest.mark.parametrize(
    ("key", "patient", "organ_voxels"),
    [("openkbp-ct-contours", "pt_222", 2780), ("openkbp-ct-contours-pt225", "pt_225", 2826)],
)
def test_sample_data_opens_with_geometry(make_napari_viewer, key, patient, organ_voxels):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cgs", key)
    image, labels = viewer.layers
    assert patient in image.name and patient in labels.name
    assert image.data.shape == (128, 128, 128) and labels.data.shape == (128, 128, 128)
    assert np.allclose(image.scale, (3.0, 4.688, 4.688), atol=1e-3)
    assert np.allclose(labels.scale, image.scale) and np.allclose(labels.translate, image.translate)
    assert labels.data.max() == 7 and int(np.count_nonzero(labels.data)) == organ_voxels
    assert tuple(image.contrast_limits) == (-160.0, 240.0)


def test_second_sample_ct_alone(make_napari_viewer):
    viewer = make_napari_viewer()
    (image,) = viewer.open_sample("napari-cgs", "openkbp-ct-pt225")
    assert image.name == "OpenKBP pt_225 CT" and image.data.dtype == np.int16
