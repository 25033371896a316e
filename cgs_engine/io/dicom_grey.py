"""MONOCHROME1 series: undoing the inversion GDCM applies to their pixels.

MONOCHROME1 says only how to display the grey scale (high values dark); the stored values and the
rescale to Hounsfield units are those of any CT. GDCM (ITK's DICOM reader) inverts the stored
values of such a series before the rescale, so air at -1000 HU was read as +999 HU, with exit 0,
by every command. The inversion is an affine map of the stored values, ``c - stored``, whose
constant depends on the pixel format and the GDCM version. It is measured on the first slice: the
same file relabelled MONOCHROME2 (its pixel data untouched, so any transfer syntax ITK decodes
works, JPEG Lossless included) is read by ITK as well, and the two must sum to one constant. A
series whose inversion is not of that form is refused.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .dicom_folder import quiet_pydicom
from .errors import VolumeIOError, itk_reason, one_line

INVERTED_GREY = "MONOCHROME1"


def is_inverted_grey(header: Any) -> bool:
    return str(header.get("PhotometricInterpretation", "")).strip().upper() == INVERTED_GREY


def undo_inverted_grey(
    image: sitk.Image, files: Sequence[Path], headers: Sequence[Any], rescales: Sequence[tuple[float, float]]
) -> sitk.Image:
    """``image`` (read by ITK from ``files``, in slice order; ``rescales`` each slice's checked
    slope and intercept) with each voxel's own rescaled value."""
    if not is_inverted_grey(headers[0]):
        return image
    read = sitk.GetArrayViewFromImage(image)
    slope, intercept = rescales[0]
    # ITK's value v = slope * (c - s) + intercept, the true one slope * s + intercept: their sum
    # is slope * c + 2 * intercept on the whole slice, which gives c.
    sums = _first_slice_values(files[0]) + read[0].astype(np.float64)
    if float(np.ptp(sums)) > 1e-3 * abs(slope):
        raise VolumeIOError(
            files[0],
            "MONOCHROME1 (inverted grey scale) pixel values could not be recovered from what the "
            "DICOM library read; save the series as MONOCHROME2",
        )
    inversion = (float(np.median(sums)) - 2 * intercept) / slope
    totals = [slope * inversion + 2 * intercept for slope, intercept in rescales]  # true = total - read
    if all(float(total).is_integer() for total in totals) and read.dtype.kind in "iu":
        restored = _whole_numbers(read, totals)
    else:
        restored = np.empty(read.shape, np.float32)
        for index, total in enumerate(totals):
            np.subtract(np.float32(total), read[index], out=restored[index], dtype=np.float32)
    result = sitk.GetImageFromArray(restored)
    result.CopyInformation(image)
    return result


def _whole_numbers(read: np.ndarray, totals: list[float]) -> np.ndarray:
    """``total - read`` slice by slice in the narrowest signed type that holds it (int16 for a CT)."""
    lowest = min(total for total in totals) - float(read.max())
    highest = max(total for total in totals) - float(read.min())
    dtype = np.int16 if lowest >= -32768 and highest <= 32767 else np.int32
    restored = np.empty(read.shape, dtype)
    for index, total in enumerate(totals):
        restored[index] = np.int32(total) - read[index].astype(np.int32)
    return restored


def _first_slice_values(path: Path) -> np.ndarray:
    """The rescaled values of ``path`` as ITK reads them without the inversion."""
    import pydicom  # only for this rare series: the CLI starts without loading pydicom

    with tempfile.TemporaryDirectory(prefix="cgs-grey-") as folder:
        relabelled = Path(folder) / "slice.dcm"
        try:
            with quiet_pydicom():
                dataset = pydicom.dcmread(path, force=True)  # a slice without preamble too
                dataset.PhotometricInterpretation = "MONOCHROME2"
                dataset.save_as(relabelled)
            plain = sitk.ReadImage(str(relabelled), imageIO="GDCMImageIO")
        except RuntimeError as error:
            problem = itk_reason(error)
        except Exception as error:  # noqa: BLE001 - pydicom fails in many ways on a damaged file
            problem = one_line(str(error))[:100]
        else:
            return (
                sitk.GetArrayFromImage(plain).reshape(plain.GetHeight(), plain.GetWidth()).astype(np.float64)
            )
    raise VolumeIOError(
        path,
        f"MONOCHROME1 (inverted grey scale) image whose inversion cannot be undone ({problem}); "
        "save the series as MONOCHROME2",
    )
