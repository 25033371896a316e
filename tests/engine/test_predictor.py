"""Predictor: outputs on the input geometry, maps, batching, progress, cancel, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.checkpoint import ModelCheckpoint
from cgs_engine.infer import Cancelled, Predictor, write_prediction
from cgs_engine.io import VolumeIOError
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.orientation import Reorientation
from cgs_engine.volume import Geometry, Volume

OBLIQUE = Geometry(
    spacing=(0.7, 0.8, 5.0),
    origin=(10.0, -5.0, 3.0),
    direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
)


def _checkpoint(heads: str = "three-class") -> ModelCheckpoint:
    config = ModelConfig(num_classes=4, widths=(4, 8), dropouts=(0.0, 0.0), heads=heads)
    return ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=["background", "a", "b", "c"],
        input_size=32,
        normalization={"mode": "ct-window", "lower": -160.0, "upper": 240.0},
    )


@pytest.fixture
def volume() -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.integers(-1000, 1000, (5, 40, 36)).astype(np.int16), OBLIQUE)


def test_outputs_share_the_input_grid(volume):
    prediction = Predictor(_checkpoint(), precision="fp32").predict(volume, maps=True)
    assert prediction.labels.array.dtype == np.uint8 and prediction.labels.shape == volume.shape
    assert prediction.labels.geometry == volume.geometry and prediction.labels.kind == "labels"
    assert set(prediction.specialist_maps) == {"a", "b", "c"}
    for layer in [*prediction.specialist_maps.values(), prediction.disagreement]:
        assert layer.array.dtype == np.uint8 and layer.shape == volume.shape and layer.geometry == OBLIQUE
    assert prediction.labels.array.max() <= 3


def test_generalist_only_model_has_no_maps(volume):
    prediction = Predictor(_checkpoint("none"), precision="fp32").predict(volume, maps=True)
    assert prediction.specialist_maps == {} and prediction.disagreement is None


def test_small_batches_give_the_same_result(volume):
    checkpoint = _checkpoint()
    whole = Predictor(checkpoint, precision="fp32", batch_size=16).predict(volume)
    sliced = Predictor(checkpoint, precision="fp32", batch_size=2).predict(volume)
    assert np.array_equal(whole.labels.array, sliced.labels.array)
    assert np.array_equal(whole.disagreement.array, sliced.disagreement.array)


def test_progress_and_cancel(volume):
    seen = []
    Predictor(_checkpoint(), precision="fp32", batch_size=2).predict(
        volume, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(2, 5), (4, 5), (5, 5)]
    calls = {"n": 0}

    def cancel_second_batch() -> bool:
        calls["n"] += 1
        return calls["n"] > 1

    with pytest.raises(Cancelled):
        Predictor(_checkpoint(), precision="fp32", batch_size=2).predict(volume, cancel=cancel_second_batch)


def test_export_keeps_geometry_and_refuses_overwrite(volume, tmp_path):
    prediction = Predictor(_checkpoint(), precision="fp32").predict(volume)
    paths = write_prediction(prediction, tmp_path, "case", maps=True)
    assert {"labels", "disagreement", "classes", "map:a"} <= set(paths)
    image = sitk.ReadImage(str(paths["labels"]))
    assert np.array_equal(sitk.GetArrayFromImage(image), prediction.labels.array)
    assert np.allclose(image.GetSpacing(), OBLIQUE.spacing, rtol=1e-6)
    assert np.allclose(image.GetDirection(), OBLIQUE.direction, atol=1e-6)
    before = paths["labels"].read_bytes()
    with pytest.raises(VolumeIOError, match="already exists"):
        write_prediction(prediction, tmp_path, "case", maps=True)
    assert paths["labels"].read_bytes() == before


def test_a_failed_write_names_the_output_not_its_staged_copy(volume, tmp_path, monkeypatch):
    """On a full disk the one-line error named a file in the hidden staging folder, removed by
    then: the user could not tell which output failed."""
    import errno
    import os

    real_write = sitk.WriteImage

    def full_disk_for_maps(image, path, *args, **kwargs):
        if "_map_" in str(path):
            raise RuntimeError(os.strerror(errno.ENOSPC))
        return real_write(image, path, *args, **kwargs)

    prediction = Predictor(_checkpoint(), precision="fp32").predict(volume)
    monkeypatch.setattr("cgs_engine.io.writers.sitk.WriteImage", full_disk_for_maps)
    with pytest.raises(VolumeIOError) as raised:
        write_prediction(prediction, tmp_path, "case", maps=True)
    message = str(raised.value)
    assert message.startswith(str(tmp_path / "case_map_")) and ".partial" not in message, message
    assert list(tmp_path.iterdir()) == []


def test_a_class_table_under_the_labels_own_name_is_replaced_only_with_overwrite(volume, tmp_path):
    """`cgs convert --labels` (or `cgs edit -o`) of another map onto case_labels.nii.gz wrote
    case_labels_classes.json, which is found before case_classes.json: after `cgs predict
    --overwrite` it named the new labels' organs by the other map's ids (Brainstem exported as
    Mandible, evaluate's Dice 0 for 6 of 7 organs, exit 0)."""
    from cgs_engine.classes.files import class_file_entries, find_class_file, write_class_file

    predictor = Predictor(_checkpoint(), precision="fp32")
    shadow = tmp_path / "case_labels_classes.json"
    write_class_file(
        shadow, class_file_entries(["background", "c", "b", "a"]), tmp_path / "case_labels.nii.gz"
    )
    with pytest.raises(VolumeIOError, match="case_labels_classes.json: already exists: it would be read as"):
        write_prediction(predictor.predict(volume), tmp_path, "case", maps=False)
    assert not (tmp_path / "case_labels.nii.gz").exists() and shadow.is_file()
    paths = write_prediction(predictor.predict(volume), tmp_path, "case", maps=False, overwrite=True)
    assert not shadow.exists() and find_class_file(paths["labels"]) == paths["classes"]


def test_overwriting_a_prediction_leaves_no_maps_of_the_earlier_one(volume, tmp_path):
    """`cgs predict --overwrite` without --maps over a --maps prediction: the old maps would be read
    beside the new labels (`cgs review`, the panel) as if they were the new model's."""
    predictor = Predictor(_checkpoint(), precision="fp32")
    with_maps = write_prediction(predictor.predict(volume), tmp_path, "case", maps=True)
    neighbour = write_prediction(predictor.predict(volume), tmp_path, "case_b", maps=True)
    again = write_prediction(
        predictor.predict(volume, maps=False), tmp_path, "case", maps=False, overwrite=True
    )
    assert set(again) == {"labels", "classes"} and all(path.is_file() for path in again.values())
    assert not with_maps["map:a"].exists() and not with_maps["disagreement"].exists()
    assert not with_maps["likely_wrong_json"].exists()
    assert all(
        path.is_file() for path in neighbour.values() if path.suffix != ".json" or "classes" in path.name
    )


@pytest.mark.parametrize("earlier", [False, True])
def test_overwriting_keeps_the_users_own_files_that_share_the_name_pattern(volume, tmp_path, earlier):
    """--overwrite deleted every file named like a prediction's in any format (a manual
    segmentation case_labels.nrrd, a case_map_dose map), even with no earlier prediction there."""
    predictor = Predictor(_checkpoint(), precision="fp32")
    own = [tmp_path / name for name in ("case_labels.nrrd", "case_map_dose.nii.gz", "case_map_a.mha")]
    for path in own:
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.uint8)), str(path))
    if earlier:
        write_prediction(predictor.predict(volume), tmp_path, "case", maps=True)
    paths = write_prediction(
        predictor.predict(volume, maps=False), tmp_path, "case", maps=False, overwrite=True
    )
    assert all(path.is_file() for path in own)
    assert paths["labels"].is_file() and not (tmp_path / "case_map_a.nii.gz").exists()


def test_a_prediction_lands_whole_labels_and_class_file_last(volume, tmp_path, monkeypatch):
    """A kill while the maps were written left the new model's maps beside the earlier labels and
    class table (or new labels beside the earlier table): all files are now written aside and
    moved into place together, the labels and their class table last."""
    import cgs_engine.infer.export as export

    predictor = Predictor(_checkpoint(), precision="fp32")
    earlier = write_prediction(predictor.predict(volume), tmp_path, "case")
    before = {key: path.read_bytes() for key, path in earlier.items()}

    def dies_on_the_second_map(job_volume, path, **options):
        if path.name == earlier["map:b"].name:
            raise KeyboardInterrupt  # like a kill: nothing after it runs
        return write_volume(job_volume, path, **options)

    write_volume = export.write_volume
    monkeypatch.setattr(export, "write_volume", dies_on_the_second_map)
    other = predictor.predict(Volume(volume.array[:, ::-1].copy(), volume.geometry))
    with pytest.raises(KeyboardInterrupt):
        write_prediction(other, tmp_path, "case", overwrite=True)
    assert {key: path.read_bytes() for key, path in earlier.items()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in earlier.values())
    monkeypatch.undo()

    moved: list[str] = []
    replace = export.os.replace

    def recorded(source, target):
        if Path(target).parent == tmp_path:
            moved.append(Path(target).name)
        return replace(source, target)

    monkeypatch.setattr(export.os, "replace", recorded)
    paths = write_prediction(other, tmp_path, "case", overwrite=True)
    assert len(moved) > 3 and moved[-2:] == [paths["labels"].name, paths["classes"].name]


def test_already_normalised_volumes_are_not_normalised_twice(volume):
    """A store keeps normalised images; predicting them must skip the model's normalisation."""
    predictor = Predictor(_checkpoint(), precision="fp32")
    raw = predictor.predict(volume, maps=True)
    normalised = Volume(predictor.normalization.apply(volume.array), volume.geometry)
    again = predictor.predict(normalised, maps=True, normalized=True)
    assert np.array_equal(raw.labels.array, again.labels.array)
    assert np.array_equal(raw.disagreement.array, again.disagreement.array)


def test_maps_match_resizing_the_float_probabilities_within_one_step(volume):
    """Maps are quantised before the resize; they stay within 1/255 of quantising after it."""
    import torch
    import torch.nn.functional as F

    from cgs_engine.method import disagreement_map

    predictor = Predictor(_checkpoint(), precision="fp32")
    prediction = predictor.predict(volume, maps=True)
    turn = Reorientation.of(volume.geometry)  # the network reads the canonical layout
    seen = np.ascontiguousarray(turn.to_canonical(predictor.normalization.apply(volume.array)))
    image = torch.as_tensor(seen)[:, None]
    with torch.inference_mode():
        output = predictor.model(F.interpolate(image, size=(32, 32), mode="bilinear"))
        probs = torch.softmax(output.specialists, dim=2)
        shown = torch.cat([probs[:, :, 1], disagreement_map(probs)[:, None]], dim=1)
        expected = F.interpolate(shown, size=seen.shape[1:], mode="bilinear")
    expected = (expected.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy().astype(int)
    for k, name in enumerate(["a", "b", "c"]):
        shown_map = turn.to_canonical(prediction.specialist_maps[name].array).astype(int)
        assert np.abs(shown_map - expected[:, k]).max() <= 1
    assert np.abs(turn.to_canonical(prediction.disagreement.array).astype(int) - expected[:, 3]).max() <= 1
    assert prediction.disagreement.array.max() > 0  # an untrained model's heads disagree somewhere
