"""What `cgs project add-correction` / `add-unlabeled` accept: nothing saved is replaced unasked,
an empty review mask is refused, and the outputs of an earlier prediction are not scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from synthetic import CLASS_NAMES, synthetic_volume
from test_project import IDENTITY, run_cli, tiny_base_model

from cgs_engine.io import write_volume
from cgs_engine.project import Project, ProjectError
from cgs_engine.project.corrections import CorrectionExistsError
from cgs_engine.volume import Volume


def write_case(folder: Path, seed: int) -> tuple[Path, Path, np.ndarray]:
    """``folder/ct.nii.gz`` and ``folder/labels.nii.gz``: one synthetic patient."""
    image, labels = synthetic_volume(np.random.default_rng(seed))
    folder.mkdir(parents=True)
    write_volume(Volume(image), folder / "ct.nii.gz")
    write_volume(Volume(labels, kind="labels"), folder / "labels.nii.gz")
    return folder / "ct.nii.gz", folder / "labels.nii.gz", labels


def add_correction(capsys, project: Path, image: Path, labels: Path, *extra) -> tuple[int, str, str]:
    return run_cli(capsys, "project", "add-correction", project, "--image", image, "--labels", labels, *extra)


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


# ------------------------------------------------------------------------ add-correction
def test_a_second_scan_of_the_same_name_does_not_replace_the_first(tmp_path, capsys):
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    image_a, labels_a, array_a = write_case(tmp_path / "clinic" / "pA", seed=1)
    image_b, labels_b, array_b = write_case(tmp_path / "clinic" / "pB", seed=2)
    assert add_correction(capsys, folder, image_a, labels_a)[0] == 0
    first = Project.open(folder).read_correction("ct").info

    code, _, err = add_correction(capsys, folder, image_b, labels_b)
    assert_one_line_error(
        code, err, "correction 'ct' already exists (from ", "pA", "--name NAME", "--overwrite"
    )
    code, _, err = add_correction(capsys, folder, image_a, labels_b)  # same scan, other labels
    assert_one_line_error(code, err, "correction 'ct' already exists")
    kept = Project.open(folder).read_correction("ct")
    assert kept.info.revision == first.revision and np.array_equal(kept.labels, array_a)

    code, out, _ = add_correction(capsys, folder, image_b, labels_b, "--name", "ct B")
    assert code == 0 and "saved correction 'ct B'" in out
    code, out, _ = add_correction(capsys, folder, image_a, labels_b, "--overwrite")
    assert code == 0 and "saved correction 'ct'" in out
    project = Project.open(folder)
    assert sorted(c.name for c in project.corrections()) == ["ct", "ct B"]
    assert np.array_equal(project.read_correction("ct").labels, array_b)
    assert np.array_equal(project.read_correction("ct B").labels, array_b)


def test_the_engine_replaces_a_correction_only_as_asked(tmp_path):
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    image, labels = synthetic_volume(np.random.default_rng(0))
    first = project.add_correction("ct", Volume(image, source="/a/ct.nii.gz"), labels)
    # the panel saves the same scan's correction again after more edits: the default allows that
    again = project.add_correction("ct", Volume(image, source="/a/ct.nii.gz"), np.zeros_like(labels))
    assert again.revision != first.revision
    with pytest.raises(CorrectionExistsError, match=r"'ct' already exists \(from /a/ct.nii.gz\)"):
        project.add_correction("ct", Volume(image, source="/b/ct.nii.gz"), labels)
    with pytest.raises(CorrectionExistsError):
        project.add_correction("ct", Volume(image, source="/a/ct.nii.gz"), labels, replace="no")
    stored = project.read_correction("ct")
    assert stored.info.revision == again.revision and not stored.labels.any()
    replaced = project.add_correction("ct", Volume(image, source="/b/ct.nii.gz"), labels, replace="yes")
    assert replaced.source == "/b/ct.nii.gz" and [c.name for c in project.corrections()] == ["ct"]
    with pytest.raises(ValueError, match="replace must be one of"):
        project.add_correction("other", Volume(image), labels, replace="maybe")


def test_images_without_a_source_file_are_told_apart_by_their_voxels(tmp_path):
    """Two scans opened by another reader, both layers named "Patient 1": the second replaced the
    first ("" == ""); re-saving the same scan still replaces its own correction."""
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY)
    rng = np.random.default_rng(1)
    (image_1, labels_1), (image_2, labels_2) = synthetic_volume(rng), synthetic_volume(rng)
    first = project.add_correction("Patient 1", Volume(image_1), labels_1)
    again = project.add_correction("Patient 1", Volume(image_1), np.zeros_like(labels_1))
    assert again.revision != first.revision
    with pytest.raises(CorrectionExistsError, match="another image without a recorded source file"):
        project.add_correction("Patient 1", Volume(image_2), labels_2)
    stored = project.read_correction("Patient 1")
    assert stored.info.revision == again.revision and np.array_equal(stored.image.array, image_1)


def test_an_all_zero_review_mask_is_refused(tmp_path, capsys):
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    image, labels, array = write_case(tmp_path / "case", seed=3)
    mask = tmp_path / "case" / "review.nii.gz"
    write_volume(Volume(np.zeros_like(array), kind="labels"), mask)
    code, _, err = add_correction(capsys, folder, image, labels, "--review", mask)
    assert_one_line_error(code, err, f"{mask}: review mask is all 0", "nothing to learn from")
    assert Project.open(folder).corrections() == []


def test_a_binary_mask_given_as_review_names_the_file_and_its_values(tmp_path, capsys):
    """A 0/255 mask was refused as "correction 'case': review mask must hold only 0...": neither
    the file nor the values found."""
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    image, labels, array = write_case(tmp_path / "case", seed=3)
    mask = tmp_path / "case" / "review.nii.gz"
    write_volume(Volume(np.where(array > 0, 255, 0).astype(np.uint8), kind="labels"), mask)
    code, _, err = add_correction(capsys, folder, image, labels, "--review", mask)
    assert_one_line_error(code, err, f"{mask}: a review mask holds 0", "this one holds 0, 255")
    assert Project.open(folder).corrections() == []


# ------------------------------------------------------------------------- add-unlabeled
def test_add_unlabeled_leaves_out_the_outputs_of_an_earlier_prediction(tmp_path, capsys):
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    scans = tmp_path / "scans"
    scans.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a", "b"):
        write_volume(Volume(synthetic_volume(rng)[0]), scans / f"{name}.nii.gz")
    model = tiny_base_model(tmp_path / "model.pt")
    code, _, err = run_cli(capsys, "predict", model, scans, "-o", scans, "--maps")
    assert code == 0, err
    outputs = sorted(p.name for p in scans.iterdir() if p.name not in ("a.nii.gz", "b.nii.gz"))
    assert len(outputs) > 4 and any("_map_" in name for name in outputs)

    code, out, err = run_cli(capsys, "project", "add-unlabeled", folder, scans)
    assert code == 0 and "added 2 unlabeled scan(s)" in out, (out, err)
    left_out = sum(name.endswith(".nii.gz") for name in outputs)
    assert err.count("\n") == 1 and f"left out {left_out} output file(s) of an earlier prediction" in err
    assert sorted(s.path.name for s in Project.open(folder).unlabeled()) == ["a.nii.gz", "b.nii.gz"]

    # named one by one (a shell glob), they are left out too; through the Python API, refused
    code, out, err = run_cli(capsys, "project", "add-unlabeled", folder, scans / "a_labels.nii.gz")
    assert_one_line_error(code, err, "no scans to add, only outputs of an earlier prediction")
    with pytest.raises(ProjectError, match="an output of an earlier prediction"):
        Project.open(folder).add_unlabeled([scans / "b_likely_wrong.nii.gz"])
    assert len(Project.open(folder).unlabeled()) == 2


def test_scans_unlike_the_models_training_data_are_added_but_said_so(tmp_path, capsys):
    """An MR given to a CT model's project teaches nothing and would top the worklist: a warning."""
    from test_scope import body_volume

    from cgs_engine.checkpoint import load_checkpoint, save_checkpoint
    from cgs_engine.scope import measure_scope

    base = tiny_base_model(tmp_path / "base.pt")
    checkpoint = load_checkpoint(base)
    checkpoint.scope = measure_scope([body_volume(r, r * 1.2) for r in (80, 95, 110)]).to_dict()
    save_checkpoint(checkpoint, base)
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=base)
    ct = write_volume(body_volume(100, 115), tmp_path / "ct.nii.gz")
    mr = write_volume(body_volume(100, 115, modality="MR"), tmp_path / "mr.nii.gz")
    code, out, err = run_cli(capsys, "project", "add-unlabeled", project.folder, ct, mr)
    assert code == 0 and "added 2 unlabeled scan(s)" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "mr.nii.gz" in warnings[0] and "looks like MR" in warnings[0]


def test_label_maps_in_a_scan_folder_are_never_added_as_scans(tmp_path, capsys):
    """An edited, converted or exported map saved beside its CT (named by its own class file, under
    any name and format), or a label map with no class file at all, is no scan: a retrain would
    learn organ plateaus. From a folder they are left out and said so; named alone, refused."""
    from cgs_engine.classes.files import class_file_entries, write_class_file

    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    scans = tmp_path / "scans"
    image, labels, array = write_case(scans, seed=5)  # labels.nii.gz: no class file
    reviewed = scans / "ct_reviewed.nrrd"
    write_volume(Volume(array, kind="labels"), reviewed)
    write_class_file(scans / "ct_reviewed_classes.json", class_file_entries(CLASS_NAMES), reviewed)
    # converted into another format beside it: the class file is the same one, naming the .nrrd
    code, _, err = run_cli(capsys, "convert", reviewed, scans / "ct_reviewed.nii.gz", "--labels")
    assert code == 0, err

    code, out, err = run_cli(capsys, "project", "add-unlabeled", folder, scans)
    assert code == 0 and "added 1 unlabeled scan(s)" in out, (out, err)
    notice, *warnings = err.strip().splitlines()
    assert "left out 1 output file(s) of an earlier prediction, edit or export" in notice  # the .nrrd
    assert len(warnings) == 2 and all("looks like a label map, not a scan" in line for line in warnings)
    assert "ct_reviewed.nii.gz" in warnings[0] and "labels.nii.gz" in warnings[1]
    assert [s.path.name for s in Project.open(folder).unlabeled()] == ["ct.nii.gz"]
    # a scan beside them named alone is refused, also next to a folder
    code, _, err = run_cli(capsys, "project", "add-unlabeled", folder, labels, scans)
    assert_one_line_error(code, err.strip().splitlines()[-1] + "\n", "labels.nii.gz: looks like a label map")

    code, _, err = run_cli(capsys, "project", "add-unlabeled", folder, labels)  # named alone
    assert_one_line_error(
        code, err, "labels.nii.gz: looks like a label map, not a scan", "the image it was drawn on"
    )
    with pytest.raises(ProjectError, match="an output of an earlier prediction, edit or export"):
        Project.open(folder).add_unlabeled([reviewed])
    assert len(Project.open(folder).unlabeled()) == 1


def test_add_correction_follows_the_class_file_beside_the_labels(tmp_path, capsys):
    """Labels whose class file numbers the organs otherwise are stored under the project's ids by
    name; a class the project does not have is refused, and nothing is saved."""
    from cgs_engine.classes.files import write_class_file

    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    image, labels, array = write_case(tmp_path / "case", seed=6)
    assert {1, 2} <= set(np.unique(array).tolist())
    order = [0, 2, 1, *range(3, len(CLASS_NAMES))]  # ids 1 and 2 swapped
    swapped = [{"id": i, "name": CLASS_NAMES[order[i]]} for i in range(len(CLASS_NAMES))]
    table = tmp_path / "case" / "labels_classes.json"
    write_class_file(table, swapped, labels)
    code, out, err = add_correction(capsys, folder, image, labels)
    assert code == 0, err
    assert f"{CLASS_NAMES[2]} 1 -> 2, {CLASS_NAMES[1]} 2 -> 1" in out
    stored = Project.open(folder).read_correction("ct").labels
    assert np.array_equal(stored == 2, array == 1) and np.array_equal(stored == 1, array == 2)

    write_class_file(table, [{"id": 0, "name": "background"}, {"id": 1, "name": "Heart"}], labels)
    code, _, err = add_correction(capsys, folder, image, labels, "--name", "other")
    assert_one_line_error(code, err, "calls value 1 'Heart', a class the project does not have")
    assert [c.name for c in Project.open(folder).corrections()] == ["ct"]


def test_add_correction_refuses_a_label_map_given_as_the_image(tmp_path, capsys):
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    _, labels, _ = write_case(tmp_path / "case", seed=7)
    code, _, err = add_correction(capsys, folder, labels, labels)
    assert_one_line_error(code, err, "labels.nii.gz: looks like a label map, not a scan", "--image is")
    assert Project.open(folder).corrections() == []


def test_update_settings_keeps_the_other_training_settings_and_refuses_unknown_ones(tmp_path):
    project = Project.create(tmp_path / "proj", CLASS_NAMES, IDENTITY)
    project.update_settings(train={"val_every": 5, "lr": 5e-4})
    assert project.update_settings(train={"lr": 3e-4})["train"] == {"val_every": 5, "lr": 3e-4}
    assert project.update_settings(train={"val_every": None})["train"] == {"lr": 3e-4}
    with pytest.raises(ProjectError, match="unknown training setting"):
        project.update_settings(train={"lrr": 1e-3})
    with pytest.raises(ProjectError, match="iterations cannot be a project setting"):
        project.update_settings(train={"iterations": 50})  # each retrain's budget would override it
    assert Project.open(project.folder).settings["train"] == {"lr": 3e-4}
    # a bad key saved by hand (the retrain refuses it) can be dropped through the API
    data = json.loads(project.project_file.read_text())
    data["settings"]["train"]["learning_rate"] = 1e-3
    project.project_file.write_text(json.dumps(data))
    assert Project.open(project.folder).update_settings(train={"learning_rate": None})["train"] == {
        "lr": 3e-4
    }


def test_add_correction_with_ids_the_project_lacks_names_the_labels_file(tmp_path, capsys):
    folder = tmp_path / "proj"
    Project.create(folder, CLASS_NAMES, IDENTITY)
    image, labels_path, labels = write_case(tmp_path / "clinic" / "pA", seed=1)
    labels = labels.copy()
    labels[0, 0, 0] = len(CLASS_NAMES) + 5  # another body region's map: more organs than the project
    write_volume(Volume(labels, kind="labels"), labels_path, overwrite=True)
    code, _, err = add_correction(capsys, folder, image, labels_path)
    assert_one_line_error(code, err, str(labels_path), f"up to {len(CLASS_NAMES) + 5}")
    assert Project.open(folder).corrections() == []
