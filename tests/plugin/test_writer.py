"""The npe2 labels writer, called the way npe2 calls it: (path, data, attributes)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from napari.layers import Image, Labels

from cgs_engine.io import VolumeIOError
from napari_cgs import GEOMETRY_KEY, labels_kwargs_like, layer_geometry, write_labels
from napari_cgs._reader import read_image_layers

# Oblique images: napari shows 2D slices without the out-of-plane part of the rotation, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")


def image_layer_from_file(path) -> Image:
    data, kwargs, _ = read_image_layers(str(path))[0]
    return Image(data, **kwargs)


def random_labels(shape, high=8, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.int32)


def write_layer(layer: Labels, path) -> list[str]:
    data, attributes, layer_type = layer.as_layer_data_tuple()
    assert layer_type == "labels"
    return write_labels(str(path), data, attributes)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_writer_restores_image_geometry_from_metadata(tmp_path, synth, geometry_case, suffix):
    image_path, reference = synth.write_case(tmp_path, geometry_case)
    image = image_layer_from_file(image_path)
    labels = Labels(random_labels(image.data.shape), **labels_kwargs_like(image))
    target = tmp_path / f"seg{suffix}"

    written = write_layer(labels, target)

    assert written == [str(target)]
    saved = sitk.ReadImage(str(target))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), labels.data)
    assert saved.GetPixelID() == sitk.sitkUInt8
    synth.assert_same_geometry(saved, reference)


def test_writer_falls_back_to_layer_transforms(tmp_path, synth, geometry_case):
    _, reference = synth.write_case(tmp_path, geometry_case)
    scale, translate, linear = layer_geometry(_layer_like(reference)).zyx_transform()
    labels = Labels(random_labels(synth.SHAPE_ZYX), scale=scale, translate=translate, rotate=linear)
    assert GEOMETRY_KEY not in labels.metadata
    if geometry_case == "identity":  # nothing says where it lies: refused, not written at 1 mm
        with pytest.raises(VolumeIOError, match="no scan geometry"):
            write_layer(labels, tmp_path / "seg.nii.gz")
        assert not (tmp_path / "seg.nii.gz").exists()
        return

    write_layer(labels, tmp_path / "seg.nii.gz")

    synth.assert_same_geometry(sitk.ReadImage(str(tmp_path / "seg.nii.gz")), reference)


def _layer_like(image: sitk.Image) -> Image:
    """An Image layer placed by transforms alone (no metadata), as another plugin might make it."""
    reverse = np.eye(3)[::-1]
    return Image(
        np.zeros(image.GetSize()[::-1]),
        scale=image.GetSpacing()[::-1],
        translate=image.GetOrigin()[::-1],
        rotate=reverse @ np.reshape(image.GetDirection(), (3, 3)) @ reverse,
    )


def test_writer_folds_negative_scale_into_direction(tmp_path):
    labels = Labels(random_labels((4, 5, 6)), scale=(2.0, -0.5, 0.5), translate=(10.0, 20.0, 30.0))
    write_layer(labels, tmp_path / "flipped.nii.gz")
    saved = sitk.ReadImage(str(tmp_path / "flipped.nii.gz"))
    np.testing.assert_allclose(saved.GetSpacing(), (0.5, 0.5, 2.0))
    np.testing.assert_allclose(saved.GetDirection(), (1, 0, 0, 0, -1, 0, 0, 0, 1), atol=1e-7)
    np.testing.assert_allclose(saved.GetOrigin(), (30.0, 20.0, 10.0), rtol=1e-6)


def test_labels_moved_in_the_viewer_are_written_on_their_images_grid_and_said(tmp_path, synth):
    """As the panel's export does: saved where shown, a map dragged 12 mm no longer paired with its
    CT voxel by voxel, in silence."""
    image_path, reference = synth.write_case(tmp_path, "lps_anisotropic")
    labels = Labels(random_labels(synth.SHAPE_ZYX), **labels_kwargs_like(image_layer_from_file(image_path)))
    labels.translate = np.array(labels.translate) + 12.0  # dragged in napari's transform mode

    with pytest.warns(UserWarning, match="moved in the viewer"):
        write_layer(labels, tmp_path / "seg.nii.gz")

    synth.assert_same_geometry(sitk.ReadImage(str(tmp_path / "seg.nii.gz")), reference)


def test_the_organ_names_of_a_labels_layer_are_written_beside_it(tmp_path, synth):
    from cgs_engine.classes.files import read_class_file

    image_path, _ = synth.write_case(tmp_path, "oblique")
    labels = Labels(
        random_labels(synth.SHAPE_ZYX, high=3), **labels_kwargs_like(image_layer_from_file(image_path))
    )
    labels.metadata["cgs_class_names"] = ["background", "Brainstem", "SpinalCord"]
    written = write_layer(labels, tmp_path / "seg.nii.gz")
    assert written == [str(tmp_path / "seg.nii.gz"), str(tmp_path / "seg_classes.json")]
    assert [e.name for e in read_class_file(written[1]).table.entries] == ["Brainstem", "SpinalCord"]
    # a class file in the way: nothing is written (never overwritten)
    with pytest.raises(VolumeIOError, match="seg2_classes.json"):
        (tmp_path / "seg2_classes.json").write_text("{}")
        write_layer(labels, tmp_path / "seg2.nii.gz")
    assert not (tmp_path / "seg2.nii.gz").exists()


def test_writer_refuses_to_overwrite(tmp_path):
    target = tmp_path / "seg.nii.gz"
    target.write_bytes(b"precious earlier segmentation")
    before = target.read_bytes()
    labels = Labels(random_labels((3, 4, 5)))

    with pytest.raises(VolumeIOError) as raised:
        write_layer(labels, target)

    assert "seg.nii.gz" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert target.read_bytes() == before


def test_writer_appends_nifti_extension_when_missing(tmp_path):
    written = write_layer(Labels(random_labels((3, 4, 5)), scale=(2.0, 0.8, 0.8)), tmp_path / "seg")
    assert written == [str(tmp_path / "seg.nii.gz")]
    assert sitk.ReadImage(written[0]).GetSize() == (5, 4, 3)


def test_writer_uses_uint16_for_many_labels(tmp_path):
    labels = Labels(random_labels((3, 4, 5), high=2), scale=(2.0, 0.8, 0.8))
    labels.data[0, 0, 0] = 300
    write_layer(labels, tmp_path / "many.nii.gz")
    saved = sitk.ReadImage(str(tmp_path / "many.nii.gz"))
    assert saved.GetPixelID() == sitk.sitkUInt16
    assert sitk.GetArrayFromImage(saved)[0, 0, 0] == 300


def test_writer_rejects_negative_labels(tmp_path):
    data = random_labels((3, 4, 5))
    data[0, 0, 0] = -1
    with pytest.raises(VolumeIOError, match="negative"):
        write_labels(str(tmp_path / "neg.nii.gz"), data, {"scale": (2, 1, 1)})
    assert not (tmp_path / "neg.nii.gz").exists()


def test_a_label_map_opens_as_labels_with_its_organ_names_and_saves_back(tmp_path, synth):
    """It came in as a gray Image layer, which napari could neither paint nor save as labels."""
    from cgs_engine.classes.files import class_file_entries, read_class_file, write_class_file

    label = np.zeros(synth.SHAPE_ZYX, np.uint8)
    label[1:3, 2:5, 3:7], label[4, :2, :2] = 1, 3
    path, reference = synth.write_case(tmp_path, "oblique", name="seg", array=label)
    write_class_file(
        tmp_path / "seg_classes.json", class_file_entries(["background", "Liver", "x", "Kidney_L"]), path
    )
    data, kwargs, layer_type = read_image_layers(str(path))[0]
    assert layer_type == "labels" and data.dtype == np.uint8
    assert kwargs["metadata"]["cgs_class_names"] == ["background", "Liver", "x", "Kidney_L"]
    (tmp_path / "out").mkdir()
    written = write_layer(Labels(data, **kwargs), tmp_path / "out" / "again.nii.gz")
    synth.assert_same_geometry(sitk.ReadImage(written[0]), reference)
    assert [e.name for e in read_class_file(written[1]).table.entries] == ["Liver", "x", "Kidney_L"]
    # a scan stays an image
    scan_path, _ = synth.write_case(tmp_path, "oblique", name="scan")
    assert read_image_layers(str(scan_path))[0][2] == "image"


@pytest.mark.parametrize("case", ["sagittal", "coronal"])
def test_labels_of_a_turned_scan_without_metadata_are_written_where_they_lie(tmp_path, synth, case):
    """napari's "New labels" copies the image's transforms, not its metadata: saved with no viewer to
    find the image in, the display turn was written as the geometry (the organ 300 mm away)."""
    image_path, reference = synth.write_case(tmp_path, case)
    kwargs = labels_kwargs_like(image_layer_from_file(image_path))
    del kwargs["metadata"]
    labels = Labels(random_labels(synth.SHAPE_ZYX), **kwargs)
    write_layer(labels, tmp_path / "seg.nii.gz")
    synth.assert_same_geometry(sitk.ReadImage(str(tmp_path / "seg.nii.gz")), reference)


def test_the_view_buttons_show_the_named_plane_of_a_turned_scan():
    from napari_cgs.panel.correct_section import view_dims

    turn = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # sagittal storage: x first
    assert view_dims("Sagittal", turn) == ((0, 1, 2), ("down", "right"))  # -z rows down: head up
    assert view_dims("Axial", turn) == ((1, 2, 0), ("down", "left"))  # -x columns left: patient's left right
    assert view_dims("Axial", np.eye(3)) == ((0, 1, 2), ("down", "right"))


def test_a_turned_layer_moved_in_transform_mode_keeps_the_files_direction(tmp_path, synth):
    """napari's transform mode moves a layer through its affine, which on a sagittally stored scan
    also holds the display turn: the move made the turn count as the geometry (direction lost,
    origin hundreds of mm off), in silence."""
    image_path, reference = synth.write_case(tmp_path, "sagittal")
    image = image_layer_from_file(image_path)
    kwargs = labels_kwargs_like(image)
    move = np.eye(4)
    move[1, 3] = 10.0  # 10 mm along the shown rows
    kwargs["affine"] = move @ np.asarray(kwargs["affine"])
    with pytest.warns(UserWarning, match="moved in the viewer"):
        write_layer(Labels(random_labels(synth.SHAPE_ZYX), **kwargs), tmp_path / "seg.nii.gz")
    synth.assert_same_geometry(sitk.ReadImage(str(tmp_path / "seg.nii.gz")), reference)
    # without the metadata: where it was moved to, the direction still the file's
    del kwargs["metadata"]
    moved = layer_geometry(Labels(random_labels(synth.SHAPE_ZYX), **kwargs))
    np.testing.assert_allclose(moved.direction, reference.GetDirection(), atol=1e-6)
    shift = np.asarray(moved.origin) - np.asarray(reference.GetOrigin())
    assert np.linalg.norm(shift) == pytest.approx(10.0, abs=1e-4)


def test_new_labels_moved_in_transform_mode_are_written_on_their_images_grid_and_said(
    make_napari_viewer, tmp_path, synth
):
    """napari's New labels carry no metadata; moved through their affine they were refused (the
    image was no longer found) or written where shown, in silence."""
    viewer = make_napari_viewer()
    image_path, reference = synth.write_case(tmp_path, "lps_anisotropic")
    data, kwargs, _ = read_image_layers(str(image_path))[0]
    image = viewer.add_image(data, **kwargs)
    viewer.layers.selection.active = image
    viewer._new_labels()
    labels = viewer.layers[-1]
    labels.data[1, 1, 1] = 1
    move = np.eye(4)
    move[1, 3] = 8.0
    labels.affine = move
    with pytest.warns(UserWarning, match="moved in the viewer"):
        written = write_layer(labels, tmp_path / "seg.nii.gz")
    synth.assert_same_geometry(sitk.ReadImage(written[0]), reference)


def test_a_label_map_saved_again_keeps_its_class_table_and_dicom_series(tmp_path, synth):
    """Rebuilt from the names alone, the table lost its colours and codes, gained a class_2 where the
    ids had a gap, and dropped ``made_on``: an export could then go out onto another patient's CT."""
    import json

    from cgs_engine.classes.files import read_class_file, write_class_file

    label = np.zeros(synth.SHAPE_ZYX, np.uint8)
    label[1:3, 2:5, 3:7], label[4, :2, :2] = 1, 3
    path, _ = synth.write_case(tmp_path, "oblique", name="seg", array=label)
    items = [
        {"id": 0, "name": "background", "color": [0, 0, 0]},
        {"id": 1, "name": "Brainstem", "color": [10, 200, 30]},
        {"id": 3, "name": "MyTumour", "color": [250, 5, 5], "tg263": "GTV_custom"},
    ]
    made_on = {"dicom_series": "1.2.3.4.5", "patient_id": "HN-017"}
    write_class_file(tmp_path / "seg_classes.json", items, path, made_on)
    data, kwargs, _ = read_image_layers(str(path))[0]
    layer = Labels(data, **kwargs)
    (tmp_path / "out").mkdir()
    written = write_layer(layer, tmp_path / "out" / "again.nii.gz")
    again = read_class_file(written[1])
    assert [dict(item) for item in again.items] == items and again.made_on == made_on
    assert json.loads((tmp_path / "out" / "again_classes.json").read_text())["labels"] == "again.nii.gz"
    layer.data[0, 0, 0] = 6  # painted with an id the table does not name
    with pytest.warns(UserWarning, match="label ids 6 have no organ name"):
        written = write_layer(layer, tmp_path / "out" / "more.nii.gz")
    assert read_class_file(written[1]).names[6] == "class_6"


def test_unnamed_labels_are_not_saved_where_another_maps_table_would_name_them(tmp_path, synth):
    # reopened, they showed the earlier map's organs (x_classes.json names x.nii.gz; x.nrrd pairs)
    from cgs_engine.classes.files import class_file_entries, write_class_file

    path, _ = synth.write_case(tmp_path, "oblique", name="x", array=np.zeros(synth.SHAPE_ZYX, np.uint8))
    write_class_file(tmp_path / "x_classes.json", class_file_entries(["background", "Mandible"]), path)
    image = image_layer_from_file(path)
    labels = Labels(random_labels(image.data.shape, high=3), **labels_kwargs_like(image))
    with pytest.raises(VolumeIOError, match="x_classes.json beside it names the organs of an earlier map"):
        write_layer(labels, tmp_path / "x.nrrd")
    assert not (tmp_path / "x.nrrd").exists()
    assert write_layer(labels, tmp_path / "y.nrrd") == [str(tmp_path / "y.nrrd")]
