"""The one check of a DICOM series: a regular grid or a one-line refusal, the same for every reader."""

from __future__ import annotations

import os
import stat

import numpy as np
import pydicom
import pytest
from dicom_series_cases import (
    BROKEN,
    GEOMETRY,
    SHAPE,
    VALID,
    damaged_copy,
    edit,
    good_series,
    good_values,
    shift,
)

from cgs_engine.dicom import read_series
from cgs_engine.errors import CGSError
from cgs_engine.io import VolumeIOError, read_volume


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return good_series(tmp_path_factory.mktemp("series") / "good")


def refusal(reader, folder) -> str:
    with pytest.raises(CGSError) as error:
        reader(folder)
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(folder)), message
    return message


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_damaged_series_is_refused_alike_by_every_reader(good, tmp_path, case):
    damage, words = BROKEN[case]
    folder = damaged_copy(good, tmp_path / case, damage)
    message = refusal(read_volume, folder)
    assert words in message, message
    assert refusal(read_series, folder) == message  # the RT commands refuse exactly what predict refuses


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_variations_read_exactly(good, tmp_path, case):
    folder = damaged_copy(good, tmp_path / case, VALID[case])
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, good_values())
    assert volume.geometry.is_close(GEOMETRY), volume.geometry
    assert read_series(folder).volume.geometry == volume.geometry


def test_itk_alone_reads_these_series_wrong(good, tmp_path):
    """Why the check exists: ITK averages a missing slice into the spacing and reads a tilt as a box."""
    import SimpleITK as sitk

    def itk_read(folder):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            return reader.Execute()
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(True)

    missing = itk_read(damaged_copy(good, tmp_path / "missing", BROKEN["missing-slice"][0]))
    assert missing.GetDepth() == SHAPE[0] - 1 and missing.GetSpacing()[2] != pytest.approx(2.5)
    tilted = itk_read(damaged_copy(good, tmp_path / "tilt", BROKEN["gantry-tilt"][0]))
    assert np.allclose(np.reshape(tilted.GetDirection(), (3, 3)), np.eye(3))  # a box: the shift is gone


def test_two_series_are_listed_and_either_can_be_picked(good, tmp_path):
    folder = damaged_copy(good, tmp_path / "two", BROKEN["two-series"][0])
    uids = sorted({str(pydicom.dcmread(p).SeriesInstanceUID) for p in folder.iterdir()})
    message = refusal(read_volume, folder)
    assert all(uid in message for uid in uids) and "--series UID" in message
    for uid in uids:
        volume = read_volume(folder, series_uid=uid)
        np.testing.assert_array_equal(volume.array, good_values())
        assert read_series(folder, uid).series_instance_uid == uid
    with pytest.raises(VolumeIOError, match="holds no image series 1.2.3; it holds"):
        read_volume(folder, series_uid="1.2.3")


def test_small_rounding_of_positions_is_accepted(good, tmp_path):
    folder = damaged_copy(good, tmp_path / "rounded", lambda f: None)
    for number in range(1, SHAPE[0] + 1):  # positions off by up to 0.02 mm, as DS rounding leaves them
        edit(folder, number, lambda d, n=number: shift(d, (0.002 * (n % 3), -0.01 * (n % 2), 0.02 * (n % 2))))
    geometry = read_volume(folder).geometry
    assert np.allclose(geometry.spacing, GEOMETRY.spacing, atol=0.01)
    assert np.allclose(geometry.origin, GEOMETRY.origin, atol=0.05)


def test_a_tilt_names_its_angle_and_an_irregular_shift_its_slice(good, tmp_path):
    tilted = damaged_copy(good, tmp_path / "tilt", BROKEN["gantry-tilt"][0])
    assert "gantry tilt of 20 deg" in refusal(read_volume, tilted)
    one_off = damaged_copy(good, tmp_path / "one-off", lambda f: edit(f, 5, lambda d: shift(d, (3.0, 0, 0))))
    assert "slice 0005.dcm lies 3 mm sideways of the others" in refusal(read_volume, one_off)


def test_series_folders_are_written_with_the_users_permissions(tmp_path):
    saved = os.umask(0o027)
    try:
        folder = good_series(tmp_path / "series")
    finally:
        os.umask(saved)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o640 for p in folder.iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["series"]  # no staging folder left


def test_a_tilt_is_resampled_only_when_asked_and_every_voxel_lands_where_it_was_scanned(good, tmp_path):
    from cgs_engine.io.dicom_tilt import read_series_resampling_tilt

    tilted = damaged_copy(good, tmp_path / "tilt", BROKEN["gantry-tilt"][0])
    volume, tilt = read_series_resampling_tilt(tilted)
    assert tilt is not None and tilt.degrees == pytest.approx(20, abs=0.01)
    assert volume.geometry.is_close(GEOMETRY)  # the first slice, the pixel grid, the slice planes
    # Slice k was scanned k * 0.91 mm further along y (rows); the values rise by 3 per row, so the
    # value now at (k, r, c) is the scanned one of row r - k * 0.91 / 0.9, all the way up the slices.
    shift = 2.5 * np.tan(np.radians(20)) / GEOMETRY.spacing[1]
    k, r = np.indices(SHAPE)[:2]
    scanned = (r - k * shift) >= 0
    expected = good_values() - 3 * k * shift
    np.testing.assert_allclose(volume.array[scanned], expected[scanned], atol=1e-3)
    assert (volume.array[~scanned] == good_values().min()).all()  # beyond the scanned field: air
    straight, none = read_series_resampling_tilt(good)
    assert none is None and np.array_equal(straight.array, good_values())
    with pytest.raises(VolumeIOError, match="not evenly spaced"):  # only a tilt is resampled
        read_series_resampling_tilt(damaged_copy(good, tmp_path / "missing", BROKEN["missing-slice"][0]))


def test_a_series_with_slices_without_preamble_exports_and_imports_a_seg(good, tmp_path):
    """Read with their series now, such slices made `cgs seg export` fail with a traceback (the
    slices' headers were read again without force)."""
    from dicom_series_cases import VALID

    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.classes.table import derive_class_table
    from cgs_engine.dicom import export_seg, import_seg
    from cgs_engine.volume import Volume

    folder = damaged_copy(good, tmp_path / "bare", VALID["end-slices-without-preamble"])
    series = read_series(folder)
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, 4:9, 5:11] = 1
    table = derive_class_table(openkbp_class_names())
    export_seg(Volume(labels, series.volume.geometry, "labels"), series, table, tmp_path / "SEG.dcm")
    back = import_seg(tmp_path / "SEG.dcm", series, table)
    np.testing.assert_array_equal(back.labels.array, labels)
