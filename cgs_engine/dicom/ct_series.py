"""Writing a CT Volume as a DICOM CT series (one file per slice), with SimpleITK.

For tests, benchmarks and for handing a NIfTI CT to software that only reads DICOM: the pixels
are the volume's own int16 Hounsfield units, the slices sit exactly on the volume's geometry
(oblique and feet-first included), and every UID the RT objects reference is set. It is not an
anonymiser nor a clinical archive writer.
"""

from __future__ import annotations

import contextlib
import locale
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

from cgs_engine.durable import fsync_dir, temp_path_for
from cgs_engine.io.errors import VolumeIOError, require_utf8_path
from cgs_engine.volume import Volume

from .errors import DicomError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")


def write_ct_series(
    volume: Volume,
    folder: str | os.PathLike,
    patient_id: str = "CGS-TEST",
    patient_name: str = "CGS^Test",
    patient_position: str = "HFS",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "CT from napari-cgs",
) -> list[Path]:
    """Write ``volume`` into the new folder ``folder`` as ``0001.dcm``, ``0002.dcm``... in slice order.

    The folder appears only once complete. Returns the files written.
    """
    target = Path(folder)
    try:
        require_utf8_path(target)
    except VolumeIOError as error:
        raise DicomError(target, error.problem) from None
    if target.exists():
        raise DicomError(target, "already exists; give a new folder for the series")
    if not target.parent.is_dir():
        raise DicomError(target, f"parent folder {target.parent} does not exist")
    if patient_position not in PATIENT_POSITIONS:
        raise DicomError(target, f"patient position {patient_position!r} is not one of {PATIENT_POSITIONS}")
    image = _int16_image(volume, target)
    direction = volume.geometry.direction_matrix
    if np.linalg.det(direction) < 0:
        # DICOM readers order slices along row x column; a left-handed grid would come back flipped.
        raise DicomError(target, "the volume's direction is left-handed; reorient it before writing DICOM")
    shared = {
        "0008|0016": CT_IMAGE_STORAGE,
        "0008|0060": "CT",
        "0008|0008": "DERIVED\\SECONDARY\\AXIAL",
        "0008|103e": series_description,
        "0010|0010": patient_name,
        "0010|0020": patient_id,
        "0018|5100": patient_position,
        "0018|0050": f"{volume.geometry.spacing[2]:.6g}",
        "0020|000d": study_instance_uid or generate_uid(),
        "0020|000e": generate_uid(),
        "0020|0010": "1",
        "0020|0011": "1",
        "0020|0052": frame_of_reference_uid or generate_uid(),
        "0020|0037": "\\".join(_ds(v) for v in (*direction[:, 0], *direction[:, 1])),
        "0008|0070": "napari-cgs",
        "0018|0060": "",
        "0020|0012": "1",
        "0020|0060": "",  # laterality unknown (dciodvfy wants it present)
        "0020|1040": "",
        "0028|1052": "0",
        "0028|1053": "1",
    }
    # A hidden folder named for this process (removed as stale if it dies), made with the user's
    # usual permissions: mkdtemp's 0700 would make the series unreadable to everyone else.
    staging = temp_path_for(target)
    os.mkdir(staging)
    try:
        with process_locale_kept():
            names = _write_slices(image, shared, staging, generate_uid)
        os.replace(staging, target)
    except RuntimeError as error:
        raise DicomError(target, f"could not be written ({str(error).strip().splitlines()[-1]})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(target.parent)
    return [target / name for name in names]


def _write_slices(image: sitk.Image, shared: dict[str, str], folder: Path, generate_uid) -> list[str]:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    names = []
    for index in range(image.GetDepth()):
        plane = image[:, :, index]
        for tag, value in shared.items():
            plane.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        plane.SetMetaData("0020|0032", "\\".join(_ds(v) for v in position))
        plane.SetMetaData("0020|0013", str(index + 1))
        plane.SetMetaData("0008|0018", generate_uid())
        name = f"{index + 1:04d}.dcm"
        writer.SetFileName(str(folder / name))
        writer.Execute(plane)
        names.append(name)
    return names


@contextlib.contextmanager
def process_locale_kept() -> Iterator[None]:
    """GDCM's DICOM writer switches the whole process to the "C" locale, after which Python
    decodes text (subprocess output, files opened without an encoding) as ASCII; put it back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _int16_image(volume: Volume, target: Path) -> sitk.Image:
    array = np.asarray(volume.array)
    if array.dtype.kind not in "iuf" or not np.isfinite(array).all():
        raise DicomError(target, "CT voxels must be finite numbers (Hounsfield units)")
    low, high = float(array.min()), float(array.max())
    if low < -32768 or high > 32767:
        raise DicomError(target, f"CT values {low:g}..{high:g} do not fit in int16")
    image = sitk.GetImageFromArray(np.round(array).astype(np.int16))
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(volume.geometry.direction)
    return image


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DICOM DS limit)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"
