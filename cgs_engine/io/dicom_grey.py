"""MONOCHROME1 series: undoing the inversion GDCM applies to their pixels.

MONOCHROME1 says only how to display the grey scale (high values dark); the stored values and the
rescale to Hounsfield units are those of any CT. GDCM (ITK's DICOM reader) inverts the stored
values of such a series before the rescale, so air at -1000 HU was read as +999 HU, with exit 0,
by every command. The inversion is an affine map of the stored values, ``c - stored``, whose
constant depends on the pixel format and the GDCM version; it is measured on the first slice
against its stored values read by pydicom, and undone on every slice. A series whose inversion
cannot be measured (pixel data pydicom cannot decode) or is not of that form is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .dicom_folder import quiet_pydicom
from .errors import VolumeIOError, one_line

INVERTED_GREY = "MONOCHROME1"


def is_inverted_grey(header: Any) -> bool:
    return str(header.get("PhotometricInterpretation", "")).strip().upper() == INVERTED_GREY


def undo_inverted_grey(image: sitk.Image, files: Sequence[Path], headers: Sequence[Any]) -> sitk.Image:
    """``image`` (read by ITK from ``files``, in slice order) with each voxel's own rescaled value."""
    if not is_inverted_grey(headers[0]):
        return image
    rescales = [_rescale(header) for header in headers]
    read = sitk.GetArrayFromImage(image).astype(np.float64)
    slope, intercept = rescales[0]
    # ITK's value v = slope * (c - s) + intercept, the true one slope * s + intercept: their sum
    # is slope * c + 2 * intercept on the whole slice, which gives c.
    sums = _stored_values(files[0]) * slope + intercept + read[0]
    if float(np.ptp(sums)) > 1e-3 * abs(slope):
        raise VolumeIOError(
            files[0],
            "MONOCHROME1 (inverted grey scale) pixel values could not be recovered from what the "
            "DICOM library read; save the series as MONOCHROME2",
        )
    inversion = (float(np.median(sums)) - 2 * intercept) / slope
    values = np.stack(
        [
            slope * inversion + 2 * intercept - plane
            for plane, (slope, intercept) in zip(read, rescales, strict=True)
        ]
    )
    restored = sitk.GetImageFromArray(_narrowest(values))
    restored.CopyInformation(image)
    return restored


def _rescale(header: Any) -> tuple[float, float]:
    slope = header.get("RescaleSlope", None)
    intercept = header.get("RescaleIntercept", None)
    return (1.0 if slope in (None, "") else float(slope)), (
        0.0 if intercept in (None, "") else float(intercept)
    )


def _stored_values(path: Path) -> np.ndarray:
    import pydicom  # only for this rare series: the CLI starts without loading pydicom

    try:
        with quiet_pydicom():
            return np.asarray(pydicom.dcmread(path).pixel_array, dtype=np.float64)
    except Exception as error:  # noqa: BLE001 - any decoder failure means the check cannot be made
        raise VolumeIOError(
            path,
            "MONOCHROME1 (inverted grey scale) image whose pixel data cannot be decoded to undo the "
            f"inversion ({one_line(str(error))[:100]}); save the series as MONOCHROME2",
        ) from None


def _narrowest(values: np.ndarray) -> np.ndarray:
    """Whole numbers in the smallest signed integer type that holds them (as ITK reads CTs)."""
    rounded = np.rint(values)
    if np.array_equal(rounded, values):
        for dtype in (np.int16, np.int32):
            limits = np.iinfo(dtype)
            if values.min() >= limits.min and values.max() <= limits.max:
                return rounded.astype(dtype)
    return values.astype(np.float32)
