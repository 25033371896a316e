"""Importers: ACDC (SSL4MIS h5), SegTHOR PNG and NIfTI, on miniatures of each layout and on real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.errors import CGSError
from cgs_engine.normalize import Normalization
from cgs_engine.store import SliceStore, SliceStoreError
from cgs_engine.store.importers import (
    ACDC_CLASS_NAMES,
    SEGTHOR_CLASS_NAMES,
    DatasetImportError,
    acdc_labeled_patients,
    import_acdc,
    import_nifti,
    import_segthor_png,
    read_acdc_train_volumes,
    read_segthor_label,
)

SHARED_DATA = Path(
    os.environ.get("CGS_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)


def real(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def no_partial_files(folder: Path) -> bool:
    return not any(path.name.endswith(".partial") for path in folder.iterdir())


# ----------------------------------------------------------------------------------- ACDC
# (volume id, slice count, slice shape); patient 7 is listed first, so it is "the first patient".
ACDC_TRAIN = [
    ("patient007_frame01", 3, (12, 10)),
    ("patient002_frame01", 2, (9, 11)),
    ("patient007_frame02", 3, (12, 10)),
    ("patient002_frame02", 2, (9, 11)),
    ("patient005_frame01", 4, (8, 8)),
]
ACDC_VAL = [("patient009_frame01", (5, 7, 6)), ("patient009_frame02", (5, 7, 6))]


def acdc_slice_content(volume_id: str, index: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """The image encodes (volume, slice index) so that stacking order can be checked."""
    image = np.full(shape, (sum(map(ord, volume_id)) % 50 + index) / 100.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[: index + 1, :2] = index % 4
    return image, label


def write_acdc_miniature(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    slice_ids = []
    for volume_id, count, shape in ACDC_TRAIN:
        for index in range(1, count + 1):  # SSL4MIS numbers slices from 1
            slice_id = f"{volume_id}_slice_{index}"
            image, label = acdc_slice_content(volume_id, index, shape)
            with h5py.File(root / "data" / f"{slice_id}.h5", "w") as file:
                file.create_dataset("image", data=image, compression="gzip")
                file.create_dataset("label", data=label, compression="gzip")
            slice_ids.append(slice_id)
    # Upstream lists slices in no particular order within a volume; keep volumes' first appearance.
    listed = [slice_ids[i] for i in (2, 0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 10, 13, 12)]
    (root / "train_slices.list").write_text("\n".join(listed) + "\n")
    for volume_id, shape in ACDC_VAL:
        with h5py.File(root / "data" / f"{volume_id}.h5", "w") as file:
            file["image"] = np.linspace(0, 1, np.prod(shape), dtype=np.float32).reshape(shape)
            file["label"] = np.ones(shape, dtype=np.uint8)
    (root / "val.list").write_text("\n".join(v for v, _ in ACDC_VAL) + "\n")


def test_acdc_miniature_import(tmp_path):
    root = tmp_path / "acdc"
    write_acdc_miniature(root)
    calls = []
    out = import_acdc(
        root, tmp_path / "acdc.h5", labeled_patients=1, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (7, 7) and len(calls) == 7
    with SliceStore.open(out) as store:
        assert store.class_names == ACDC_CLASS_NAMES
        assert store.normalization == Normalization(mode="minmax")
        assert store.volume_names("labeled") == ["patient007_frame01", "patient007_frame02"]
        assert store.volume_names("unlabeled") == [
            "patient002_frame01",
            "patient002_frame02",
            "patient005_frame01",
        ]
        assert store.volume_names("val") == ["patient009_frame01", "patient009_frame02"]
        assert len(store.slice_index("labeled")) == 6
        labeled = store.read_volume("patient007_frame02")
        assert labeled.image.shape == (3, 12, 10)
        for z in range(3):
            expected_image, expected_label = acdc_slice_content("patient007_frame02", z + 1, (12, 10))
            np.testing.assert_array_equal(labeled.image[z], expected_image)
            np.testing.assert_array_equal(labeled.label[z], expected_label)
        unlabeled = store.read_volume("patient005_frame01")
        assert unlabeled.label is None and unlabeled.image.shape == (4, 8, 8)
        assert store.read_volume("patient009_frame01").label.shape == (5, 7, 6)
        info = store.volume_info("patient002_frame01")
        assert info.spacing_known is False and info.geometry.spacing == (1.0, 1.0, 1.0)


def test_acdc_missing_slice_fails_without_leaving_a_file(tmp_path):
    root = tmp_path / "acdc"
    write_acdc_miniature(root)
    missing = root / "data" / "patient005_frame01_slice_3.h5"
    missing.unlink()
    out = tmp_path / "acdc.h5"
    with pytest.raises(DatasetImportError) as error:
        import_acdc(root, out, labeled_patients=1)
    assert str(missing) in str(error.value) and "\n" not in str(error.value)
    assert not out.exists() and no_partial_files(tmp_path)


def test_acdc_refuses_existing_output_and_bad_patient_count(tmp_path):
    root = tmp_path / "acdc"
    write_acdc_miniature(root)
    out = tmp_path / "acdc.h5"
    out.write_bytes(b"keep me")
    with pytest.raises(SliceStoreError, match="already exists"):
        import_acdc(root, out)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(DatasetImportError, match="--labeled-patients must be in 1..3"):
        import_acdc(root, tmp_path / "other.h5", labeled_patients=4)


@pytest.mark.realdata
def test_acdc_real_list_gives_literature_slice_counts():
    root = real("acdc_ssl4mis_h5")
    volumes = read_acdc_train_volumes(root)
    assert len(volumes) == 140
    for patients, slices in ((1, 32), (3, 68), (7, 136)):
        chosen = set(acdc_labeled_patients(volumes, patients))
        assert sum(len(v.slice_ids) for v in volumes if v.patient in chosen) == slices
    assert acdc_labeled_patients(volumes, 3) == ["patient099", "patient038", "patient050"]


# -------------------------------------------------------------------------------- SegTHOR
SEGTHOR_TRAIN = {"Patient_12": 3, "Patient_04": 2, "Patient_07": 4}
SEGTHOR_VAL = {"Patient_01": 2}
SEGTHOR_SPACING = {"Patient_01": [0.9, 0.9, 2.0], "Patient_04": [0.8, 0.7, 2.5], "Patient_07": [1, 1, 2],
                   "Patient_12": [0.98, 0.98, 2.5]}  # fmt: skip


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def write_segthor_miniature(root: Path, shape=(16, 12)) -> None:
    for split, patients in (("train", SEGTHOR_TRAIN), ("val", SEGTHOR_VAL)):
        for patient, count in patients.items():
            for z in range(count):
                image = np.full(shape, 10 * z + int(patient[-2:]), dtype=np.uint8)
                image[0, 0] = 255
                gt = np.zeros(shape, dtype=np.uint8)
                gt[z, :] = 63 * ((z % 4) + 1)
                write_png(root / split / "img" / f"{patient}_{z:04d}.png", image)
                write_png(root / split / "gt" / f"{patient}_{z:04d}.png", gt)
    (root / "spacing_original_mm.json").write_text(json.dumps(SEGTHOR_SPACING))


def test_segthor_miniature_import(tmp_path):
    root = tmp_path / "segthor"
    write_segthor_miniature(root)
    out = import_segthor_png(root, tmp_path / "segthor.h5", labeled_patients=2)
    with SliceStore.open(out) as store:
        assert store.class_names == SEGTHOR_CLASS_NAMES
        assert store.volume_names("labeled") == ["Patient_04", "Patient_07"]  # first two in sorted order
        assert store.volume_names("unlabeled") == ["Patient_12"]
        assert store.volume_names("val") == ["Patient_01"]
        stored = store.read_volume("Patient_07")
        # a PNG is [row, col] with col = original y (2*dy) and row = original x (2*dx): the store
        # holds the canonical layout (cgs_engine.orientation), rows and columns swapped
        assert stored.image.shape == (4, 12, 16) and stored.image.dtype == np.float32
        np.testing.assert_allclose(stored.image[2, 5, 5], (20 + 7) / 255, rtol=1e-6)
        assert stored.image.max() == 1.0
        assert stored.label[2, :, 2].tolist() == [3] * 12 and stored.label[1, :, 1].tolist() == [2] * 12
        assert store.read_volume("Patient_12").label is None
        geometry = store.volume_info("Patient_04").geometry
        np.testing.assert_allclose(geometry.spacing, (1.6, 1.4, 2.5))
        np.testing.assert_array_equal(geometry.direction_matrix, np.eye(3))
        assert store.volume_info("Patient_04").original_dtype == "uint8"


def test_volumes_enter_a_store_in_the_canonical_orientation(tmp_path):
    """The same patient stored as NIfTI tools write it (x to the right, y to the front) and as
    identity-direction files gives the same store arrays: the network learns one anatomy."""
    image, label = mr_like(0), np.zeros((3, 6, 5), np.uint8)
    label[1, 2, 1] = 1  # off-centre, so a flip would show
    lps = (write_nifti(tmp_path / "a" / "p.nii.gz", image), write_nifti(tmp_path / "al" / "p.nii.gz", label))
    flipped = ((-1, 0, 0, 0, -1, 0, 0, 0, 1), (4.0, 5.0, 0.0))  # world of voxel 0: the far corner
    ras = []
    for folder, array in (("b", image), ("bl", label)):
        itk = sitk.GetImageFromArray(np.ascontiguousarray(array[:, ::-1, ::-1]))
        itk.SetSpacing((1.0, 1.0, 2.0)), itk.SetDirection(flipped[0]), itk.SetOrigin(flipped[1])
        (tmp_path / folder).mkdir()
        sitk.WriteImage(itk, str(tmp_path / folder / "p.nii.gz"))
        ras.append(tmp_path / folder / "p.nii.gz")
    stores = [
        import_nifti([i], [lab], [], tmp_path / f"{n}.h5", class_names=["background", "x"])
        for n, (i, lab) in (("lps", lps), ("ras", ras))
    ]
    with SliceStore.open(stores[0]) as a, SliceStore.open(stores[1]) as b:
        first, second = a.read_volume("p"), b.read_volume("p")
        np.testing.assert_array_equal(first.label, second.label)
        np.testing.assert_allclose(first.image, second.image)
        assert b.volume_info("p").geometry.is_close(a.volume_info("p").geometry)


def test_segthor_labels_of_an_unlabeled_patient_read_as_the_importer_stacks_them(tmp_path):
    root = tmp_path / "segthor"
    write_segthor_miniature(root)
    label = read_segthor_label(root / "train", "Patient_12")  # imported as unlabeled above
    assert label.shape == (3, 12, 16) and label.dtype == np.uint8  # canonical, as the store's image
    assert label[2, :, 2].tolist() == [3] * 12 and label[0, :, 1].tolist() == [0] * 12
    out = import_segthor_png(root, tmp_path / "segthor.h5", labeled_patients=3)  # now labeled
    with SliceStore.open(out) as store:
        np.testing.assert_array_equal(store.read_volume("Patient_12").label, label)
    with pytest.raises(DatasetImportError, match="no slices of Patient_99"):
        read_segthor_label(root / "train", "Patient_99")


def test_segthor_rejects_unexpected_label_values(tmp_path):
    root = tmp_path / "segthor"
    write_segthor_miniature(root)
    bad = root / "train" / "gt" / "Patient_07_0001.png"
    gt = np.zeros((16, 12), dtype=np.uint8)
    gt[3, 3] = 100
    write_png(bad, gt)
    out = tmp_path / "segthor.h5"
    with pytest.raises(DatasetImportError, match=r"\[100\]") as error:
        import_segthor_png(root, out, labeled_patients=2)
    assert str(bad) in str(error.value)
    assert not out.exists() and no_partial_files(tmp_path)


def test_segthor_rejects_gaps_in_z(tmp_path):
    root = tmp_path / "segthor"
    write_segthor_miniature(root)
    (root / "train" / "img" / "Patient_12_0001.png").unlink()
    with pytest.raises(DatasetImportError, match="Patient_12"):
        import_segthor_png(root, tmp_path / "segthor.h5")


# ---------------------------------------------------------------------------------- NIfTI
@pytest.mark.realdata
def test_nifti_import_of_openkbp_keeps_geometry(tmp_path):
    folder = real("openkbp")
    images = [folder / "images" / f"{pt}.nii.gz" for pt in ("pt_168", "pt_172")]
    labels = [folder / "labels" / f"{pt}.nii.gz" for pt in ("pt_172", "pt_168")]  # order must not matter
    unlabeled = [folder / "unlabeled" / "pt_28.nii.gz"]
    out = import_nifti(images, labels, unlabeled, tmp_path / "kbp.h5", class_names=openkbp_class_names())
    with SliceStore.open(out) as store:
        assert store.class_names == openkbp_class_names() and len(store.class_names) == 8
        assert store.normalization.mode == "ct-window"  # guessed from the first CT
        assert store.volume_names("labeled") == ["pt_168", "pt_172"]
        assert store.volume_names("unlabeled") == ["pt_28"]
        for name, directory in (("pt_172", "images"), ("pt_28", "unlabeled")):
            reference = sitk.ReadImage(str(folder / directory / f"{name}.nii.gz"))
            stored = store.read_volume(name)
            info = store.volume_info(name)
            np.testing.assert_allclose(stored.geometry.spacing, reference.GetSpacing(), rtol=1e-6)
            np.testing.assert_allclose(stored.geometry.origin, reference.GetOrigin(), atol=1e-6)
            np.testing.assert_allclose(stored.geometry.direction, reference.GetDirection(), atol=1e-9)
            expected = Normalization().apply(sitk.GetArrayFromImage(reference))
            np.testing.assert_array_equal(stored.image, expected)
            assert info.original_dtype == "int16" and info.spacing_known
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels" / "pt_172.nii.gz")))
        np.testing.assert_array_equal(store.read_volume("pt_172").label, label)


def write_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def mr_like(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 500, size=(3, 6, 5)).astype(np.float32)


def test_nifti_defaults_class_names_and_pairs_nnunet_names(tmp_path):
    label = np.zeros((3, 6, 5), dtype=np.uint8)
    label[1, 2, 2] = 3
    image = write_nifti(tmp_path / "imagesTr" / "case_0000.nii.gz", mr_like(0))
    label_path = write_nifti(tmp_path / "labelsTr" / "case.nii.gz", label)
    val_image = write_nifti(tmp_path / "val" / "v1.nii.gz", mr_like(1))
    val_label = write_nifti(tmp_path / "val_labels" / "v1.nii.gz", label)
    out = import_nifti(
        [image], [label_path], [], tmp_path / "s.h5", val_images=[val_image], val_labels=[val_label]
    )
    with SliceStore.open(out) as store:
        assert store.class_names == ["background", "class_1", "class_2", "class_3"]
        assert store.normalization.mode == "mr-percentile"
        assert store.volume_names("labeled") == ["case_0000"] and store.volume_names("val") == ["v1"]
        assert store.volume_info("v1").geometry.spacing == (1.0, 1.0, 2.0)


def test_nifti_label_on_another_grid_is_refused(tmp_path):
    image = write_nifti(tmp_path / "images" / "a.nii.gz", mr_like(0))
    label = write_nifti(tmp_path / "labels" / "a.nii.gz", np.zeros((3, 6, 5), np.uint8), spacing=(1, 1, 3))
    out = tmp_path / "s.h5"
    with pytest.raises(DatasetImportError, match="grid") as error:
        import_nifti([image], [label], [], out, class_names=["background", "x"])
    assert str(label) in str(error.value) and "\n" not in str(error.value)
    assert not out.exists() and no_partial_files(tmp_path)


def test_nifti_pairing_errors_name_the_file(tmp_path):
    a = write_nifti(tmp_path / "images" / "a.nii.gz", mr_like(0))
    b_label = write_nifti(tmp_path / "labels" / "b.nii.gz", np.zeros((3, 6, 5), np.uint8))
    with pytest.raises(DatasetImportError, match="no label file") as error:
        import_nifti([a], [b_label], [], tmp_path / "s.h5")
    assert str(a) in str(error.value)
    with pytest.raises(DatasetImportError, match="pass label-free images as unlabeled"):
        import_nifti([a], None, [], tmp_path / "s.h5")
    with pytest.raises(DatasetImportError, match="already used"):
        import_nifti([], None, [a, a], tmp_path / "s.h5")


def test_nifti_label_out_of_class_range_names_the_file(tmp_path):
    image = write_nifti(tmp_path / "images" / "a.nii.gz", mr_like(0))
    label = np.zeros((3, 6, 5), np.uint8)
    label[0, 0, 0] = 5
    label_path = write_nifti(tmp_path / "labels" / "a.nii.gz", label)
    with pytest.raises(DatasetImportError, match=r"label ids 5 have no class") as error:
        import_nifti([image], [label_path], [], tmp_path / "s.h5", class_names=["background", "x"])
    assert str(label_path) in str(error.value)  # the map, not its image (the store named the image)
    assert not (tmp_path / "s.h5").exists()
    label[0, 0, 0] = 44
    label[0, 0, 1] = 255
    write_nifti(label_path, label.astype(np.uint16) * 2)  # id 510: no store holds it
    with pytest.raises(DatasetImportError, match="holds label id 510") as error:
        import_nifti([image], [label_path], [], tmp_path / "s.h5")
    assert str(label_path) in str(error.value)


def test_nifti_import_of_a_ct_and_an_mr_together_is_refused_not_windowed_as_ct(tmp_path):
    """The normalisation guessed from the first image was applied to all: an MR beside a CT was
    windowed as CT (its voxels saturated) into the training data without a word."""
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1000, 400, (3, 6, 5)).astype(np.int16)
    label = np.zeros((3, 6, 5), np.uint8)
    images = [
        write_nifti(tmp_path / "i" / "a_ct.nii.gz", ct),
        write_nifti(tmp_path / "i" / "b_mr.nii.gz", mr_like(0)),
    ]
    labels = [
        write_nifti(tmp_path / "l" / "a_ct.nii.gz", label),
        write_nifti(tmp_path / "l" / "b_mr.nii.gz", label),
    ]
    out = tmp_path / "s.h5"
    with pytest.raises(DatasetImportError, match="separate stores") as error:
        import_nifti(images, labels, [], out, class_names=["background", "x"])
    assert str(images[1]) in str(error.value) and "a_ct.nii.gz" in str(error.value)
    assert not out.exists() and no_partial_files(tmp_path)
    # chosen for all by the user, the same volumes are imported
    import_nifti(
        images,
        labels,
        [],
        out,
        class_names=["background", "x"],
        normalization=Normalization(mode="mr-percentile"),
    )
    with SliceStore.open(out) as store:
        assert store.volume_names("labeled") == ["a_ct", "b_mr"]


def test_a_head_ct_cropped_to_the_brain_imports_beside_whole_cts(tmp_path):
    """No air and no fat: CSF near 0 HU (its noise below), grey and white matter at 25-45 HU."""
    rng = np.random.default_rng(4)
    shape = (6, 20, 20)
    whole = rng.uniform(-1000, 400, shape).astype(np.int16)
    brain = rng.normal(35, 6, shape)
    brain[:, :4] = rng.normal(8, 6, (6, 4, 20))  # the ventricles
    label = np.zeros(shape, np.uint8)
    arrays = (("a", whole), ("b", brain.astype(np.int16)))
    images = [write_nifti(tmp_path / "i" / f"{n}.nii.gz", a) for n, a in arrays]
    labels = [write_nifti(tmp_path / "l" / f"{n}.nii.gz", label) for n in ("a", "b")]
    out = import_nifti(images, labels, [], tmp_path / "s.h5", class_names=["background", "x"])
    with SliceStore.open(out) as store:
        assert store.normalization.mode == "ct-window" and store.volume_names("labeled") == ["a", "b"]


def test_a_ct_cropped_to_soft_tissue_imports_beside_whole_cts(tmp_path):
    """No air in the crop, so its own guess is not the CT window; its negative HU say it is a CT."""
    rng = np.random.default_rng(1)
    whole = rng.uniform(-1000, 400, (3, 6, 5)).astype(np.int16)
    cropped = rng.uniform(-120, 200, (3, 6, 5)).astype(np.int16)
    label = np.zeros((3, 6, 5), np.uint8)
    images = [write_nifti(tmp_path / "i" / f"{n}.nii.gz", a) for n, a in (("a", whole), ("b", cropped))]
    labels = [write_nifti(tmp_path / "l" / f"{n}.nii.gz", label) for n in ("a", "b")]
    out = import_nifti(images, labels, [], tmp_path / "s.h5", class_names=["background", "x"])
    with SliceStore.open(out) as store:
        assert store.normalization.mode == "ct-window" and store.volume_names("labeled") == ["a", "b"]


@pytest.mark.parametrize("kind", ["z-scored", "one negative voxel", "resampling negatives"])
def test_an_mr_with_negative_values_is_not_taken_for_a_ct_cropped_to_soft_tissue(tmp_path, kind):
    """ "Any voxel below 0" let a z-scored MR (values -3..5: CT-windowed to 0.39-0.41, no contrast
    left) and a magnitude MR with one voxel at -3 left by resampling (94 % saturated) into a CT store.
    Shaped like the TotalSegmentator example MR (values -47..833, 1.3 % below 0, a wide spread), one
    then passed as a CT cropped to soft tissue and was CT-windowed, 38 % of its voxels saturated."""
    rng = np.random.default_rng(2)
    shape = (6, 20, 20)
    whole = rng.uniform(-1000, 400, shape).astype(np.int16)
    if kind == "z-scored":
        mr = rng.normal(0.0, 1.0, shape).astype(np.float32)
    elif kind == "one negative voxel":
        mr = rng.uniform(0, 900, shape).astype(np.float32)
        mr[0, 0, 0] = -3.0
    else:
        mr = rng.gamma(1.2, 200.0, shape).astype(np.float32)
        mr.ravel()[: int(0.013 * mr.size)] = rng.uniform(-47, 0, int(0.013 * mr.size))
    label = np.zeros(shape, np.uint8)
    images = [write_nifti(tmp_path / "i" / f"{n}.nii.gz", a) for n, a in (("a", whole), ("b", mr))]
    labels = [write_nifti(tmp_path / "l" / f"{n}.nii.gz", label) for n in ("a", "b")]
    with pytest.raises(DatasetImportError, match="separate stores") as error:
        import_nifti(images, labels, [], tmp_path / "s.h5", class_names=["background", "x"])
    assert str(images[1]) in str(error.value)


def _class_file(label_path: Path, names_by_id: dict[int, str]) -> None:
    classes = [{"id": 0, "name": "background"}] + [{"id": i, "name": n} for i, n in names_by_id.items()]
    record = {"format": "napari-cgs-class-table", "labels": label_path.name, "classes": classes}
    (label_path.parent / f"{label_path.name.split('.')[0]}_classes.json").write_text(json.dumps(record))


def test_nifti_labels_are_renumbered_by_the_class_file_beside_them(tmp_path):
    """The class file beside a map (an export, another tool's numbering) was ignored: its Mandible 1
    went into the store as the table's class 1, Brainstem, and a model learnt the one as the other."""
    label = np.zeros((3, 6, 5), np.uint8)
    label[0], label[1, :3], label[2, :1] = 1, 2, 5  # Mandible, Brainstem, Larynx by its class file
    image = write_nifti(tmp_path / "i" / "a.nii.gz", mr_like(0))
    label_path = write_nifti(tmp_path / "l" / "a.nii.gz", label)
    _class_file(label_path, {1: "Mandible", 2: "Brainstem", 3: "SpinalCord", 5: "Larynx"})
    names = openkbp_class_names()
    with SliceStore.open(
        import_nifti([image], [label_path], [], tmp_path / "s.h5", class_names=names)
    ) as store:
        stored = store.read_volume("a").label
    assert (stored[0] == names.index("Mandible")).all() and (stored[2, :1] == names.index("Larynx")).all()
    assert (stored[1, :3] == names.index("Brainstem")).all()
    # without --classes the class file names the store's classes (its gap closed up)
    with SliceStore.open(import_nifti([image], [label_path], [], tmp_path / "t.h5")) as store:
        assert store.class_names == ["background", "Mandible", "Brainstem", "SpinalCord", "Larynx"]
        assert (store.read_volume("a").label[2, :1] == 4).all()
    # an organ the store has no class for is refused, naming the map
    _class_file(label_path, {1: "Liver", 2: "Brainstem", 5: "Larynx"})
    with pytest.raises(CGSError, match="Liver") as error:
        import_nifti([image], [label_path], [], tmp_path / "u.h5", class_names=names)
    assert str(label_path) in str(error.value) and not (tmp_path / "u.h5").exists()


def test_nifti_label_map_given_as_a_scan_is_refused(tmp_path):
    label = np.zeros((3, 6, 5), np.uint8)
    label[1, 2:4, 2:4] = 2
    label[0, :2] = 1
    as_image = write_nifti(tmp_path / "i" / "a.nii.gz", label)
    label_path = write_nifti(tmp_path / "l" / "a.nii.gz", label)
    real = write_nifti(tmp_path / "i" / "b.nii.gz", mr_like(0))
    real_label = write_nifti(tmp_path / "l" / "b.nii.gz", label)
    for images, labels, unlabeled in (([as_image], [label_path], []), ([real], [real_label], [as_image])):
        with pytest.raises(DatasetImportError, match="looks like a label map") as error:
            import_nifti(images, labels, unlabeled, tmp_path / "s.h5", class_names=["background", "x", "y"])
        assert str(as_image) in str(error.value) and not (tmp_path / "s.h5").exists()


def test_nifti_class_files_of_several_maps_and_a_renamed_prediction(tmp_path):
    images = [write_nifti(tmp_path / "i" / f"{n}.nii.gz", mr_like(i)) for i, n in enumerate("ab")]
    label = np.zeros((3, 6, 5), np.uint8)
    label[0], label[1, :2] = 1, 2
    maps = [write_nifti(tmp_path / "l" / f"{n}.nii.gz", label) for n in "ab"]
    # each map's own table: the store's classes are all of theirs (the first file alone refused b's Spleen)
    _class_file(maps[0], {1: "Liver"})
    label_a = label.copy()
    label_a[1, :2] = 0
    maps[0] = write_nifti(maps[0], label_a)
    _class_file(maps[1], {1: "Spleen", 2: "Liver"})
    with SliceStore.open(import_nifti(images, maps, [], tmp_path / "s.h5")) as store:
        assert store.class_names == ["background", "Liver", "Spleen"]
        assert (store.read_volume("b").label[0] == 2).all() and (store.read_volume("a").label[0] == 1).all()
    # a map without a class file beside ones with: its ids cannot be matched by organ
    (tmp_path / "l" / "b_classes.json").unlink()
    with pytest.raises(DatasetImportError, match="no class file beside it") as error:
        import_nifti(images, maps, [], tmp_path / "t.h5")
    assert str(maps[1]) in str(error.value)
    # a prediction renamed to pair with its scan keeps the table of its old name: --classes names the ids
    (tmp_path / "l" / "a_classes.json").unlink()
    record = {
        "format": "napari-cgs-class-table",
        "labels": "b_labels.nii.gz",
        "classes": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "l" / "b_classes.json").write_text(json.dumps(record))
    with pytest.raises(CGSError, match="--classes"):
        import_nifti(images, maps, [], tmp_path / "u.h5")
    with SliceStore.open(
        import_nifti(images, maps, [], tmp_path / "v.h5", class_names=["background", "Liver", "Spleen"])
    ) as store:
        assert (store.read_volume("b").label[1, :2] == 2).all()


@pytest.mark.parametrize("copy_dtype", [np.int16, np.float32])
@pytest.mark.parametrize("other_split", ["val", "unlabeled"])
def test_one_scan_in_a_training_split_and_the_validation_split_is_refused(tmp_path, other_split, copy_dtype):
    """A renamed copy of a training scan given as --val-images (or a validation scan's copy as
    --unlabeled) was accepted: best.pt was then picked on a volume it was trained on. A copy saved
    with another value type (float32 of an int16 scan) is the same scan."""
    rng = np.random.default_rng(3)
    scan = rng.uniform(-1000, 400, (3, 6, 5)).astype(np.int16)
    label = np.zeros((3, 6, 5), np.uint8)
    train = write_nifti(tmp_path / "i" / "a.nii.gz", scan)
    train_label = write_nifti(tmp_path / "l" / "a.nii.gz", label)
    copy = write_nifti(tmp_path / "v" / "copy_of_a.nii.gz", scan.astype(copy_dtype))
    copy_label = write_nifti(tmp_path / "vl" / "copy_of_a.nii.gz", label)
    if other_split == "val":
        images, labels, unlabeled, val = [train], [train_label], [], ([copy], [copy_label])
    else:
        images, labels, unlabeled, val = [], [], [train], ([copy], [copy_label])
    with pytest.raises(DatasetImportError, match="a scan validated on must not be trained on") as error:
        import_nifti(
            images,
            labels,
            unlabeled,
            tmp_path / "s.h5",
            class_names=["background", "x"],
            val_images=val[0],
            val_labels=val[1],
        )
    assert "copy_of_a.nii.gz" in str(error.value) or "a.nii.gz" in str(error.value)
    assert not (tmp_path / "s.h5").exists()


# ------------------------------------------------------- what an import reads it never replaces
@pytest.mark.parametrize("which", ["image", "label"])
def test_nifti_output_naming_an_input_is_refused_even_with_overwrite(tmp_path, which):
    """-o naming one of the label maps (or images) with --overwrite replaced it with the store."""
    image = write_nifti(tmp_path / "images" / "a.nii.gz", mr_like(0))
    label = write_nifti(tmp_path / "labels" / "a.nii.gz", np.zeros((3, 6, 5), np.uint8))
    target = {"image": image, "label": label}[which]
    before = target.read_bytes()
    link = tmp_path / "store.h5"
    link.symlink_to(target)  # through a link as well
    for out in (target, link):
        with pytest.raises(DatasetImportError, match="is one of this import's inputs") as error:
            import_nifti([image], [label], [], out, class_names=["background", "x"], overwrite=True)
        assert str(out) in str(error.value) and "\n" not in str(error.value)
    assert target.read_bytes() == before


def test_acdc_and_segthor_outputs_naming_a_source_file_are_refused(tmp_path):
    acdc = tmp_path / "acdc"
    write_acdc_miniature(acdc)
    source = acdc / "data" / "patient002_frame01_slice_1.h5"
    before = source.read_bytes()
    with pytest.raises(DatasetImportError, match="is one of this import's inputs"):
        import_acdc(acdc, source, labeled_patients=1, overwrite=True)
    assert source.read_bytes() == before
    segthor = tmp_path / "segthor"
    write_segthor_miniature(segthor)
    for source in (segthor / "spacing_original_mm.json", next((segthor / "val" / "gt").iterdir())):
        before = source.read_bytes()
        with pytest.raises(DatasetImportError, match="is one of this import's inputs"):
            import_segthor_png(segthor, source, labeled_patients=1, overwrite=True)
        assert source.read_bytes() == before


def test_a_training_scan_stored_in_another_axis_order_is_no_validation_scan(tmp_path):
    """The same voxels with x reversed and the direction flipped to match (the same world grid) got
    past the check: it hashed the file's own layout, the store keeps the canonical one."""
    rng = np.random.default_rng(5)
    scan = rng.uniform(-1000, 400, (3, 6, 5)).astype(np.int16)
    label = np.zeros(scan.shape, np.uint8)
    train = write_nifti(tmp_path / "i" / "a.nii.gz", scan)
    train_label = write_nifti(tmp_path / "l" / "a.nii.gz", label)
    mirrored = sitk.GetImageFromArray(scan[:, :, ::-1].copy())
    mirrored.SetSpacing((1.0, 1.0, 2.0))
    mirrored.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    mirrored.SetOrigin((4.0, 0.0, 0.0))  # the last x voxel of the training scan
    (tmp_path / "v").mkdir()
    sitk.WriteImage(mirrored, str(tmp_path / "v" / "b.nii.gz"))
    val_label = write_nifti(tmp_path / "vl" / "b.nii.gz", label)
    val_label_image = sitk.ReadImage(str(val_label))
    val_label_image.CopyInformation(mirrored)
    sitk.WriteImage(val_label_image, str(val_label))
    with pytest.raises(DatasetImportError, match="a scan validated on must not be trained on"):
        import_nifti(
            [train],
            [train_label],
            [],
            tmp_path / "s.h5",
            class_names=["background", "x"],
            val_images=[tmp_path / "v" / "b.nii.gz"],
            val_labels=[val_label],
        )
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.realdata
def test_the_real_example_mr_after_a_ct_is_refused(tmp_path):
    folder = real("totalsegmentator_example")
    images = [folder / "example_ct_sm.nii.gz", folder / "example_mr_sm.nii.gz"]
    labels = tmp_path / "labels"
    labels.mkdir()
    for image, seg in zip(images, ("example_seg.nii.gz", "example_seg_mr.nii.gz"), strict=True):
        (labels / image.name).symlink_to(folder / seg)
    with pytest.raises(DatasetImportError, match="separate stores") as error:
        import_nifti(images, sorted(labels.iterdir()), [], tmp_path / "s.h5")
    assert "example_mr_sm.nii.gz" in str(error.value)


@pytest.mark.parametrize("content", ["group", "strings", "complex", "external link"])
def test_an_acdc_slice_that_holds_no_real_image_is_refused_in_one_line(tmp_path, content):
    """A group, strings (tracebacks), complex values (imaginary part dropped with a warning) or an
    external link (HDF5 read another file, anywhere on the disk, into the store)."""
    root = tmp_path / "acdc"
    write_acdc_miniature(root)
    path = root / "data" / "patient002_frame01_slice_1.h5"
    elsewhere = tmp_path / "elsewhere.h5"
    with h5py.File(elsewhere, "w") as file:
        file["image"] = np.full((9, 11), 7.0, np.float32)
    with h5py.File(path, "a") as file:
        del file["image"]
        if content == "group":
            file.create_group("image")
        elif content == "strings":
            file["image"] = np.full((9, 11), b"abc")
        elif content == "complex":
            file["image"] = np.full((9, 11), 1 + 2j, np.complex64)
        else:
            file["image"] = h5py.ExternalLink(str(elsewhere), "image")
    with pytest.raises(DatasetImportError) as error:
        import_acdc(root, tmp_path / "s.h5", labeled_patients=1)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "s.h5").exists()


def test_a_segthor_spacing_file_that_is_no_object_is_refused_in_one_line(tmp_path):
    root = tmp_path / "segthor"
    write_segthor_miniature(root)
    (root / "spacing_original_mm.json").write_text("3")
    with pytest.raises(DatasetImportError, match="expected a JSON object") as error:
        import_segthor_png(root, tmp_path / "s.h5", labeled_patients=1)
    assert "spacing_original_mm.json" in str(error.value)
