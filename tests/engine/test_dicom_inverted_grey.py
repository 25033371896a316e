"""MONOCHROME1 CT series: read with their own Hounsfield units, not inverted by the DICOM library."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_series_cases import SHAPE, edit, good_series, good_values

from cgs_engine.io import VolumeIOError, read_volume


def _inverted_grey(dataset: pydicom.Dataset) -> None:
    dataset.PhotometricInterpretation = "MONOCHROME1"


def test_a_monochrome1_series_keeps_its_values(tmp_path):
    """GDCM inverts MONOCHROME1 pixels: air at -1000 HU was read as +999, exit 0, in every command."""
    folder = good_series(tmp_path / "ct")
    for number in range(1, SHAPE[0] + 1):
        edit(folder, number, _inverted_grey)
    volume = read_volume(folder)
    assert np.array_equal(volume.array, good_values())


def test_a_monochrome1_series_with_a_rescale_per_slice_keeps_its_values(tmp_path):
    folder = good_series(tmp_path / "ct")

    def doubled_slope(dataset: pydicom.Dataset) -> None:
        _inverted_grey(dataset)
        slope, intercept = float(dataset.get("RescaleSlope", 1)), float(dataset.get("RescaleIntercept", 0))
        stored = dataset.pixel_array.astype(np.int32)
        values = stored * slope + intercept
        dataset.RescaleSlope, dataset.RescaleIntercept = "2", "-1000"
        halved = np.floor((values + 1000) / 2).astype(dataset.pixel_array.dtype)
        dataset.PixelData = halved.tobytes()

    for number in range(1, SHAPE[0] + 1):
        edit(folder, number, doubled_slope if number == 3 else _inverted_grey)
    volume = read_volume(folder)
    expected = good_values().astype(np.float64)
    expected[2] = np.floor((expected[2] + 1000) / 2) * 2 - 1000
    assert np.array_equal(volume.array, expected)


def test_a_monochrome1_series_whose_pixels_cannot_be_checked_is_refused(tmp_path, monkeypatch):
    folder = good_series(tmp_path / "ct")
    for number in range(1, SHAPE[0] + 1):
        edit(folder, number, _inverted_grey)

    def undecodable(dataset):
        raise RuntimeError("no pixel data handler for JPEG 2000")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(undecodable))
    with pytest.raises(VolumeIOError, match="0001.dcm.*MONOCHROME1.*JPEG 2000.*MONOCHROME2"):
        read_volume(folder)
