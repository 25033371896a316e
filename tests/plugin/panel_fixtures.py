"""Shared fixtures of the CGS panel tests; each test module imports the ones it uses.

``tiny_checkpoint`` trains a really small CGS model once per test session on real OpenKBP
slices (one labelled CT, one unlabelled). It is far from a good model, but it is a real
checkpoint of the method with seven specialist heads, which is what the panel needs.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

OPENKBP = (
    Path(os.environ.get("CGS_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
    / "openkbp"
)
SAMPLE_KEY = ("napari-cgs", "openkbp-ct")
SLAB = slice(56, 68)  # 12 slices through the parotids and the mandible: a fast image to pre-segment
WAIT_MS = 120_000


def _tiny_config():
    from cgs_engine.train.config import TrainConfig

    return TrainConfig(
        iterations=30,
        # A model unsure in several separate places is what the review tests need; this cheap
        # variant (measured) leaves such a model after 30 steps, the joint pass one unsure everywhere.
        student_pass="split",
        input_size=64,
        batch_labeled=4,
        batch_unlabeled=4,
        widths=(8, 16, 32),
        dropouts=(0.0, 0.1, 0.2),
        precision="fp32",
        val_every=30,
        optimizer="adamw",
        lr=0.01,
        device="cpu",
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Path of a CGS checkpoint trained for a few seconds on OpenKBP pt_168 (+ pt_28 unlabelled).

    Without ``../shared/data`` (a bare CI clone) it trains on the bundled OpenKBP samples instead,
    so the panel tests never depend on data outside the package.
    """
    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.store.importers import import_nifti
    from cgs_engine.train.loop import train
    from napari_cgs._sample_data import SAMPLE_CT, SAMPLE_LABELS, SECOND_SAMPLE_CT

    image, label, unlabeled = (
        OPENKBP / "images" / "pt_168.nii.gz",
        OPENKBP / "labels" / "pt_168.nii.gz",
        OPENKBP / "unlabeled" / "pt_28.nii.gz",
    )
    bundled = not all(path.exists() for path in (image, label, unlabeled))
    # Each test module re-exports this fixture (its own FixtureDef), so the model is cached on disk
    # for the whole pytest session rather than in pytest's fixture cache.
    folder = tmp_path_factory.getbasetemp() / "cgs_tiny_model"
    checkpoint = folder / "run" / "final.pt"
    if not checkpoint.exists():
        shutil.rmtree(folder, ignore_errors=True)  # a run that stopped half-way
        folder.mkdir()
        if bundled:  # labelled pt_222 (the tests' CT), unlabelled pt_225, both shipped in the package
            for source, target in (
                (SAMPLE_CT, "images/pt_222.nii.gz"),
                (SAMPLE_LABELS, "labels/pt_222.nii.gz"),
                (SECOND_SAMPLE_CT, "unlabeled/pt_225.nii.gz"),
            ):
                (folder / target).parent.mkdir(exist_ok=True)
                shutil.copy(source, folder / target)
            image, label = folder / "images/pt_222.nii.gz", folder / "labels/pt_222.nii.gz"
            unlabeled = folder / "unlabeled/pt_225.nii.gz"
        names = openkbp_class_names()
        store = import_nifti([image], [label], [unlabeled], folder / "store.h5", class_names=names)
        train(store, folder / "run", _tiny_config())
    return checkpoint


def dock_panel(viewer):
    """The CGS panel docked the way a user opens it (Plugins > napari-cgs > CGS).

    napari then hands the panel its viewer through a PublicOnlyProxy, as in real use.
    """
    _, panel = viewer.window.add_plugin_dock_widget("napari-cgs", "CGS")
    return panel


@pytest.fixture
def viewer_and_panel(make_napari_viewer, tiny_checkpoint, home_sessions):
    """A viewer with the CGS panel docked and the tiny model selected (home sessions in tmp)."""
    viewer = make_napari_viewer()
    panel = dock_panel(viewer)
    panel.load_checkpoint(tiny_checkpoint)
    yield viewer, panel
    panel.cancel()
    if panel.job is not None:
        wait_until_finished(panel)
    panel.autosave.stop()


@pytest.fixture
def sample_slab_path(tmp_path) -> Path:
    """A 12-slice slab of the bundled CT, written as NIfTI with the CT's own geometry."""
    from napari_cgs._sample_data import SAMPLE_CT

    image = sitk.ReadImage(str(SAMPLE_CT))
    array = sitk.GetArrayFromImage(image)[SLAB]
    slab = sitk.GetImageFromArray(array)
    slab.SetSpacing(image.GetSpacing())
    slab.SetDirection(image.GetDirection())
    slab.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, SLAB.start)))
    path = tmp_path / "ct_slab.nii.gz"
    sitk.WriteImage(slab, str(path))
    return path


@pytest.fixture
def home_sessions(tmp_path, monkeypatch) -> Path:
    """Sessions of images without a writable source folder go here instead of the real home."""
    import napari_cgs.panel.session as _session

    folder = tmp_path / "home_sessions"
    monkeypatch.setattr(_session, "SESSION_HOME", folder)
    return folder


def wait_until_finished(panel, timeout_ms: int = WAIT_MS) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_ms / 1000
    while not panel.job.finished:
        if time.monotonic() > deadline:
            raise TimeoutError("pre-segmentation did not finish")
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()


def presegment(qtbot, panel, image_layer=None):
    """Run the panel's pre-segmentation and wait for its result (None when cancelled)."""
    if image_layer is not None:
        panel.select_image(image_layer)
    with qtbot.waitSignal(panel.prediction_finished, timeout=WAIT_MS) as blocker:
        job = panel.presegment()
        assert job is not None
    wait_until_finished(panel)
    return blocker.args[0]


def open_image(viewer, path: Path):
    layers = viewer.open(str(path), plugin="napari-cgs")
    assert len(layers) == 1
    return layers[0]


def transforms_of(layer) -> dict[str, np.ndarray]:
    return {
        "scale": np.asarray(layer.scale),
        "translate": np.asarray(layer.translate),
        "rotate": np.asarray(layer.rotate),
        "affine": np.asarray(layer.affine.affine_matrix),
    }


def assert_same_transforms(layer, reference) -> None:
    for key, value in transforms_of(reference).items():
        actual = transforms_of(layer)[key]
        np.testing.assert_allclose(actual, value, atol=1e-9, err_msg=f"{layer.name}: {key}")


def held(monkeypatch, module, name: str, answer=None) -> threading.Event:
    """Make ``module.name`` (a function a panel worker runs) wait on its worker thread until the
    returned event is set, so that the user can act meanwhile; ``answer(args)`` replaces its result."""
    release, original = threading.Event(), getattr(module, name)

    def waiting(*args, **kwargs):
        assert release.wait(60)
        return original(*args, **kwargs) if answer is None else answer(args)

    monkeypatch.setattr(module, name, waiting)
    return release


def open_and_presegment_another(qtbot, viewer, panel, sample_slab_path):
    """A second scan of the same shape (another frame of one patient), now the one corrected."""
    from napari_cgs._layers import same_layer
    from napari_cgs.panel.prediction_layers import labels_layer_name

    other_path = sample_slab_path.with_name("other_frame.nii.gz")
    other_path.write_bytes(sample_slab_path.read_bytes())
    other = open_image(viewer, other_path)
    presegment(qtbot, panel, other)
    other_labels = viewer.layers[labels_layer_name(other)]
    assert same_layer(panel.labels_layer, other_labels)
    return other_labels
