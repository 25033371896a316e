"""read_volume: NIfTI, MetaImage, NRRD files and DICOM series folders into a :class:`Volume`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..volume import Geometry, Volume
from .claimed_size import check_claimed_size
from .dicom_series_checks import check_dicom_series, read_checked_series
from .errors import VolumeIOError, describe_read_failure, itk_reason, require_utf8_path
from .formats import NIFTI_EXTENSIONS, describe_supported, extension_of
from .integrity import check_nifti_complete
from .validate import check_label_map

VOLUME_KINDS = ("image", "labels", "map")


def read_volume(path: str | os.PathLike, kind: str = "image", series_uid: str | None = None) -> Volume:
    """Read one 3D volume; the array is indexed [z, y, x] and the geometry is SimpleITK's.

    ``kind="labels"`` also checks the voxels are label ids and stores them as uint8/uint16.
    ``series_uid`` picks the DICOM series of a folder that holds several (files ignore it).
    Every failure is a :class:`VolumeIOError` whose message names ``path`` as given.
    """
    if kind not in VOLUME_KINDS:
        raise ValueError(f"unknown volume kind {kind!r}; expected one of {VOLUME_KINDS}")
    name = os.fspath(path)
    location = Path(name)
    if not location.exists():
        raise VolumeIOError(name, "no such file or folder")
    require_utf8_path(name)
    if location.is_dir():
        image = read_dicom_series(location, name, series_uid)
    else:
        image = read_image_file(location, name)
    return volume_of(image, name, kind)


def volume_of(image: sitk.Image, name: str, kind: str) -> Volume:
    """The checked Volume of a SimpleITK image read from ``name``."""
    image = as_single_3d(image, name)
    array = sitk.GetArrayFromImage(image)
    if kind == "labels":
        array = check_label_map(array, name)
    else:
        check_finite_voxels(array, name)
    return Volume(array=array, geometry=geometry_of(image, name), kind=kind, source=name)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite_voxels(array: np.ndarray, name: str) -> None:
    """Images and maps must hold finite values that fit float32 (the engine computes in float32)."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        count = int(finite.size - np.count_nonzero(finite))
        raise VolumeIOError(name, f"image holds {count} NaN or infinite voxel value(s); it is damaged")
    if array.dtype.itemsize > 4 and array.size and float(np.abs(array).max()) > FLOAT32_MAX:
        raise VolumeIOError(
            name, f"image holds values beyond the float32 range (up to {float(np.abs(array).max()):.3g})"
        )


def read_image_file(location: Path, name: str) -> sitk.Image:
    extension = extension_of(location)
    if extension is None:
        raise VolumeIOError(name, f"unsupported file type (supported: {describe_supported()})")
    if location.stat().st_size == 0:
        raise VolumeIOError(name, "file is empty")
    if extension in NIFTI_EXTENSIONS:
        check_nifti_complete(location, name)
    check_claimed_size(location, name)
    try:
        return sitk.ReadImage(str(location))
    except RuntimeError as error:
        raise VolumeIOError(name, describe_read_failure(error)) from error


def read_dicom_series(folder: Path, name: str, series_uid: str | None = None) -> sitk.Image:
    """The one image series in ``folder`` (not its subfolders), checked to be a regular grid."""
    return read_checked_series(check_dicom_series(folder, name, series_uid), name)


def as_single_3d(image: sitk.Image, name: str) -> sitk.Image:
    """``image`` if it is one scalar 3D volume; a 4D image with one time point is reduced to 3D."""
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        problem = f"image has {components} values per voxel (vector/RGB); one value per voxel is needed"
        raise VolumeIOError(name, problem)
    dimension, size = image.GetDimension(), image.GetSize()
    if dimension == 4 and size[3] == 1:
        return _drop_fourth_axis(image, name)
    if dimension != 3:
        sizes = " x ".join(str(n) for n in size)
        raise VolumeIOError(name, f"image is {dimension}D ({sizes}); a single 3D volume is needed")
    return image


def _drop_fourth_axis(image: sitk.Image, name: str) -> sitk.Image:
    try:
        return image[:, :, :, 0]
    except RuntimeError as error:
        problem = f"4D image with one time point could not be reduced to 3D ({itk_reason(error)})"
        raise VolumeIOError(name, problem) from error


def geometry_of(image: sitk.Image, name: str) -> Geometry:
    try:
        return Geometry(spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=image.GetDirection())
    except ValueError as error:
        raise VolumeIOError(name, f"image has an invalid geometry ({error})") from error
