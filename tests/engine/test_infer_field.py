"""Slices smaller than the trained field of view are padded to it before the network reads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic import tiny_checkpoint

from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint
from cgs_engine.errors import CGSError
from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.infer import Predictor
from cgs_engine.infer.field import FieldPadding, field_padding, padding_for_volume, trained_field_mm
from cgs_engine.io import read_volume
from cgs_engine.scope import measure_scope
from cgs_engine.train.data import volume_padding
from cgs_engine.volume import Geometry, Volume

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
SAMPLE_CT = ROOT / "napari_cgs" / "samples" / "openkbp_pt_222_ct.nii.gz"


def test_padding_reaches_the_trained_field_centred_and_only_below_it():
    assert field_padding((100, 100), (2.0, 2.0), None) is None  # nothing recorded: as before
    assert field_padding((250, 250), (2.0, 2.0), 500.0) is None  # as large as the smallest trained
    # its larger side is, its short side is not: padded to a square 600 x 600 mm, not stretched
    assert field_padding((300, 120), (2.0, 2.0), 500.0) == FieldPadding(0, 0, 90, 90)
    assert field_padding((300, 300), (2.0, 2.0), 500.0) is None  # square and larger: as before
    assert field_padding((240, 300), (2.5, 2.0), 500.0) is None  # square in mm, not in pixels
    padding = field_padding((50, 60), (4.0, 2.5), 500.0)  # 200 x 150 mm
    assert padding == FieldPadding(top=37, bottom=38, left=70, right=70)
    assert padding.padded_size(50, 60) == (125, 200)  # 500 x 500 mm
    assert trained_field_mm({"field_mm": {"min": 480.0, "max": 694.0}}) == 480.0
    assert trained_field_mm({}) is None and trained_field_mm({"field_mm": {"min": "x"}}) is None


def test_a_pixel_spacing_in_another_unit_is_refused_not_padded_out_of_memory():
    # 512 pixels of 0.0098 "mm" (a spacing in cm or m): 5 mm across, 49,000 pixels to pad to 480 mm
    with pytest.raises(CGSError, match=r"5.02 x 5.02 mm across.*check the pixel spacing"):
        field_padding((512, 512), (0.0098, 0.0098), 480.0)
    model = _tiny({"min": 480.0, "max": 600.0})
    tiny = Volume(np.zeros((2, 64, 64), np.int16), Geometry(spacing=(0.01, 0.01, 0.02)))
    with pytest.raises(CGSError, match="check the pixel spacing"):
        Predictor(model, device="cpu", precision="fp32").predict(tiny)
    assert field_padding((64, 64), (float("nan"), 1.0), 480.0) is None  # no spacing known


def test_padded_images_take_each_slices_lowest_value_and_labels_background():
    import torch

    padding = FieldPadding(1, 2, 0, 1)
    images = torch.tensor([[[5.0, 6.0], [7.0, 8.0]], [[-1.0, 0.0], [0.0, 0.0]]])
    padded = padding.pad_images(images)
    assert padded.shape == (2, 5, 3)
    assert padded[0, 0].tolist() == [5.0, 5.0, 5.0] and padded[1, 4].tolist() == [-1.0, -1.0, -1.0]
    assert torch.equal(padding.crop(padded), images)
    labels = padding.pad_labels(torch.ones((1, 2, 2), dtype=torch.uint8))
    assert int(labels.sum()) == 4 and labels.shape == (1, 5, 3)


def test_the_scope_records_the_field_of_view_of_its_volumes():
    small = Volume(np.full((3, 40, 50), -1000, np.int16), Geometry(spacing=(2.0, 3.0, 2.5)))
    large = Volume(np.full((3, 128, 128), -1000, np.int16), Geometry(spacing=(4.0, 4.0, 2.5)))
    scope = measure_scope([small, large]).to_dict()
    assert scope["field_mm"] == {"min": 120.0, "max": 512.0}  # 40 x 3 mm vs 50 x 2 mm: 120


def _tiny(field_mm: dict | None) -> ModelCheckpoint:
    return tiny_checkpoint(
        ["background", "a", "b"],
        {"mode": "ct-window", "lower": -160.0, "upper": 240.0},
        scope={} if field_mm is None else {"modality": "CT", "field_mm": field_mm},
    )


def test_a_small_slice_is_read_as_if_it_lay_in_air_out_to_the_trained_field():
    rng = np.random.default_rng(1)
    spacing = (2.0, 2.0, 3.0)
    small = Volume(rng.integers(-1000, 400, (3, 30, 40)).astype(np.int16), Geometry(spacing=spacing))
    padding = padding_for_volume(small.shape, spacing, {"field_mm": {"min": 200.0}})
    assert padding == FieldPadding(35, 35, 30, 30)
    lowest = small.array.reshape(3, -1).min(axis=1)[:, None, None]
    padded = np.broadcast_to(lowest, (3, 100, 100)).copy()
    padded[:, 35:65, 30:70] = small.array
    model = _tiny({"min": 200.0, "max": 300.0})
    read_padded = Predictor(model, device="cpu", precision="fp32").predict(small)
    by_hand = Predictor(model, device="cpu", precision="fp32").predict(Volume(padded, small.geometry))
    np.testing.assert_array_equal(read_padded.labels.array, by_hand.labels.array[:, 35:65, 30:70])
    for name, volume in read_padded.specialist_maps.items():
        np.testing.assert_array_equal(volume.array, by_hand.specialist_maps[name].array[:, 35:65, 30:70])
    unpadded = Predictor(_tiny(None), device="cpu", precision="fp32").predict(small)
    assert unpadded.labels.shape == small.shape  # an old checkpoint reads it stretched, as before


@pytest.mark.parametrize("field_mm", [(300, 300), (300, 600)])
def test_the_bundled_model_segments_a_neck_reconstructed_at_a_small_field_of_view(field_mm):
    """The same anatomy in a 300 x 300 mm crop: read stretched to the input size the organs came
    back almost empty (Dice 0.00-0.12 per organ against the whole slab's prediction, audit); a
    300 x 600 mm crop, stretched 2x along its short side, kept a third of them (mean Dice 0.42)."""
    if not SAMPLE_CT.exists():
        pytest.skip("bundled sample CT not available")
    ct = read_volume(SAMPLE_CT)
    assert load_checkpoint(BUNDLED_MODEL).scope["field_mm"]["min"] == 480.0
    slab = Volume(np.ascontiguousarray(ct.array[72:96]), ct.geometry, "image")  # parotids, mandible
    predictor = Predictor(BUNDLED_MODEL, device="cpu", precision="fp32")
    whole = predictor.predict(slab, maps=False).labels.array
    spacing = ct.geometry.spacing[0]
    keep, wide = (min(int(round(mm / spacing)), whole.shape[2]) for mm in field_mm)  # pixels
    rows = np.argwhere(whole.any(axis=(0, 2)))[:, 0]
    middle = int(rows.mean())
    top = max(0, min(middle - keep // 2, whole.shape[1] - keep))
    left = (whole.shape[2] - wide) // 2
    window = (slice(None), slice(top, top + keep), slice(left, left + wide))
    crop = Volume(np.ascontiguousarray(slab.array[window]), slab.geometry, "image")
    cropped = predictor.predict(crop, maps=False).labels.array
    reference = whole[window]
    present = [k for k in range(1, 8) if (reference == k).sum() > 50]
    dice = dice_per_class(cropped, reference, 8)
    assert len(present) >= 3 and float(np.mean([dice[k] for k in present])) > 0.6, dice


def test_adapting_reads_the_scan_as_the_pre_segmentation_did():
    """Adapt trained on and re-predicted stretched slices: on a small field it wiped out the organs
    the padded pre-segmentation had found, on every slice the user had not touched."""
    from cgs_engine.edit.adapt import adapt_to_scan

    rng = np.random.default_rng(2)
    spacing = (2.0, 2.0, 3.0)
    image = rng.integers(-1000, 400, (4, 30, 40)).astype(np.int16)
    geometry = Geometry(spacing=spacing)
    model = _tiny({"min": 200.0, "max": 300.0})
    before = Predictor(model, device="cpu", precision="fp32").predict(Volume(image, geometry)).labels.array
    trusted = np.zeros(image.shape, bool)
    trusted[1] = True
    result = adapt_to_scan(
        model, image, before, trusted, geometry=geometry, seconds=30, max_steps=1, lr=1e-12, device="cpu"
    )
    untouched = ~trusted
    np.testing.assert_array_equal(result.labels[untouched], before[untouched])


def test_slices_a_retrain_cuts_out_of_a_correction_keep_their_pixel_spacing(tmp_path):
    """Stored without geometry (their 3D spacing is no volume's), the corrections trained and judged
    the gate stretched while prediction padded the same scans."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import synthetic_volume
    from test_project import make_project, partly_reviewed

    from cgs_engine.retrain.training_store import build_store
    from cgs_engine.store import SliceStore

    scope = {"field_mm": {"min": 500.0, "max": 694.0}}
    project = make_project(tmp_path, corrections=0, unlabeled=1)
    image, label = synthetic_volume(np.random.default_rng(5))
    geometry = Geometry(spacing=(1.0, 1.0, 2.0))
    project.add_correction("c0", Volume(image, geometry), label, partly_reviewed(len(image)))
    expected = padding_for_volume(image.shape, geometry.spacing, scope)
    assert expected is not None
    build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    with SliceStore.open(tmp_path / "store.h5") as store:
        cut = [n for n in store.volume_names("labeled") + store.volume_names("val") if n.startswith("c0")]
        cut += [n for n in store.volume_names("unlabeled") if n.startswith("c0")]
        assert len(cut) >= 2
        for name in cut:
            assert store.volume_info(name).in_plane_mm == (1.0, 1.0)
            assert volume_padding(store, name, scope) == expected


def test_a_retrains_error_model_refit_reads_the_corrections_slices_as_training_did(tmp_path):
    """The refit after a retrain (its store: slices cut out of corrections, no 3D grid) predicted
    them stretched while training and the gate padded them, and counted the evidence's widths in
    1 mm placeholder voxels: the version's likely-wrong map described other predictions."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from synthetic import synthetic_volume
    from test_project import make_project

    from cgs_engine.checkpoint import save_checkpoint
    from cgs_engine.project.calibration import fit_from_prior
    from cgs_engine.retrain.training_store import build_store
    from cgs_engine.store import SliceStore

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    image, label = synthetic_volume(np.random.default_rng(5))
    geometry = Geometry(spacing=(0.8, 0.8, 2.0))  # 25.6 mm slices, far below the trained field
    project.add_correction("c0", Volume(image, geometry), label, np.full(label.shape, 2, np.uint8))
    build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    with SliceStore.open(tmp_path / "store.h5") as store:
        class_names = store.class_names
    model = tiny_checkpoint(class_names, scope={"modality": "CT", "field_mm": {"min": 500.0, "max": 600.0}})
    save_checkpoint(model, tmp_path / "model.pt")
    seen = []
    real = Predictor.predict

    def recording(self, volume, **kwargs):
        seen.append(kwargs.get("in_plane_mm"))
        return real(self, volume, **kwargs)

    Predictor.predict = recording
    try:
        fitted = fit_from_prior(tmp_path / "model.pt", prior=tmp_path / "store.h5", device="cpu", l2=1e-3)
    finally:
        Predictor.predict = real
    assert fitted.fitted_on["cases"] == ["c0", "c0~heldout"]
    assert seen == [(0.8, 0.8), (0.8, 0.8)]  # padded by their pixel spacing
    # no case with a 3D grid: no slice thickness to measure later scans against, own voxels
    assert fitted.reference_spacing_zyx is None


def test_the_smallest_training_scan_is_not_padded_by_the_rounded_minimum():
    near = Volume(np.full((2, 100, 100), -1000, np.int16), Geometry(spacing=(4.9996, 4.9996, 3.0)))
    scope = measure_scope([near]).to_dict()
    assert scope["field_mm"]["min"] <= 499.96 <= scope["field_mm"]["max"] + 0.1
    assert padding_for_volume(near.shape, near.geometry.spacing, scope) is None


def test_a_placeholder_spacing_is_not_padded_when_calibrating():
    from cgs_engine.review.calibrate import calibration_case

    model = _tiny({"min": 200.0, "max": 300.0})
    predictor = Predictor(model, device="cpu", precision="fp32")
    image = np.random.default_rng(3).random((3, 30, 40)).astype(np.float32)
    seen = []
    real = predictor.predict

    def recording(volume, **kwargs):
        seen.append(kwargs.get("field_padding", True))
        return real(volume, **kwargs)

    predictor.predict = recording
    reference = np.zeros(image.shape, np.uint8)
    reference[1, 5:20, 5:20] = 1
    calibration_case(predictor, "x", Volume(image, Geometry()), reference, True, spacing_known=False)
    assert seen == [False]


def test_cgs_predict_names_the_scan_whose_spacing_cannot_be_padded(tmp_path, capsys):
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume

    scan = write_volume(
        Volume(np.full((2, 64, 64), -1000, np.int16), Geometry(spacing=(0.01, 0.01, 0.03))),
        tmp_path / "cm.nii.gz",
    )
    assert main(["predict", str(BUNDLED_MODEL), str(scan), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(scan) in error and "check the pixel spacing" in error
    assert not list((tmp_path / "out").glob("cm*"))  # nothing written for it


def test_a_prior_volume_cut_down_to_its_unreviewed_slices_keeps_its_pixel_spacing(tmp_path):
    """A prior training scan the user also corrected keeps only its unreviewed slices in a retrain;
    they lost their pixel spacing with their 3D grid and trained stretched beside padded ones."""
    from types import SimpleNamespace

    from cgs_engine.normalize import Normalization
    from cgs_engine.retrain.training_store import CorrectedScan, _add_prior_training, store_digest
    from cgs_engine.store import SliceStore

    names, scope = ["background", "a"], {"field_mm": {"min": 500.0}}
    geometry = Geometry(spacing=(1.0, 1.0, 2.0))
    labels = np.zeros((6, 32, 32), np.uint8)
    labels[:, 10:20, 10:20] = 1
    identity = Normalization.from_dict({"mode": "identity"})
    with SliceStore.create(tmp_path / "prior.h5", names, identity) as prior:
        for index in range(2):
            image = np.random.default_rng(index).random((6, 32, 32)).astype(np.float32)
            prior.add_volume(f"p{index}", image, labels, None, geometry, split="labeled")
    with SliceStore.open(tmp_path / "prior.h5") as prior:
        stored = prior.read_volume("p1")
        corrected = {store_digest(stored.image, stored.geometry): CorrectedScan("c1", np.array([0, 1]), True)}
    with SliceStore.create(tmp_path / "run.h5", names, identity) as store:
        _add_prior_training(
            SimpleNamespace(prior_store=tmp_path / "prior.h5"), store, corrected, lambda m: None
        )
    with SliceStore.open(tmp_path / "run.h5") as store:
        assert store.volume_info("prior~p1").shape[0] == 4  # its 2 reviewed slices left out
        for name in ("prior~p0", "prior~p1"):
            assert store.volume_info(name).in_plane_mm == (1.0, 1.0)
            assert volume_padding(store, name, scope) is not None


def test_cgs_predict_refuses_a_scan_it_cannot_pad_before_writing_for_any(tmp_path, capsys):
    """Three scans, the second of 0.05 mm pixels: the first was written, the refusal came, and the
    third, a valid scan, was never predicted, without a word (found by an audit)."""
    from cgs_engine.cli.main import main
    from cgs_engine.io import write_volume

    good = Volume(np.full((2, 64, 64), -1000, np.int16), Geometry(spacing=(8.0, 8.0, 3.0)))
    scans = [
        write_volume(good, tmp_path / "first.nii.gz"),
        write_volume(Volume(good.array, Geometry(spacing=(0.01, 0.01, 3.0))), tmp_path / "tiny.nii.gz"),
        write_volume(good, tmp_path / "third.nii.gz"),
    ]
    out = tmp_path / "out"
    assert main(["predict", str(BUNDLED_MODEL), *map(str, scans), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(scans[1]) in error and "check the pixel spacing" in error
    assert not out.exists() or not list(out.iterdir())  # nothing written for any of them
    # a DICOM series alike, checked on its headers (a review found folders skipped the check)
    from cgs_engine.dicom.ct_series import write_ct_series

    series = tmp_path / "tiny_series"
    write_ct_series(Volume(good.array, Geometry(spacing=(0.01, 0.01, 3.0))), series)
    assert main(["predict", str(BUNDLED_MODEL), str(scans[0]), str(series), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(series) in error and "check the pixel spacing" in error
    assert not out.exists() or not list(out.iterdir())
