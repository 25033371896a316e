"""RTSTRUCT contours that planning systems write and the even-odd rule misread: one polygon stored
twice on a slice, islands drawn across each other, structures narrower than a pixel. Each is read
as the organ it draws (a union, not a hole) or reported; holes still read as holes."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
from dicom_rt_cases import TABLE, two_organs
from dicom_series_cases import SHAPE, good_series

from cgs_engine.dicom import export_rtstruct, import_rtstruct, read_series
from cgs_engine.dicom.contours import fill_contours, trace_contours

BRAINSTEM_BOX = 10 * 12  # voxels per slice of two_organs' Brainstem, slices 2-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The small series and an RTSTRUCT of two_organs on it."""
    root = tmp_path_factory.mktemp("contours")
    series = read_series(good_series(root / "series"))
    path = export_rtstruct(two_organs(series.volume), series, TABLE, root / "RS.dcm").path
    return series, path


def square(top: float, left: float, bottom: float, right: float) -> np.ndarray:
    """A (row, column) polygon in pixel indices."""
    return np.array([[top, left], [top, right], [bottom, right], [bottom, left]], dtype=float)


def brainstem_contour(dataset, plane: int, series):
    """The Brainstem contour item on slice ``plane`` (its ContourImageSequence names that slice)."""
    uid = series.slices[plane].sop_instance_uid
    for item in dataset.ROIContourSequence[0].ContourSequence:
        if item.ContourImageSequence[0].ReferencedSOPInstanceUID == uid:
            return item
    raise AssertionError(f"no Brainstem contour on slice {plane}")


def add_contour(dataset, series, plane: int, polygon: np.ndarray | None = None) -> None:
    """A copy of the Brainstem contour of slice ``plane`` added to the Brainstem, with ``polygon``
    (row, column pixel indices) as its points if given."""
    item = copy.deepcopy(brainstem_contour(dataset, plane, series))
    if polygon is not None:
        set_points(item, series, plane, polygon)
    dataset.ROIContourSequence[0].ContourSequence.append(item)


def set_points(item, series, plane: int, polygon: np.ndarray) -> None:
    geometry = series.volume.geometry
    index = np.column_stack([polygon[:, 1], polygon[:, 0], np.full(len(polygon), plane)])  # x, y, z
    points = index @ (geometry.direction_matrix @ np.diag(geometry.spacing)).T + geometry.origin
    item.ContourData = [f"{value:.4f}" for value in points.ravel()]
    item.NumberOfContourPoints = len(polygon)


def changed_import(exported, tmp_path, change):
    series, path = exported
    dataset = pydicom.dcmread(path)
    change(dataset, series)
    target = tmp_path / "RS_changed.dcm"
    dataset.save_as(target)
    return import_rtstruct(target, series, TABLE)


def brainstem_per_slice(result) -> list[int]:
    return [int((result.labels.array[plane] == 1).sum()) for plane in range(SHAPE[0])]


def test_a_contour_stored_twice_keeps_its_slice_and_is_reported(exported, tmp_path):
    # the even-odd rule erased slice 3 of the organ without a word
    result = changed_import(exported, tmp_path, lambda dataset, series: add_contour(dataset, series, 3))
    assert brainstem_per_slice(result) == [0, 0] + [BRAINSTEM_BOX] * 4 + [0, 0]
    assert result.warnings == [
        "contours of one ROI repeated on a slice (the same pixels twice), read once: Brainstem slice 3"
    ]


def test_islands_drawn_across_each_other_are_their_union(exported, tmp_path):
    # a second island over the upper left corner of the box (rows 5-14, columns 8-19) on slice 4,
    # clear of the SpinalCord
    island = square(1.5, 2.5, 7.5, 9.5)  # rows 2-7, columns 3-9: 6 x 7 pixels, 3 x 2 shared
    result = changed_import(
        exported, tmp_path, lambda dataset, series: add_contour(dataset, series, 4, island)
    )
    expected = np.zeros(SHAPE[1:], bool)
    expected[5:15, 8:20] = True
    expected[2:8, 3:10] = True
    assert np.array_equal(result.labels.array[4] == 1, expected)  # 120 + 42 - 6, not 120 + 42 - 12
    assert result.warnings == [
        "contours of one ROI partly overlapping on a slice, read as their union (not as a hole): "
        "Brainstem slice 4"
    ]


def test_repeats_and_overlaps_are_named_by_slice_runs(exported, tmp_path):
    def change(dataset, series):
        for plane in (2, 3, 5):
            add_contour(dataset, series, plane)

    result = changed_import(exported, tmp_path, change)
    assert brainstem_per_slice(result)[2:6] == [BRAINSTEM_BOX] * 4
    assert result.warnings[0].endswith("read once: Brainstem slices 2-3, 5")


def test_holes_and_islands_in_holes_read_as_before_whatever_their_winding(exported, tmp_path):
    series, _ = exported
    labels = np.zeros(SHAPE, np.uint8)
    labels[3, 2:22, 2:30] = 1  # an island, a hole in it, an island in the hole, its hole
    labels[3, 5:19, 6:26] = 0
    labels[3, 7:17, 9:23] = 1
    labels[3, 9:15, 12:20] = 0
    labels[4, 2:10, 2:10] = 1  # and two islands apart
    labels[4, 12:20, 12:30] = 1
    path = export_rtstruct(series.volume.like(labels, "labels"), series, TABLE, tmp_path / "holes.dcm").path
    assert np.array_equal(import_rtstruct(path, series, TABLE).labels.array, labels)
    dataset = pydicom.dcmread(path)
    for item in dataset.ROIContourSequence[0].ContourSequence:
        points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3)
        item.ContourData = [f"{value:.4f}" for value in points[::-1].ravel()]  # all one winding
    dataset.save_as(tmp_path / "reversed.dcm")
    result = import_rtstruct(tmp_path / "reversed.dcm", series, TABLE)
    assert np.array_equal(result.labels.array, labels) and result.warnings == []


def test_contours_narrower_than_a_pixel_are_counted_and_warned(exported, tmp_path):
    # 0.6 pixels wide, between the pixel centres of rows 20-21 and columns 3-4: no centre inside
    tiny = square(20.2, 3.2, 20.8, 3.8)

    def change(dataset, series):
        add_contour(dataset, series, 2, tiny)
        add_contour(dataset, series, 3, tiny)

    result = changed_import(exported, tmp_path, change)
    assert brainstem_per_slice(result) == [0, 0] + [BRAINSTEM_BOX] * 4 + [0, 0]
    assert result.dropped.counts["no voxel"] == {"Brainstem": 2}
    assert result.warnings == [
        "2 contours left out, enclosing no pixel centre (narrower than a pixel), so reaching no voxel: "
        "Brainstem 2"
    ]


def test_an_roi_of_only_such_contours_is_not_a_silent_empty_organ(exported, tmp_path):
    def change(dataset, series):
        for item in dataset.ROIContourSequence[1].ContourSequence:  # SpinalCord, slices 3 and 4
            plane = [slice.sop_instance_uid for slice in series.slices].index(
                item.ContourImageSequence[0].ReferencedSOPInstanceUID
            )
            set_points(item, series, plane, square(12.1, 22.1, 12.9, 22.9))

    result = changed_import(exported, tmp_path, change)
    assert [(roi.roi_name, roi.voxels) for roi in result.rois] == [
        ("Brainstem", 4 * BRAINSTEM_BOX),
        ("SpinalCord", 0),
    ]
    assert any(line.endswith("reaching no voxel: SpinalCord 2") for line in result.warnings), result.warnings


def test_fill_slice_reads_nesting_not_parity():
    from cgs_engine.dicom.contours import fill_slice  # here: the module's other tests run on old code too

    outer, hole, island = (
        square(1.5, 1.5, 12.5, 12.5),
        square(3.5, 3.5, 10.5, 10.5),
        square(5.5, 5.5, 8.5, 8.5),
    )
    nested = fill_slice([island, outer, hole], (15, 15))  # in any order
    assert np.array_equal(
        nested.mask,
        fill_contours([outer], (15, 15))
        ^ fill_contours([hole], (15, 15))
        ^ fill_contours([island], (15, 15)),
    )
    assert (nested.repeated, nested.overlapping, nested.empty) == (0, 0, 0)
    twice = fill_slice([outer, hole, hole[::-1]], (15, 15))  # a hole stored twice stays one hole
    assert twice.mask.sum() == 11 * 11 - 7 * 7 and twice.repeated == 1
    # a ring thinner than a pixel holds no pixel centre: inner and outer cover the same pixels, yet
    # the inner lies inside: a hole, as before (nothing), not a repeat (the whole square)
    ring = fill_slice([square(1.5, 1.5, 6.5, 6.5), square(1.8, 1.8, 6.2, 6.2)], (9, 9))
    assert ring.mask.sum() == 0 and ring.repeated == 0
    # a twin with rounding noise, each vertex 0.01 pixels off, is a repeat, not a hole
    noisy = fill_slice([outer, outer + 0.01 * np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]])], (15, 15))
    assert noisy.mask.sum() == 11 * 11 and noisy.repeated == 1


def test_traced_masks_still_fill_back_exactly():
    from cgs_engine.dicom.contours import fill_slice

    rng = np.random.default_rng(1)
    for _ in range(50):
        mask = rng.random((19, 21)) < rng.uniform(0.1, 0.9)
        filled = fill_slice(trace_contours(mask), mask.shape)
        assert np.array_equal(filled.mask, mask)
        assert (filled.repeated, filled.overlapping, filled.empty) == (0, 0, 0)


def _even_odd(contours, shape) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    for contour in contours:
        inside = np.zeros(shape, dtype=bool)
        rows, columns = polygon(contour[:, 0], contour[:, 1], shape)
        inside[rows, columns] = True
        mask ^= inside
    return mask


def test_holes_and_islands_near_the_edge_around_them_stay_nested():
    """Judged by their vertices alone, a hole touching its island at a vertex was filled and an
    island 0.05 px inside its hole's edge erased (both read as overlapping contours)."""
    shape = (40, 40)
    outer, hole = square(2.5, 2.5, 35.5, 35.5), square(8.5, 8.5, 29.5, 29.5)
    touching = np.array([[2.5, 18.0], [20.0, 30.0], [20.0, 6.0]])  # its top vertex on the outer edge
    near = square(8.55, 14.5, 22.5, 22.5)
    for contours in ([outer, touching], [outer, hole, near]):
        np.testing.assert_array_equal(fill_contours(contours, shape), _even_odd(contours, shape))


def test_contours_that_cross_or_shrink_a_little_are_no_holes():
    """Nested by pixels alone, a patch crossing its island's edge by 0.4 px (no pixel centre out)
    was erased as a hole, and a copy stored 0.05 px smaller wiped the organ's slice."""
    shape = (32, 32)
    island = square(4.5, 4.5, 20.5, 20.5)
    patch = square(10.5, 16.5, 14.5, 20.9)
    np.testing.assert_array_equal(fill_contours([island, patch], shape), fill_contours([island], shape))
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = np.c_[np.sin(angles), np.cos(angles)]
    round_organ = np.array([16.2, 15.7]) + 9.97 * circle
    shrunk_copy = np.array([16.2, 15.7]) + 9.92 * circle
    np.testing.assert_array_equal(
        fill_contours([round_organ, shrunk_copy], shape), fill_contours([round_organ], shape)
    )


def test_an_island_crossing_into_or_across_a_hole_stays_an_island():
    """An island in a hole crossing the hole's edge by 0.4 px was read as a hole of the outer island,
    and an island drawn across its neighbour's edge into that one's hole lost its pixels in it."""
    shape = (30, 30)
    outer, hole = square(1.5, 1.5, 27.5, 27.5), square(7.5, 7.5, 21.5, 21.5)
    crossing_island = square(11.5, 11.5, 17.5, 21.9)  # in the hole, 0.4 px past its right edge
    mask = fill_contours([outer, hole, crossing_island], shape)
    np.testing.assert_array_equal(mask, fill_contours([outer, hole, square(11.5, 11.5, 17.5, 21.5)], shape))
    across = square(10.5, 15.5, 14.5, 29.5)  # from the hole out across the outer edge
    mask = fill_contours([outer, hole, across], shape)
    np.testing.assert_array_equal(mask, fill_contours([outer, hole], shape) | fill_contours([across], shape))


def test_contours_through_pixel_centres_read_the_same_on_every_series(exported, tmp_path):
    """rt-utils and OpenCV-traced exports run a contour through the centres of the organ's boundary
    pixels. Which of them counted as inside was decided by the float noise of the mm -> pixel
    conversion: a 7 x 7 organ came back as 36 pixels, a row and a column lost, on some series."""
    from pydicom.valuerep import DSfloat

    geometry = exported[0].volume.geometry
    to_world = geometry.direction_matrix @ np.diag(geometry.spacing)

    def through_centres(dataset, series):
        for plane in (2, 3, 4, 5):
            top, left = 3 + plane, 2 + 3 * plane
            corners = square(top, left, top + 6, left + 6)
            index = np.column_stack([corners[:, 1], corners[:, 0], np.full(4, plane)])
            points = index @ to_world.T + geometry.origin
            item = brainstem_contour(dataset, plane, series)
            item.ContourData = [DSfloat(float(v), auto_format=True) for v in points.ravel()]
            item.NumberOfContourPoints = 4

    result = changed_import(exported, tmp_path, through_centres)
    assert brainstem_per_slice(result) == [0, 0, 49, 49, 49, 49, 0, 0]


def test_our_own_contours_at_the_image_edge_are_not_reported_as_cut(tmp_path):
    """Written to 3 decimals of a millimetre, an organ touching the border lay 0.001 pixel beyond it,
    and reading our own export back warned "cut at its edge" though nothing was."""
    from dicom_series_cases import good_values, write_ct_series

    from cgs_engine.volume import Geometry, Volume

    # fine pixels far from the origin: a thousandth of a millimetre is 0.002 pixel
    geometry = Geometry(spacing=(0.4883, 0.4883, 0.6), origin=(-249.7559, -180.3, -1200.15))
    folder = tmp_path / "series"
    write_ct_series(Volume(good_values().astype(np.float32), geometry, "image", "fine"), folder)
    series = read_series(folder)
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 0:7, 25:32] = 1  # touches the first row and the last column
    labels[2:6, 17:24, 0:5] = 1  # the last row and the first column
    volume = Volume(labels, series.volume.geometry, "labels")
    path = export_rtstruct(volume, series, TABLE, tmp_path / "RS.dcm").path
    result = import_rtstruct(path, series, TABLE)
    np.testing.assert_array_equal(result.labels.array, labels)
    assert result.warnings == []


def densified(polygon: np.ndarray, per_edge: int) -> np.ndarray:
    """The same polygon with ``per_edge`` points along each edge: the same shape, a long ContourData."""
    following = np.roll(polygon, -1, axis=0)
    steps = np.linspace(0.0, 1.0, per_edge, endpoint=False)[None, :, None]
    return (polygon[:, None] + steps * (following - polygon)[:, None]).reshape(-1, 2)


def test_a_contour_over_64_kib_stored_as_un_is_read_as_numbers(exported, tmp_path):
    """A DS value over 65,534 bytes must be written as UN in Explicit VR (another tool's file, and our
    export before): inside a sequence its bytes were read as numbers, the ASCII codes of the text,
    and the file was refused ("ContourData has 124604 coordinates, not 3 per point")."""
    series, path = exported
    dataset = pydicom.dcmread(path)
    plane = 3
    item = brainstem_contour(dataset, plane, series)
    set_points(item, series, plane, densified(square(5, 8, 14, 19), 700))
    with pytest.warns(UserWarning, match="UN"):
        dataset.save_as(tmp_path / "RS_long.dcm")
    stored = pydicom.dcmread(tmp_path / "RS_long.dcm")
    assert brainstem_contour(stored, plane, series)["ContourData"].VR == "UN"
    result = import_rtstruct(tmp_path / "RS_long.dcm", series, TABLE)
    np.testing.assert_array_equal(result.labels.array, two_organs(series.volume).array)


def test_our_export_of_a_contour_over_64_kib_is_written_so_it_reads_back(exported, tmp_path, monkeypatch):
    from cgs_engine.dicom import rtstruct_export

    series, _ = exported
    monkeypatch.setattr(
        rtstruct_export, "trace_contours", lambda mask: [densified(c, 700) for c in trace_contours(mask)]
    )
    labels = two_organs(series.volume)
    path = export_rtstruct(labels, series, TABLE, tmp_path / "RS.dcm").path
    written = pydicom.dcmread(path)
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert {c["ContourData"].VR for r in written.ROIContourSequence for c in r.ContourSequence} == {"DS"}
    np.testing.assert_array_equal(import_rtstruct(path, series, TABLE).labels.array, labels.array)


def test_a_structure_set_without_preamble_is_read_and_a_scan_is_refused_plainly(exported, tmp_path):
    """Older planning systems write no preamble and no 'DICM' (the series reader takes such CT
    slices); it was refused with pydicom's advice to pass force=True, an argument the CLI lacks."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    from cgs_engine.dicom import DicomError

    series, path = exported
    raw = tmp_path / "RS_raw.dcm"
    with open(raw, "wb") as stream:
        handle = DicomFileLike(stream)
        handle.is_little_endian, handle.is_implicit_VR = True, True
        write_dataset(handle, pydicom.Dataset(pydicom.dcmread(path)))
    result = import_rtstruct(raw, series, TABLE)
    np.testing.assert_array_equal(result.labels.array, two_organs(series.volume).array)
    scan = tmp_path / "ct.nii.gz"
    scan.write_bytes(b"\x1f\x8b" + bytes(300))
    with pytest.raises(DicomError) as error:
        import_rtstruct(scan, series, TABLE)
    assert "not a DICOM file" in str(error.value) and "force" not in str(error.value)
