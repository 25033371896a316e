"""Small DICOM CT series, good and damaged in the ways clinical folders go wrong.

``good_series(folder)`` writes 8 slices of 24 x 32 pixels with known geometry and voxel values;
``BROKEN`` maps a name to a function that damages a copy of it in place (a missing, duplicated or
truncated slice, uneven spacing, gantry tilt, two series in one folder, ...). Used by the tests
and by ``bench/hostile_dicom.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom

from cgs_engine.dicom import write_ct_series
from cgs_engine.volume import Geometry, Volume

SHAPE = (8, 24, 32)  # slices, rows, columns
# Every command that reads a series folder: each must refuse a damaged one with the same line.
SERIES_VERBS = ("info", "convert", "predict", "add-correction", "rtstruct export", "seg export")
GEOMETRY = Geometry(spacing=(0.8, 0.9, 2.5), origin=(-10.0, -20.0, 30.0))


def good_values() -> np.ndarray:
    """The series' voxels (Hounsfield units), different on every slice, row and column."""
    z, y, x = np.indices(SHAPE)
    return (z * 100 + y * 3 + x - 500).astype(np.int16)


def good_series(folder: Path) -> Path:
    write_ct_series(Volume(good_values().astype(np.float32), GEOMETRY, "image", "good"), folder)
    return folder


def slice_file(folder: Path, number: int) -> Path:
    return folder / f"{number:04d}.dcm"


def edit(folder: Path, number: int, change: Callable[[pydicom.Dataset], None], name: str | None = None):
    """Apply ``change`` to slice ``number`` (1-based) and save it (as ``name`` if given)."""
    dataset = pydicom.dcmread(slice_file(folder, number))
    change(dataset)
    dataset.save_as(folder / name if name else slice_file(folder, number))


def shift(dataset: pydicom.Dataset, offset) -> None:
    dataset.ImagePositionPatient = [
        f"{float(v) + d:.6g}" for v, d in zip(dataset.ImagePositionPatient, offset, strict=True)
    ]


def _missing(folder: Path) -> None:
    slice_file(folder, 4).unlink()


def _duplicated(folder: Path) -> None:
    def new_uid(dataset):
        dataset.SOPInstanceUID = pydicom.uid.generate_uid()

    edit(folder, 3, new_uid, "0003b.dcm")


def _uneven(folder: Path) -> None:
    for number in range(5, SHAPE[0] + 1):
        edit(folder, number, lambda d: shift(d, (0, 0, 1.0)))


def _tilted(folder: Path) -> None:
    """A gantry tilt of 20 degrees: every slice shifted along y by spacing * tan(20 deg) more."""
    step = GEOMETRY.spacing[2] * np.tan(np.radians(20))
    for number in range(1, SHAPE[0] + 1):
        edit(folder, number, lambda d, n=number: shift(d, (0, (n - 1) * step, 0)))


def _two_series(folder: Path) -> None:
    uid = pydicom.uid.generate_uid()
    for number in range(1, SHAPE[0] + 1):

        def other_series(dataset):
            dataset.SeriesInstanceUID = uid
            dataset.SOPInstanceUID = pydicom.uid.generate_uid()

        edit(folder, number, other_series, f"b{number:04d}.dcm")


def _truncated(folder: Path) -> None:
    path = slice_file(folder, 5)
    path.write_bytes(path.read_bytes()[:-500])


def _truncated_end_slice(folder: Path) -> None:
    path = slice_file(folder, SHAPE[0])
    path.write_bytes(path.read_bytes()[:300])


def _rotated(folder: Path) -> None:
    def rotate(dataset):
        dataset.ImageOrientationPatient = [0, 1, 0, -1, 0, 0]

    edit(folder, 4, rotate)


def _pixel_spacing(folder: Path) -> None:
    def finer(dataset):
        dataset.PixelSpacing = [0.5, 0.5]

    edit(folder, 4, finer)


def _one_position(folder: Path) -> None:
    for number in range(1, SHAPE[0] + 1):

        def same(dataset):
            dataset.ImagePositionPatient = list(GEOMETRY.origin)

        edit(folder, number, same)


def _other_size(folder: Path) -> None:
    def smaller(dataset):
        pixels = dataset.pixel_array[:20]
        dataset.Rows = 20
        dataset.PixelData = pixels.tobytes()

    edit(folder, 4, smaller)


def _single_slice(folder: Path) -> None:
    for number in range(2, SHAPE[0] + 1):
        slice_file(folder, number).unlink()


def _no_position(folder: Path) -> None:
    def forget(dataset):
        del dataset.ImagePositionPatient

    edit(folder, 2, forget)


def _other_frame(folder: Path) -> None:
    def move(dataset):
        dataset.FrameOfReferenceUID = pydicom.uid.generate_uid()

    edit(folder, 6, move)


def _empty_frame(folder: Path) -> None:
    """Present but empty: taken as given, the RTSTRUCT and SEG written on it referenced ''."""

    def empty(dataset):
        dataset.FrameOfReferenceUID = ""

    edit(folder, 3, empty)


def _empty_instance_uid(folder: Path) -> None:
    def empty(dataset):
        dataset.SOPInstanceUID = ""

    edit(folder, 5, empty)


def _slope_per_slice(folder: Path) -> None:
    """Valid: one slice stored with its own rescale (values must still come out right)."""

    def rescale(dataset):
        values = dataset.pixel_array.astype(np.int32) + 1000  # stored = (HU + 1000) * 2, slope 0.5
        dataset.PixelData = (values * 2).astype(np.int16).tobytes()
        dataset.RescaleSlope, dataset.RescaleIntercept = "0.5", "-1000"

    edit(folder, 3, rescale)


def _shuffled_names(folder: Path) -> None:
    """Valid: file names in no particular order (the positions decide)."""
    names = sorted(folder.iterdir())
    for path in names:
        path.rename(path.with_name(f"tmp-{path.name}"))
    order = np.random.default_rng(3).permutation(len(names))
    for index, path in zip(order, names, strict=True):
        path.with_name(f"tmp-{path.name}").rename(folder / f"IM{index:03d}")


def _with_rtstruct_and_notes(folder: Path) -> None:
    """Valid: a structure set and a text file beside the images are not image series."""
    (folder / "notes.txt").write_text("scanned on Tuesday")
    rtstruct = pydicom.Dataset()
    rtstruct.file_meta = pydicom.dataset.FileMetaDataset()
    rtstruct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    rtstruct.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    rtstruct.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    rtstruct.SOPClassUID = rtstruct.file_meta.MediaStorageSOPClassUID
    rtstruct.SOPInstanceUID = rtstruct.file_meta.MediaStorageSOPInstanceUID
    rtstruct.Modality = "RTSTRUCT"
    rtstruct.SeriesInstanceUID = pydicom.uid.generate_uid()
    rtstruct.save_as(folder / "RS.dcm", enforce_file_format=True)


def _end_slices_without_preamble(folder: Path) -> None:
    """Valid: the last slices stored as bare datasets (no preamble, no DICM marker, no file meta, no
    suffix), as older exports write them; passed over, the series lost its end slices in silence."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    for number in range(SHAPE[0] - 2, SHAPE[0] + 1):
        dataset = pydicom.dcmread(slice_file(folder, number))
        del dataset.file_meta
        buffer = DicomBytesIO()
        buffer.is_little_endian, buffer.is_implicit_VR = True, True
        write_dataset(buffer, dataset)
        (folder / f"IM{number:04d}").write_bytes(buffer.getvalue())
        slice_file(folder, number).unlink()


# name -> (damage, the words the one-line refusal holds; None for a valid folder that must read right)
BROKEN: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "missing-slice": (_missing, "not evenly spaced"),
    "duplicated-slice": (_duplicated, "share one position"),
    "uneven-spacing": (_uneven, "not evenly spaced"),
    "gantry-tilt": (_tilted, "gantry tilt"),
    "two-series": (_two_series, "--series"),
    "truncated-pixel-data": (_truncated, "pixel data"),
    "truncated-end-slice": (_truncated_end_slice, "0008.dcm"),
    "rotated-slice": (_rotated, "orientation"),
    "pixel-spacing-differs": (_pixel_spacing, "pixel spacing"),
    "all-at-one-position": (_one_position, "one position"),
    "slice-size-differs": (_other_size, "rows"),
    "single-slice": (_single_slice, "single slice"),
    "no-image-position": (_no_position, "ImagePositionPatient"),
    "two-frames-of-reference": (_other_frame, "frames of reference"),
    "empty-frame-of-reference": (_empty_frame, "lacks FrameOfReferenceUID"),
    "empty-instance-uid": (_empty_instance_uid, "lacks SOPInstanceUID"),
}
VALID: dict[str, Callable[[Path], None]] = {
    "rescale-per-slice": _slope_per_slice,
    "shuffled-file-names": _shuffled_names,
    "rtstruct-and-notes-beside": _with_rtstruct_and_notes,
    "end-slices-without-preamble": _end_slices_without_preamble,
}


def damaged_copy(good: Path, folder: Path, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(good, folder)
    damage(folder)
    return folder


def series_command(verb: str, folder: Path, work: Path, model: Path, labels: Path) -> list[str]:
    """The ``cgs`` arguments with which ``verb`` reads the series ``folder``: outputs go to
    ``work/out/<folder name>``, corrections to the project ``work/project``."""
    out = work / "out" / folder.name
    arguments = {
        "info": ["info", folder],
        "convert": ["convert", folder, out / "scan.nii.gz"],
        "predict": ["predict", model, folder, "-o", out],
        "add-correction": ["project", "add-correction", work / "project"]
        + ["--image", folder, "--labels", labels],
        "rtstruct export": ["rtstruct", "export", labels, "--dicom", folder, "-o", out / "RS.dcm"],
        "seg export": ["seg", "export", labels, "--dicom", folder, "-o", out / "SEG.dcm"],
    }[verb]
    return [str(a) for a in arguments]
