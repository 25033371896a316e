"""Image file -> napari (through the plugin's manifest) -> Labels layer -> file, in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cgs_engine.volume import Geometry
from napari_cgs import GEOMETRY_KEY, labels_kwargs_like
from napari_cgs._layers import CT_SOFT_TISSUE_WINDOW, display_rotation, layers_support_units
from napari_cgs._reader import read_image_layers

PLUGIN = "napari-cgs"
# Oblique images: napari shows 2D slices without the out-of-plane part of the rotation, and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")


def plugin_registered() -> bool:
    import npe2

    try:
        npe2.PluginManager.instance().get_manifest(PLUGIN)
    except KeyError:
        return False
    return True


def open_image(viewer, path):
    """Through napari's own open path when the manifest is installed, else the reader directly."""
    if plugin_registered():
        layers = viewer.open(str(path), plugin=PLUGIN)
    else:
        layers = [viewer._add_layer_from_data(*t)[0] for t in read_image_layers(str(path))]
    assert len(layers) == 1
    return layers[0]


def save_labels(viewer, labels, path) -> list[str]:
    if plugin_registered():
        viewer.layers.selection.active = labels
        return viewer.layers.save(str(path), selected=True, plugin=PLUGIN)
    from napari_cgs import write_labels

    return write_labels(str(path), *labels.as_layer_data_tuple()[:2])


def some_voxels(shape):
    corners = [(0, 0, 0), tuple(s - 1 for s in shape)]
    rng = np.random.default_rng(7)
    return corners + [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(5)]


def test_layer_world_coordinates_are_lps_millimetres(make_napari_viewer, tmp_path, synth, geometry_case):
    viewer = make_napari_viewer()
    path, reference = synth.write_case(tmp_path, geometry_case)

    image = open_image(viewer, path)

    assert image.name == geometry_case
    # axial scans: the LPS millimetres; stored sagittally or coronally: those turned (a rotation,
    # never a mirror image) so that the stored slices are the ones napari slices through
    turn = display_rotation(Geometry.from_dict(image.metadata[GEOMETRY_KEY]))
    assert np.linalg.det(turn) == pytest.approx(1.0)
    assert (turn == np.eye(3)).all() == (geometry_case not in ("sagittal", "coronal"))
    for index in some_voxels(image.data.shape):
        np.testing.assert_allclose(
            image.data_to_world(index), turn @ synth.zyx_world_point(reference, index), rtol=1e-6, atol=1e-6
        )
    assert tuple(image.contrast_limits) == CT_SOFT_TISSUE_WINDOW
    if layers_support_units():
        assert tuple(str(u) for u in image.units) == ("millimeter",) * 3


def test_labels_round_trip_through_viewer(make_napari_viewer, tmp_path, synth, geometry_case):
    viewer = make_napari_viewer()
    path, reference = synth.write_case(tmp_path, geometry_case)
    image = open_image(viewer, path)
    painted = np.random.default_rng(2).integers(0, 6, size=image.data.shape).astype(np.uint8)
    labels = viewer.add_labels(painted, **labels_kwargs_like(image))
    for index in some_voxels(image.data.shape):
        np.testing.assert_allclose(labels.data_to_world(index), image.data_to_world(index))

    written = save_labels(viewer, labels, tmp_path / "seg.nii.gz")

    assert written == [str(tmp_path / "seg.nii.gz")]
    saved = sitk.ReadImage(written[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), painted)
    synth.assert_same_geometry(saved, reference)


def test_labels_without_metadata_use_layer_transforms(make_napari_viewer, tmp_path, synth, geometry_case):
    viewer = make_napari_viewer()
    path, reference = synth.write_case(tmp_path, geometry_case)
    image = open_image(viewer, path)
    kwargs = labels_kwargs_like(image)
    del kwargs["metadata"]
    painted = np.zeros(image.data.shape, dtype=np.uint8)
    painted[1:3, 2:5, 3:7] = 4
    labels = viewer.add_labels(painted, **kwargs)
    assert GEOMETRY_KEY not in labels.metadata

    written = save_labels(viewer, labels, tmp_path / "seg.nii.gz")

    saved = sitk.ReadImage(written[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), painted)
    synth.assert_same_geometry(saved, reference)


def test_save_refuses_existing_file(make_napari_viewer, tmp_path, synth):
    viewer = make_napari_viewer()
    path, _ = synth.write_case(tmp_path, "oblique")
    image = open_image(viewer, path)
    labels = viewer.add_labels(np.ones(image.data.shape, np.uint8), **labels_kwargs_like(image))
    before = path.read_bytes()

    with pytest.raises(Exception, match="oblique.nii.gz"):
        save_labels(viewer, labels, path)  # would replace the source image

    assert path.read_bytes() == before


def test_open_corrupt_file_reports_the_file(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"definitely not NIfTI")
    with pytest.raises(Exception, match="corrupt.nii.gz"):
        open_image(viewer, path)
    assert len(viewer.layers) == 0


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("parts", "scale", "ct_window"),
    [
        (("totalsegmentator_example", "example_ct_sm.nii.gz"), (3.0, 3.0, 3.0), True),
        (("totalsegmentator_example", "example_mr_sm.nii.gz"), None, False),
        (("openkbp", "images", "pt_168.nii.gz"), (2.5, 5.078, 5.078), True),
    ],
)
def test_real_volumes_open_in_viewer(make_napari_viewer, synth, parts, scale, ct_window):
    path = synth.shared_file(*parts)
    viewer = make_napari_viewer()

    image = open_image(viewer, path)

    assert image.name == parts[-1].removesuffix(".nii.gz")
    if scale is not None:
        np.testing.assert_allclose(image.scale, scale, rtol=1e-3)
    assert (tuple(image.contrast_limits) == CT_SOFT_TISSUE_WINDOW) == ct_window
    reference = sitk.ReadImage(str(path))
    corner = tuple(s - 1 for s in image.data.shape)
    np.testing.assert_allclose(
        image.data_to_world(corner), synth.zyx_world_point(reference, corner), rtol=1e-6
    )


@pytest.mark.parametrize(("case", "slider"), [("sagittal", "sagittal"), ("coronal", "coronal")])
def test_a_scan_stored_sagittally_or_coronally_is_drawn_head_up(
    make_napari_viewer, tmp_path, synth, case, slider
):
    """It was refused by napari's drawing ("Singular matrix") and left the viewer broken."""
    from napari_cgs.panel.display import name_slice_axes

    viewer = make_napari_viewer(show=True)
    path, _ = synth.write_case(tmp_path, case)
    image = open_image(viewer, path)
    viewer.window._qt_viewer.canvas.native.repaint()  # drawn, not only added
    name_slice_axes(viewer, image)
    assert viewer.dims.axis_labels[0] == slider
    # the world's z (superior) runs up the screen: rows of the slice go down from the head
    turn = display_rotation(Geometry.from_dict(image.metadata[GEOMETRY_KEY]))
    assert turn[1, 0] == -1.0
