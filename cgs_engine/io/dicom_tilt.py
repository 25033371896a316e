"""A gantry-tilted DICOM series, resampled on purpose onto a regular grid.

With a tilted gantry each slice lies a fixed step sideways of the one before, so the voxels form
a sheared box, which no ITK geometry (and no NIfTI or MetaImage file) can hold. The regular grid
chosen here keeps the first slice, the pixel grid and the slice planes; each later slice is moved
back by its sideways shift (linear interpolation within the slice, so no voxel moves between
planes), and what comes into view from beyond the scanned field is the image's lowest value
(air in CT). Only ``cgs convert --resample-tilt`` does this: the result no longer lies on the
series' own pixels, so contours drawn on it cannot be exported to that series.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..volume import Volume
from .dicom_series_checks import Tilt, check_dicom_series, read_checked_series
from .errors import VolumeIOError, require_utf8_path
from .readers import volume_of


def read_series_resampling_tilt(
    folder: str | os.PathLike, series_uid: str | None = None
) -> tuple[Volume, Tilt | None]:
    """The series in ``folder`` as a volume on a regular grid, and its tilt (None if it had none)."""
    name = os.fspath(folder)
    location = Path(name)
    if not location.is_dir():
        raise VolumeIOError(name, "not a folder (--resample-tilt reads a DICOM series folder)")
    require_utf8_path(name)
    series = check_dicom_series(location, name, series_uid, allow_tilt=True)
    image = read_checked_series(series, name)
    if series.tilt is not None:
        image = unsheared(image, series.tilt)
    return volume_of(image, name, "image"), series.tilt


def unsheared(image: sitk.Image, tilt: Tilt) -> sitk.Image:
    """``image`` (the headers' slices on the regular grid's geometry) with slice k moved back by k steps."""
    from scipy.ndimage import shift  # lazy: scipy costs 0.4 s and only tilted series need it (reader path)

    direction = np.reshape(image.GetDirection(), (3, 3))
    spacing = image.GetSpacing()
    # the step in pixels: along the rows' direction (columns, x) and the columns' direction (rows, y)
    columns_per_slice = float(np.dot(tilt.step, direction[:, 0])) / spacing[0]
    rows_per_slice = float(np.dot(tilt.step, direction[:, 1])) / spacing[1]
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    fill = float(array.min())
    resampled = np.empty_like(array)
    for index, plane in enumerate(array):
        # the output pixel (r, c) of slice k lies at the input pixel (r, c) - k * step
        offset = (index * rows_per_slice, index * columns_per_slice)
        resampled[index] = shift(plane, offset, order=1, mode="constant", cval=fill)
    result = sitk.GetImageFromArray(resampled)
    result.CopyInformation(image)
    return result
