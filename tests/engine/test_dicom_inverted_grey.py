"""MONOCHROME1 CT series: read with their own Hounsfield units, not inverted by the DICOM library."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series_cases import SHAPE, edit, good_series, good_values, slice_file

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


def test_a_monochrome1_series_whose_inversion_cannot_be_measured_is_refused(tmp_path, monkeypatch):
    import cgs_engine.io.dicom_grey as grey

    folder = good_series(tmp_path / "ct")
    for number in range(1, SHAPE[0] + 1):
        edit(folder, number, _inverted_grey)

    def unreadable(*args, **kwargs):
        raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: no codec for this")

    monkeypatch.setattr(grey.sitk, "ReadImage", unreadable)
    with pytest.raises(VolumeIOError, match="0001.dcm.*MONOCHROME1.*cannot be undone.*MONOCHROME2"):
        read_volume(folder)


def test_a_jpeg_lossless_monochrome1_series_keeps_its_values(tmp_path):
    """The inversion was measured with pydicom's decoders, which lack JPEG Lossless here: the usual
    CT compression was refused. It is measured with ITK now, which reads what the series reads."""
    folder = good_series(tmp_path / "ct")
    compressed = tmp_path / "jpeg"
    compressed.mkdir()
    for number in range(1, SHAPE[0] + 1):
        image = sitk.ReadImage(str(slice_file(folder, number)))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(compressed / f"{number:04d}.dcm"))
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")
        try:
            writer.Execute(image)
        except RuntimeError:
            pytest.skip("this SimpleITK cannot write JPEG Lossless DICOM")
        original = pydicom.dcmread(slice_file(folder, number))
        written = pydicom.dcmread(compressed / f"{number:04d}.dcm")
        for keyword in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
            "SeriesInstanceUID",
            "FrameOfReferenceUID",
            "StudyInstanceUID",
            "RescaleSlope",
            "RescaleIntercept",
        ):
            if keyword in original:
                setattr(written, keyword, original.data_element(keyword).value)
        written.PhotometricInterpretation = "MONOCHROME1"
        written.save_as(compressed / f"{number:04d}.dcm")
    assert "1.2.840.10008.1.2.4" in str(pydicom.dcmread(compressed / "0001.dcm").file_meta.TransferSyntaxUID)
    assert np.array_equal(read_volume(compressed).array, good_values())
