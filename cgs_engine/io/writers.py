"""write_volume: a :class:`Volume` to NIfTI, MetaImage or NRRD, atomically and with its geometry."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..durable import (
    FILE_MODE,
    describe_write_failure,
    disk_nearly_full,
    fsync_dir,
    fsync_file,
    remove_stale_temp_files,
    staging_folder,
)
from ..native_output import captured_native_stderr
from ..volume import Geometry, Volume
from .errors import VolumeIOError, itk_reason, require_utf8_path
from .formats import output_name_problem
from .validate import check_label_map, raise_if_grids_differ
from .written import written_volume_problem

Reference = Volume | Geometry | tuple[Geometry, Sequence[int]]

OVERWRITE_HINT = "pass overwrite=True / --overwrite to replace it"


def write_volume(
    volume: Volume, path: str | os.PathLike, overwrite: bool = False, reference: Reference | None = None
) -> Path:
    """Write ``volume`` in the format its extension names and return the path written.

    ``reference`` (the image a label map belongs to: a Volume, a Geometry, or a
    ``(Geometry, shape)`` pair) must share the volume's grid. Validation happens before
    anything touches the disk, and the file appears only once complete, so a failure never
    leaves a partial file nor harms an existing one.
    """
    name = os.fspath(path)
    target = Path(require_utf8_path(name))
    problem = output_name_problem(target)
    if problem:
        raise VolumeIOError(name, problem)
    array = storable_array(volume, name)
    if reference is not None:
        _check_reference(volume, reference, name)
    _check_target(target, name, overwrite)
    image = to_sitk_image(array, volume.geometry, name)
    _write_atomically(image, target, name, overwrite)
    return target


def storable_array(volume: Volume, name: str) -> np.ndarray:
    array = np.asarray(volume.array)
    if volume.kind == "labels":
        return check_label_map(array, name)
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:  # no ITK pixel type for half floats
        return array.astype(np.float32)
    if array.dtype.kind not in "iuf":
        raise VolumeIOError(name, f"cannot store voxels of type {array.dtype}")
    return array


def _check_reference(volume: Volume, reference: Reference, name: str) -> None:
    if isinstance(reference, Volume):
        reference_geometry, reference_shape = reference.geometry, reference.shape
    elif isinstance(reference, Geometry):
        reference_geometry, reference_shape = reference, None
    else:
        reference_geometry, reference_shape = reference[0], tuple(reference[1])
    what = "label map" if volume.kind == "labels" else "volume"
    raise_if_grids_differ(volume.shape, volume.geometry, reference_shape, reference_geometry, name, what)


def _check_target(target: Path, name: str, overwrite: bool) -> None:
    if target.is_dir():
        raise VolumeIOError(name, "is a folder; give a file name such as scan.nii.gz")
    if not target.parent.is_dir():
        raise VolumeIOError(name, f"output folder {target.parent} does not exist")
    if target.exists() and not overwrite:
        raise VolumeIOError(name, f"already exists ({OVERWRITE_HINT})")


def to_sitk_image(array: np.ndarray, geometry: Geometry, name: str) -> sitk.Image:
    if abs(np.linalg.det(geometry.direction_matrix)) < 1e-6:
        raise VolumeIOError(name, "cannot be stored: its direction matrix is singular (determinant 0)")
    try:
        image = sitk.GetImageFromArray(array, isVector=False)
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    except (RuntimeError, TypeError) as error:
        raise VolumeIOError(name, f"cannot be stored as an image ({itk_reason(error)})") from error
    return image


def _write_atomically(image: sitk.Image, target: Path, name: str, overwrite: bool) -> None:
    """Write into a private folder next to ``target``, check it, then move the files into place.

    A folder rather than a temporary file name: .mhd and .nhdr headers record their data
    file's name, so the files must be written under their final names. The private folder
    is on the same file system, so each move is an atomic ``os.replace``. ITK does not report
    short writes, so the staged file is read back (``written_volume_problem``) before it
    replaces anything.
    """
    touched = False  # whether an existing file was removed or replaced yet
    try:
        with staging_folder(target) as staging:
            staged = staging / target.name
            with captured_native_stderr() as chatter:
                try:
                    sitk.WriteImage(image, str(staged), useCompression=True)
                    failure = None
                except RuntimeError as error:
                    failure = itk_reason(error)
            if failure is None:
                failure = written_volume_problem(staged, image)
            if failure is not None:
                raise VolumeIOError(name, _write_failure(failure, chatter.summary(), target.parent))
            # The header last, so that it never names data that is not there yet.
            produced = sorted(staging.iterdir(), key=lambda part: part.name == target.name)
            _refuse_clashes(produced, target, name, overwrite)
            for part in produced:
                os.chmod(part, FILE_MODE)
                fsync_file(part)
            if len(produced) > 1 and target.exists():
                # A header and its data file cannot be replaced in one step: a kill between the
                # two moves left the old header over the new data, read as the new voxels on the
                # old grid (or not at all). The old header goes first, so that a kill there leaves
                # a missing file, never a wrong one.
                touched = True
                target.unlink()
                fsync_dir(target.parent)
            for part in produced:
                existed = (target.parent / part.name).exists()
                os.replace(part, target.parent / part.name)
                touched = touched or existed
    except OSError as error:
        reason = describe_write_failure(error, target.parent)
        outcome = "the earlier file is partly replaced: write it again" if touched else "nothing was replaced"
        raise VolumeIOError(name, f"could not be written ({reason}); {outcome}") from None
    fsync_dir(target.parent)
    remove_stale_temp_files(target.parent, name=target.name)


def _write_failure(problem: str, chatter: str, folder: Path) -> str:
    if disk_nearly_full(folder):  # the cause; what the library made of it adds nothing
        reason = os.strerror(errno.ENOSPC)
    else:
        reason = problem + (f"; the image library said: {chatter}" if chatter else "")
    return f"could not be written ({reason}); nothing was replaced"


def _refuse_clashes(produced: list[Path], target: Path, name: str, overwrite: bool) -> None:
    if overwrite:
        return
    for part in produced:
        if (target.parent / part.name).exists():
            which = "" if part.name == target.name else f"its data file {part.name} "
            raise VolumeIOError(name, f"{which}already exists ({OVERWRITE_HINT})")
