"""Prior data: a project rehearses what its base model learnt from, and judges on what the user drew."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from synthetic import CLASS_NAMES, make_store, synthetic_volume
from test_project import IDENTITY, TINY_SETTINGS, make_project, partly_reviewed, run_cli, tiny_base_model

from cgs_engine.io import read_volume, write_volume
from cgs_engine.project import Project, ProjectError
from cgs_engine.project.prior import PriorDataError, find_model_prior, import_prior, sidecar_folder
from cgs_engine.retrain import retrain
from cgs_engine.retrain.heldout import heldout_slices
from cgs_engine.retrain.training_store import correction_weight
from cgs_engine.review.state import ACCEPTED, EDITED
from cgs_engine.store import SliceStore
from cgs_engine.volume import Volume


def write_prior_folder(folder: Path, train: int = 2, val: int = 1, seed: int = 3) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cases = []
    for index in range(train + val):
        image, label = synthetic_volume(rng)
        name = f"case{index}"
        write_volume(Volume(image), folder / "images" / f"{name}.nii.gz")
        write_volume(Volume(label, kind="labels"), folder / "labels" / f"{name}.nii.gz")
        split = "train" if index < train else "val"
        cases.append(
            {
                "name": name,
                "image": f"images/{name}.nii.gz",
                "labels": f"labels/{name}.nii.gz",
                "split": split,
            }
        )
    manifest = {
        "format": "napari-cgs-prior",
        "format_version": 1,
        "class_names": CLASS_NAMES,
        "cases": cases,
        "citation": "a test set",
    }
    (folder / "prior.json").write_text(json.dumps(manifest))
    return folder


def test_a_models_sidecar_prior_is_copied_into_a_new_project(tmp_path):
    base = tiny_base_model(tmp_path / "models" / "base.pt")
    write_prior_folder(sidecar_folder(base))
    assert find_model_prior(base) == tmp_path / "models" / "base.prior"
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=base)
    summary = project.prior_summary()
    assert (
        summary["kind"] == "folder" and summary["train"] == ["case0", "case1"] and summary["val"] == ["case2"]
    )
    with SliceStore.open(project.prior_store) as store:
        assert store.volume_names("labeled") == ["case0", "case1"] and store.volume_names("val") == ["case2"]
    bare = Project.create(tmp_path / "bare", CLASS_NAMES, IDENTITY, base_model=base, prior_data=None)
    assert bare.prior_store is None and bare.prior_summary() is None


def test_a_training_runs_store_is_its_models_prior(tmp_path):
    store = make_store(tmp_path / "train.h5", labeled=2, unlabeled=2, val=1)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"store": str(store)}))
    model = tiny_base_model(run / "best.pt")
    assert find_model_prior(model) == store
    project = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=model)
    summary = project.prior_summary()
    assert summary["kind"] == "store" and summary["train"] == ["labeled_0", "labeled_1"]
    with SliceStore.open(project.prior_store) as prior:
        assert prior.volume_names("unlabeled") == []  # only labeled data is prior data


def test_a_runs_store_imported_again_since_is_not_its_models_prior(tmp_path):
    """data.h5 imported again with other patients under its name: they were copied in as the
    model's prior data (rehearsed and held out) though the run recorded another store's content."""
    store = make_store(tmp_path / "train.h5", labeled=2, unlabeled=0, val=1)
    run = tmp_path / "run"
    run.mkdir()
    with SliceStore.open(store) as opened:
        fingerprint = opened.fingerprint()
    (run / "config.json").write_text(json.dumps({"store": str(store), "fingerprint": fingerprint}))
    model = tiny_base_model(run / "best.pt")
    assert find_model_prior(model) == store
    store.unlink()
    make_store(store, labeled=2, unlabeled=0, val=1, seed=11)
    with pytest.raises(PriorDataError, match="train.h5: no longer holds the data .*best.pt was trained on"):
        find_model_prior(model)
    with pytest.raises(PriorDataError, match="no longer holds"):
        Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=model)
    assert not (tmp_path / "p").exists()
    named = Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=model, prior_data=store)
    assert named.prior_summary()["kind"] == "store"


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: (f / "prior.json").unlink(), "prior.json: missing"),
        (lambda f: (f / "prior.json").write_text("{"), "not readable JSON"),
        (lambda f: _edit(f, class_names=["background", "x"]), "differ from the project's"),
        (lambda f: _edit_case(f, image="../../outside.nii.gz"), "lies outside the folder"),
        (lambda f: (f / "labels" / "case1.nii.gz").unlink(), "case1.nii.gz: missing prior labels"),
        (lambda f: _edit_case(f, split="test"), "bad case"),
        (lambda f: _one_label(f, 257), "case1.nii.gz: label id 257 is not a class of the project"),
        (lambda f: _one_label(f, len(CLASS_NAMES)), f"label id {len(CLASS_NAMES)} is not a class"),
    ],
)
def test_bad_prior_data_is_one_line_and_creates_no_project(tmp_path, breakage, message):
    folder = write_prior_folder(tmp_path / "prior")
    breakage(folder)
    with pytest.raises(ProjectError, match=message) as caught:
        Project.create(tmp_path / "p", CLASS_NAMES, IDENTITY, prior_data=folder)
    assert "\n" not in str(caught.value) and not (tmp_path / "p").exists()


def _one_label(folder: Path, value: int) -> None:
    """One voxel of case1's labels set to ``value``: 257 was stored as class 1 (uint8), exit 0."""
    path = folder / "labels" / "case1.nii.gz"
    label = read_volume(path, kind="labels")
    array = label.array.astype(np.uint16)
    array[0, 0, 0] = value
    write_volume(Volume(array, label.geometry, kind="labels"), path, overwrite=True)


def _edit(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "prior.json").read_text())
    (folder / "prior.json").write_text(json.dumps({**manifest, **changes}))


def _edit_case(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "prior.json").read_text())
    manifest["cases"][1].update(changes)
    (folder / "prior.json").write_text(json.dumps(manifest))


def test_a_store_with_other_normalisation_is_refused(tmp_path):
    from cgs_engine.normalize import Normalization

    store = make_store(tmp_path / "train.h5")
    with pytest.raises(PriorDataError, match="normalised with"):
        import_prior(store, tmp_path / "prior.h5", CLASS_NAMES, Normalization())
    assert not (tmp_path / "prior.h5").exists()


def test_retrain_rehearses_prior_data_weights_corrections_and_judges_on_edits(tmp_path):
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    project.set_prior_data(write_prior_folder(tmp_path / "prior", train=2, val=1))
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    plan = json.loads((result.run_dir / "plan.json").read_text())
    assert plan["prior_training"] == ["case0", "case1"]
    with SliceStore.open(result.run_dir / "store.h5") as store:
        labeled = {n: store.volume_info(n) for n in store.volume_names("labeled")}
        assert {"prior~case0", "prior~case1"} <= set(labeled)
        assert all(labeled[n].sampling_weight == 1 for n in ("prior~case0", "prior~case1"))
        corrections = [info for name, info in labeled.items() if not name.startswith("prior~")]
        # 2 prior volumes x 6 slices vs 2 training corrections x 4 reviewed slices, share 0.5
        assert [c.sampling_weight for c in corrections] == [pytest.approx(1.5)] * 2
        assert plan["correction_weight"] == pytest.approx(1.5)
        # judged on the held-out correction and the prior's validation case
        assert sorted(store.volume_names("val")) == sorted(result.heldout)
        assert "prior~case2" in result.heldout and len(result.heldout) == 2
    assert result.new_score.volumes == 2


def test_the_correction_weight_counts_the_slices_that_train(tmp_path):
    """Held out by slices, the reviewed neighbours of the held-out block do not train, but they were
    counted: the corrections drew 0.40 of the samples instead of the share of 0.5."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=2, unlabeled=1)
    project.set_prior_data(write_prior_folder(tmp_path / "prior", train=2, val=1))
    plan = build_store(project, tmp_path / "store.h5", lambda: False, lambda message: None)
    assert plan["heldout_mode"] == "slices"
    with SliceStore.open(tmp_path / "store.h5") as store:
        labeled = {n: store.volume_info(n) for n in store.volume_names("labeled")}
    prior = sum(info.shape[0] for name, info in labeled.items() if name.startswith("prior~"))
    corrections = [info for name, info in labeled.items() if not name.startswith("prior~")]
    trained = sum(info.shape[0] for info in corrections)
    assert trained == 4  # 4 reviewed slices each: 1 held out, its neighbour left out
    assert plan["correction_weight"] == pytest.approx(prior / trained)  # share 0.5: as many draws


def test_correction_weight():
    assert correction_weight(0, 100, 0.5) == 1.0  # no prior data: nothing to balance
    assert correction_weight(600, 100, 0.5) == 6.0
    assert correction_weight(600, 100, 0.25) == 2.0
    assert correction_weight(100, 600, 0.5) == 1.0  # never below a prior slice's weight


def test_held_out_block_follows_the_users_edits():
    reviewed = np.arange(12)
    assert heldout_slices(reviewed, 0.25).tolist() == [9, 10, 11]
    weights = np.zeros(12)
    weights[[4, 5]] = 10
    assert heldout_slices(reviewed, 0.25, weights).tolist() == [4, 5, 6]  # ties: the higher block
    weights[3] = 1
    assert heldout_slices(reviewed, 0.25, weights).tolist() == [3, 4, 5]
    assert heldout_slices(reviewed, 0.25, np.zeros(12)).tolist() == [9, 10, 11]


def test_accepted_voxels_train_and_judge(tmp_path):
    # Accepted voxels are the user's word that the model drew them right: a held-out correction made
    # only of them still judges (before, every such version went unjudged, or was rejected at 0.0).
    project = make_project(tmp_path, corrections=3, unlabeled=1)
    rng = np.random.default_rng(5)
    for name in ("case0", "case1", "case2"):  # only accepted model output, nothing drawn
        image, label = synthetic_volume(rng)
        project.add_correction(
            name, Volume(image), label, np.full(label.shape, ACCEPTED, np.uint8), replace="yes"
        )
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert len(result.heldout) == 1 and result.new_score is not None and result.active_score is not None
    assert not any("cannot judge" in w for w in result.warnings)
    with SliceStore.open(result.run_dir / "store.h5") as store:
        assert len(store.volume_names("labeled")) == 2  # still trained on
        (judging,) = store.volume_names("val")
        assert store.read_volume(judging).review.all()  # every accepted voxel judges


def test_one_volume_with_two_reviewed_slices_holds_one_out_to_judge(tmp_path):
    project = make_project(tmp_path, corrections=0, unlabeled=1)
    rng = np.random.default_rng(6)
    image, label = synthetic_volume(rng)
    review = np.zeros(label.shape, np.uint8)
    review[:2] = EDITED  # two reviewed slices: one trains, the other is held out
    project.add_correction("case0", Volume(image), label, review)
    result = retrain(project, iterations=2, settings=TINY_SETTINGS)
    assert result.heldout == ["case0~heldout"] and result.new_score is not None


def test_version_1_corrections_read_as_the_users_own(tmp_path):
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    path = project.corrections_dir / "case0.h5"
    with h5py.File(path, "r+") as file:  # as napari-cgs 0.1 wrote it: 0/1 masks, version 1
        file.attrs["format_version"] = 1
        file["review"][...] = (file["review"][()] > 0).astype(np.uint8)
        del file.attrs["edited_voxels"]
    info = project.corrections()[0]
    assert info.format_version == 1 and info.edited_voxels == info.reviewed_voxels
    review = project.read_correction("case0").review
    assert set(np.unique(review)) == {0, EDITED}
    np.testing.assert_array_equal(project.read_review_mask("case0"), review)
    with h5py.File(path, "r+") as file:
        file.attrs["format_version"] = 9
    assert (
        project.corrections() == []
        and "newer than this napari-cgs reads" in Project.open(project.folder).problems[0]
    )


def test_cli_create_with_and_without_prior_data(tmp_path, capsys):
    base = tiny_base_model(tmp_path / "base.pt")
    prior = write_prior_folder(tmp_path / "prior")
    code, out, _ = run_cli(
        capsys, "project", "create", tmp_path / "a", "--base-model", base, "--prior-data", prior
    )
    assert code == 0 and "prior data: 2 training + 1 validation volumes" in out
    code, out, _ = run_cli(
        capsys, "project", "create", tmp_path / "b", "--base-model", base, "--no-prior-data"
    )
    assert code == 0 and "prior data: none" in out
    assert run_cli(capsys, "project", "set-prior-data", tmp_path / "b", prior)[0] == 0
    assert Project.open(tmp_path / "b").prior_summary()["train"] == ["case0", "case1"]
    code, _, err = run_cli(capsys, "project", "set-prior-data", tmp_path / "b", tmp_path / "nothing")
    assert code == 2 and "no such prior data" in err and len(err.strip().splitlines()) == 1


def test_files_left_by_a_killed_prior_import_never_block_the_next(tmp_path):
    """Killed (or out of disk space) between writing prior.h5.new and renaming it, an import left a
    file that made every later `set-prior-data` fail with '...prior.h5.new: already exists'."""
    project = make_project(tmp_path, corrections=1, unlabeled=0)
    source = write_prior_folder(tmp_path / "prior", train=2, val=1)
    project.set_prior_data(source)
    kept = (project.folder / "prior" / "prior.h5").read_bytes()
    (project.folder / "prior" / "prior.h5.new").write_bytes(b"half an import")
    (project.folder / "prior" / "prior.json.new").write_text("{")
    project.set_prior_data(source)
    assert sorted(p.name for p in (project.folder / "prior").iterdir()) == ["prior.h5", "prior.json"]
    with SliceStore.open(project.folder / "prior" / "prior.h5") as store:
        assert store.volume_names("labeled")
    assert len((project.folder / "prior" / "prior.h5").read_bytes()) == len(kept)


def test_prior_volumes_stored_without_their_spacing_stay_so_in_the_project_and_its_retrains(tmp_path):
    """Their 1 mm are placeholders (cgs import acdc): copied as known spacing, the retrain's refitted
    error model measured millilitres on them, mixing voxel counts with the corrections' true mL."""
    from cgs_engine.retrain.training_store import build_store

    store = make_store(tmp_path / "train.h5", labeled=2, unlabeled=0, val=1)  # no geometry given
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"store": str(store)}))
    project = Project.create(
        tmp_path / "p", CLASS_NAMES, IDENTITY, base_model=tiny_base_model(run / "best.pt")
    )
    with SliceStore.open(project.prior_store) as prior:
        assert not any(prior.volume_info(n).spacing_known for n in prior.volume_names("labeled"))
    image, label = synthetic_volume(np.random.default_rng(3))
    project.add_correction("case", Volume(image), label)
    build_store(project, tmp_path / "run_store.h5", lambda: False, lambda message: None)
    with SliceStore.open(tmp_path / "run_store.h5") as built:
        priors = [
            n for split in ("labeled", "val") for n in built.volume_names(split) if n.startswith("prior~")
        ]
        assert priors and not any(built.volume_info(n).spacing_known for n in priors)


def test_a_corrected_prior_validation_case_trains_and_no_longer_judges(tmp_path):
    """The user opened one of the prior's validation scans and corrected it: its slices trained the
    new model and the same scan, in the prior's labels, still judged it at the gate (seen images).
    Other validation cases judge as before."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    folder = write_prior_folder(tmp_path / "prior", train=2, val=2)
    project.set_prior_data(folder)
    scan = read_volume(folder / "images" / "case3.nii.gz")
    labels = read_volume(folder / "labels" / "case3.nii.gz").array
    project.add_correction("case3 corrected", scan, labels, partly_reviewed(len(labels)))
    warnings = []
    plan = build_store(project, tmp_path / "store.h5", lambda: False, warnings.append)
    assert "prior~case2" in plan["heldout"] and "prior~case3" not in plan["heldout"]
    assert any(
        "prior validation case 'case3' is the scan of correction 'case3 corrected'" in w for w in warnings
    )
    with SliceStore.open(tmp_path / "store.h5") as store:
        assert "prior~case3" not in store.volume_names("val")
        assert "case3 corrected" in store.volume_names("labeled")


def test_a_corrected_prior_training_scan_is_taught_with_the_users_labels_where_they_reviewed(tmp_path):
    """The user corrected a scan the base model was trained on: its prior copy, with the labels the
    user corrected away, trained beside the correction (weight 1 against 32) and on the gate's
    held-out slices of it. The slices the user reviewed are left out of the prior copy, with a
    warning; the others keep their prior labels (the whole volume was left out at first: 140 of
    150 expert slices lost for 10 corrected)."""
    from cgs_engine.retrain.training_store import build_store

    project = make_project(tmp_path, corrections=0, unlabeled=1)
    folder = write_prior_folder(tmp_path / "prior", train=2, val=1)
    project.set_prior_data(folder)
    scan = read_volume(folder / "images" / "case1.nii.gz")
    labels = read_volume(folder / "labels" / "case1.nii.gz").array
    reviewed = partly_reviewed(len(labels))
    project.add_correction("case1 corrected", scan, labels * 0, reviewed)
    warnings = []
    plan = build_store(project, tmp_path / "store.h5", lambda: False, warnings.append)
    assert plan["prior_training"] == ["case0", "case1"]
    assert any(
        "prior training volume 'case1' is the scan of correction 'case1 corrected'" in w for w in warnings
    )
    slices_reviewed = reviewed.reshape(len(reviewed), -1).any(axis=1)
    with SliceStore.open(tmp_path / "store.h5") as store:
        kept = store.read_volume("prior~case1")
        prior_image = read_volume(folder / "images" / "case1.nii.gz")
        assert len(kept.image) == int((~slices_reviewed).sum())
        np.testing.assert_array_equal(kept.label, labels[~slices_reviewed])
        assert len(store.read_volume("prior~case0").image) == len(prior_image.array)
