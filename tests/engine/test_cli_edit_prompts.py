"""`cgs edit click|box|adapt`: prompts and adapting the model from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.checkpoint import ModelCheckpoint, save_checkpoint
from cgs_engine.cli.main import main
from cgs_engine.edit import box_prompt, click
from cgs_engine.io import read_volume
from cgs_engine.model import ModelConfig, build_model

SPACING_XYZ = (1.0, 1.0, 2.0)
ORIGIN = (-20.0, 5.0, 100.0)


def write(path, array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def predicted(tmp_path):
    """What `cgs predict --maps` leaves: labels, the organ's map named in the class table, and the CT."""
    organ = np.zeros((10, 24, 24), bool)
    organ[2:8, 6:18, 6:18] = True
    labels = np.where(organ, 1, 0).astype(np.uint8)
    labels[:, :, 14:] = 0  # the labels miss the organ's right side
    probability = np.where(organ, 200, 5).astype(np.uint8)
    probability[:, :, 14:18] = np.where(organ[:, :, 14:18], 90, 5)
    image = np.where(organ, 40, -100).astype(np.int16)
    write(tmp_path / "ct.nii.gz", image)
    write(tmp_path / "ct_labels.nii.gz", labels)
    write(tmp_path / "ct_map_Parotid.nii.gz", probability)
    classes = [{"id": 0, "name": "background"}, {"id": 1, "name": "Parotid", "map": "ct_map_Parotid.nii.gz"}]
    (tmp_path / "ct_classes.json").write_text(json.dumps({"classes": classes}), encoding="utf-8")
    return tmp_path, labels, probability, image


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cgs edit: error: "), captured.err
    return lines[0]


def test_click_finds_the_map_in_the_class_table_and_matches_the_function(predicted, capsys):
    folder, labels, probability, image = predicted
    out = folder / "clicked.nii.gz"
    argv = ["edit", "click", str(folder / "ct_labels.nii.gz"), "-o", str(out), "--class", "Parotid"]
    assert main([*argv, "--point", "5,12,15", "--image", str(folder / "ct.nii.gz")]) == 0
    expected = click(labels, 1, (5, 12, 15), True, probability, (2.0, 1.0, 1.0), image=image)
    written = read_volume(out, kind="labels")
    assert expected.changed_voxels > 20 and np.array_equal(written.array, expected.labels)
    assert written.geometry == read_volume(folder / "ct_labels.nii.gz", kind="labels").geometry
    assert f"click Parotid (1): {expected.changed_voxels} voxels changed" in capsys.readouterr().out


def test_a_click_that_cannot_change_anything_says_why(predicted, capsys):
    folder, labels, _, _ = predicted
    out = folder / "same.nii.gz"
    argv = ["edit", "click", str(folder / "ct_labels.nii.gz"), "-o", str(out), "--class", "Parotid"]
    assert main([*argv, "--point", "5,12,8"]) == 0  # on the organ: a positive click adds nothing
    captured = capsys.readouterr()
    assert "nothing to change: the clicked voxel is Parotid already" in captured.err
    assert np.array_equal(read_volume(out, kind="labels").array, labels)


def test_negative_scribble_and_box(predicted, capsys):
    folder, labels, probability, _ = predicted
    source = str(folder / "ct_labels.nii.gz")
    out = folder / "removed.nii.gz"
    argv = ["edit", "click", source, "-o", str(out), "--class", "1", "--negative"]
    assert main([*argv, "--point", "5,12,8", "--point", "6,12,8"]) == 0
    expected = click(labels, 1, [(5, 12, 8), (6, 12, 8)], False, probability, (2.0, 1.0, 1.0))
    assert np.array_equal(read_volume(out, kind="labels").array, expected.labels)
    boxed = folder / "boxed.nii.gz"
    assert main(["edit", "box", source, "-o", str(boxed), "--class", "1", "--box", "2:8,4:20,4:20"]) == 0
    expected = box_prompt(labels, 1, (slice(2, 8), slice(4, 20), slice(4, 20)), probability)
    assert np.array_equal(read_volume(boxed, kind="labels").array, expected.labels)


def adapt_args(folder, labels, class_names, seconds) -> list[str]:
    """A tiny model of ``class_names`` and slice 4 reviewed, as `cgs edit adapt` arguments."""
    config = ModelConfig(num_classes=len(class_names), widths=(4, 8), dropouts=(0.0, 0.0))
    model = ModelCheckpoint(
        model_config=config,
        state_dict=build_model(config).state_dict(),
        class_names=class_names,
        input_size=24,
        normalization={"mode": "ct-window", "lower": -160.0, "upper": 240.0},
    )
    save_checkpoint(model, folder / "model.pt")
    reviewed = np.zeros(labels.shape, np.uint8)
    reviewed[4] = 2
    write(folder / "review.nii.gz", reviewed)
    argv = ["edit", "adapt", str(folder / "ct_labels.nii.gz"), "-o", str(folder / "adapted.nii.gz")]
    argv += ["--model", str(folder / "model.pt"), "--image", str(folder / "ct.nii.gz")]
    return [*argv, "--reviewed", str(folder / "review.nii.gz"), "--seconds", str(seconds)]


def test_adapt_writes_new_labels_and_keeps_the_reviewed_voxels(predicted, capsys):
    folder, labels, _, _ = predicted
    assert main(adapt_args(folder, labels, ["background", "Parotid"], 5)) == 0
    assert "corrected slices" in capsys.readouterr().out
    np.testing.assert_array_equal(read_volume(folder / "adapted.nii.gz", kind="labels").array[4], labels[4])


@pytest.mark.parametrize(("values", "words"), [(255, "this one holds 0, 255"), (0, "all 0")])
def test_adapt_takes_the_review_mask_add_correction_takes(predicted, capsys, values, words):
    # a binary 0/255 mask was taken as "reviewed" here and refused by add-correction --review
    folder, labels, _, _ = predicted
    argv = adapt_args(folder, labels, ["background", "Parotid"], 2)
    reviewed = np.zeros(labels.shape, np.uint8)
    reviewed[4] = values
    write(folder / "review.nii.gz", reviewed)
    assert main(argv) == 2
    error = one_error_line(capsys)
    assert "review.nii.gz" in error and words in error
    assert not (folder / "adapted.nii.gz").exists()


def test_adapt_refuses_labels_numbered_otherwise_than_the_model(predicted, capsys):
    """The labels' class table says 1 is the Parotid; the model's 1 is the Mandible. Adapting taught
    the model's Mandible head on the parotid and wrote its ids under the labels' names (exit 0)."""
    folder, labels, _, _ = predicted
    assert main(adapt_args(folder, labels, ["background", "Mandible", "Parotid"], 2)) == 2
    error = one_error_line(capsys)
    assert "ct_labels.nii.gz" in error and "Mandible (the model's 1)" in error and "Parotid" in error
    assert not (folder / "adapted.nii.gz").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["click", "--class", "1"], "click needs --point"),
        (["click", "--class", "1", "--point", "1,2"], "expected z,y,x"),
        (
            ["click", "--class", "1", "--point", "1,2,3", "--seconds", "3"],
            "--seconds does not apply to click",
        ),
        (["box", "--class", "1"], "box needs --box"),
        (["box", "--class", "1", "--box", "0:2,0:2,0:2", "--negative"], "--negative does not apply to box"),
        (["adapt", "--image", "{folder}/ct.nii.gz"], "adapt needs --model"),
        (
            ["click", "--class", "1", "--point", "1,2,3", "--map", "{folder}/small.nii.gz"],
            "not on the labels' grid",
        ),
        (["grow", "--class", "1", "--mm", "1", "--point", "1,2,3"], "--point does not apply to grow"),
        (  # the CT given as the map: HU read as probabilities moved whole organs
            ["box", "--class", "1", "--box", "0:9,0:20,0:20", "--map", "{folder}/ct.nii.gz"],
            "ct.nii.gz: int16 voxels: expected a probability map",
        ),
        (["box", "--class", "1", "--box", "0:1,0:1,0:1"], "the box holds nothing of class 1"),
        (  # the labels given as the map: ids read as probabilities (1 as 1/255), exit 0
            [
                "click",
                "--class",
                "1",
                "--point",
                "5,12,8",
                "--negative",
                "--map",
                "{folder}/ct_labels.nii.gz",
            ],
            "ct_labels.nii.gz: is a label map (its voxels are the ids of the class table ct_classes.json",
        ),
        (  # -o naming another input: with --overwrite the CT was replaced by the label map
            ["click", "--class", "1", "--point", "5,12,15", "--image", "{folder}/ct.nii.gz", "--overwrite"],
            "is the --image input; writing would replace it",
        ),
        (  # ... or the map the class table names, which the next click read as probabilities
            ["box", "--class", "1", "--box", "2:8,4:20,4:20", "--overwrite"],
            "is a map named in ct_classes.json",
        ),
        (["click", "--class", "9", "--point", "1,2,3"], "--class 9: not an organ of this label map"),
    ],
)
def test_bad_prompts_are_one_line_exit_2(predicted, capsys, args, words):
    folder, *_ = predicted
    write(folder / "small.nii.gz", np.zeros((2, 3, 4), np.uint8))
    out = folder / "out.nii.gz"
    if "--image" in args and "--overwrite" in args:
        out = folder / "ct.nii.gz"
    elif args[0] == "box" and "--overwrite" in args:
        out = folder / "ct_map_Parotid.nii.gz"
    before = out.read_bytes() if out.exists() else None
    tool, rest = args[0], [a.format(folder=folder) for a in args[1:]]
    assert main(["edit", tool, str(folder / "ct_labels.nii.gz"), "-o", str(out), *rest]) == 2
    assert words in one_error_line(capsys)
    assert (out.read_bytes() if out.exists() else None) == before
