"""read_volume: NIfTI, MetaImage, NRRD files and DICOM series folders into a :class:`Volume`."""

from __future__ import annotations

import logging
import os
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import display_path
from ..native_output import captured_native_stderr
from ..volume import Geometry, Volume
from .claimed_size import check_claimed_size
from .dicom_series_checks import check_dicom_series, read_checked_series
from .errors import VolumeIOError, describe_read_failure, itk_reason, require_utf8_path
from .formats import NIFTI_EXTENSIONS, describe_supported, extension_of, itk_image_io
from .header_rules import ORTHOGONAL_TOLERANCE, check_image_header, check_label_scaling, require_regular_file
from .integrity import check_nifti_complete
from .nifti_twin import itk_readable
from .validate import check_label_map
from .written import stored_data_bytes

logger = logging.getLogger(__name__)

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
        if kind == "labels":
            check_label_scaling(location, name)
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


def check_volume_file(
    path: str | os.PathLike, series_uid: str | None = None
) -> tuple[Geometry, tuple[int, int, int]] | None:
    """Every check of :func:`read_volume` short of decoding the voxels, including that all voxel
    data is there: for commands that take several inputs and must refuse a damaged one before
    writing anything for the others. A DICOM folder gets the whole series check (headers only).
    Returns the geometry and [z, y, x] shape the headers give (None where the full read must say
    what is wrong), for the checks a command makes of its own."""
    name = os.fspath(path)
    location = Path(name)
    if not location.exists():
        raise VolumeIOError(name, "no such file or folder")
    require_utf8_path(name)
    if location.is_dir():
        series = check_dicom_series(location, name, series_uid)
        first = series.headers[0]
        return series.geometry, (len(series.files), int(first.Rows), int(first.Columns))
    _checked_before_reading(location, name)
    return _check_header_shape(location, name)


def _checked_before_reading(location: Path, name: str) -> None:
    """The file, its header and the length of its voxel data, checked before ITK reads it."""
    require_regular_file(location, name)  # a pipe would block ITK forever, a device feed it noise
    extension = extension_of(location)
    if extension is None:
        raise VolumeIOError(name, f"unsupported file type (supported: {describe_supported()})")
    if location.stat().st_size == 0:
        raise VolumeIOError(name, "file is empty")
    layout = check_image_header(location, name)
    if extension in NIFTI_EXTENSIONS:
        check_nifti_complete(location, name)
    claimed = check_claimed_size(location, name, layout)
    if layout.encoding == "gzip":
        # NRRD's reader fills a gzip stream that ends early with zeros without a word
        try:
            present = stored_data_bytes(layout, claimed)
        except (OSError, EOFError, zlib.error):
            present = -1
        if present < claimed:
            raise VolumeIOError(
                name, "file is truncated or corrupt (its compressed voxel data does not inflate to its size)"
            )
        if layout.compressed_bytes is not None:
            _check_declared_stream_length(layout, claimed, name)


def _check_declared_stream_length(layout, claimed: int, name: str) -> None:
    """A MetaImage's CompressedDataSize must hold the whole stream: ITK inflates that many bytes
    only, and the voxels after them were memory never written (a different volume at each read)."""
    try:
        inflated = stored_data_bytes(layout, claimed, limit=layout.compressed_bytes)
    except (OSError, EOFError, zlib.error):
        inflated = -1
    if inflated < claimed:
        raise VolumeIOError(
            name,
            f"header CompressedDataSize = {layout.compressed_bytes} is shorter than its compressed voxel "
            "data (the reader would fill the rest with garbage)",
        )


def read_image_file(location: Path, name: str) -> sitk.Image:
    _checked_before_reading(location, name)
    with captured_native_stderr() as chatter, itk_readable(location) as readable:
        try:
            image = sitk.ReadImage(str(readable), imageIO=itk_image_io(location))
        except RuntimeError as error:
            failure = error
        else:
            failure = None
    if failure is not None:
        problem = describe_read_failure(failure)
        if chatter.summary():
            problem += f"; the image library said: {chatter.summary()}"
        raise VolumeIOError(name, problem) from failure
    if chatter.summary():
        logger.warning("%s: the image library said: %s", display_path(name), chatter.summary())
    return image


def read_dicom_series(folder: Path, name: str, series_uid: str | None = None) -> sitk.Image:
    """The one image series in ``folder`` (not its subfolders), checked to be a regular grid."""
    return read_checked_series(check_dicom_series(folder, name, series_uid), name)


def as_single_3d(image: sitk.Image, name: str) -> sitk.Image:
    """``image`` if it is one scalar 3D volume; a 4D image with one time point is reduced to 3D."""
    _check_single_3d(image.GetPixelID(), image.GetNumberOfComponentsPerPixel(), image.GetSize(), name)
    if image.GetDimension() == 4:
        return _drop_fourth_axis(image, name)
    return image


def _check_single_3d(pixel_id: int, components: int, size: tuple[int, ...], name: str) -> None:
    """One scalar 3D volume (or 4D with one time point), from an image or only its header."""
    if pixel_id in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        # numpy would drop the imaginary part with a warning and go on
        raise VolumeIOError(name, "image holds complex voxel values; one real value per voxel is needed")
    if components > 1:
        problem = f"image has {components} values per voxel (vector/RGB); one value per voxel is needed"
        raise VolumeIOError(name, problem)
    dimension = len(size)
    if dimension != 3 and not (dimension == 4 and size[3] == 1):
        sizes = " x ".join(str(n) for n in size)
        raise VolumeIOError(name, f"image is {dimension}D ({sizes}); a single 3D volume is needed")


def _check_header_shape(location: Path, name: str) -> tuple[Geometry, tuple[int, int, int]] | None:
    """The checks of :func:`as_single_3d` on the header alone: `cgs predict` wrote the outputs of
    the inputs before a 2D, 4D or RGB one, although every input is checked before the first write.
    A header ITK cannot read here is left to the full read, which says why. Returns the header's
    geometry and [z, y, x] shape (None where the full read must judge them)."""
    with captured_native_stderr(), itk_readable(location) as readable:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(readable))
        reader.SetImageIO(itk_image_io(location))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
    size = reader.GetSize()
    _check_single_3d(reader.GetPixelID(), reader.GetNumberOfComponents(), size, name)
    try:
        geometry = Geometry(
            spacing=reader.GetSpacing()[:3],
            origin=reader.GetOrigin()[:3],
            direction=_first_three_axes(reader.GetDirection(), len(size)),
        )
    except ValueError:
        return None  # the full read names the problem
    if not _is_rotation(geometry):
        return None  # likewise
    return geometry, (int(size[2]), int(size[1]), int(size[0]))


def _first_three_axes(direction, dimension: int) -> tuple[float, ...]:
    """The 3 x 3 direction of the first three axes of a ``dimension``-D direction (row-major)."""
    return tuple(float(direction[row * dimension + column]) for row in range(3) for column in range(3))


def _drop_fourth_axis(image: sitk.Image, name: str) -> sitk.Image:
    try:
        return image[:, :, :, 0]
    except RuntimeError as error:
        problem = f"4D image with one time point could not be reduced to 3D ({itk_reason(error)})"
        raise VolumeIOError(name, problem) from error


def geometry_of(image: sitk.Image, name: str) -> Geometry:
    try:
        geometry = Geometry(
            spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=image.GetDirection()
        )
    except ValueError as error:
        raise VolumeIOError(name, f"image has an invalid geometry ({error})") from error
    if not _is_rotation(geometry):
        raise VolumeIOError(
            name, "image direction is not a rotation (its axes are not perpendicular unit vectors)"
        )
    return geometry


def _is_rotation(geometry: Geometry) -> bool:
    """Whether the direction's axes are perpendicular unit vectors (within the reader's tolerance)."""
    matrix = geometry.direction_matrix
    return bool(np.abs(matrix.T @ matrix - np.eye(3)).max() <= ORTHOGONAL_TOLERANCE)
