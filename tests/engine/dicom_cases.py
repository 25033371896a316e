"""DICOM CT series made from the bundled OpenKBP CT (real pixels) for the RTSTRUCT/SEG tests.

Three placements of the same anatomy: head first (the NIfTI's own axes), feet first (x and z
reversed, as a feet-first scan is stored) and oblique (the grid rotated about two axes, with
unequal row and column spacing). Each is cropped to a non-square slice, so a swapped row and
column cannot go unnoticed, and its label map is resampled onto the same grid (nearest voxel).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cgs_engine.dicom import DicomSeries, read_series, write_ct_series
from cgs_engine.io import read_volume
from cgs_engine.io.readers import geometry_of
from cgs_engine.io.writers import to_sitk_image
from cgs_engine.volume import Volume

SAMPLES = Path(__file__).resolve().parents[2] / "napari_cgs" / "samples"
SAMPLE_CT = SAMPLES / "openkbp_pt_222_ct.nii.gz"
SAMPLE_LABELS = SAMPLES / "openkbp_pt_222_labels.nii.gz"
# x (columns), y (rows), z (slices) ranges of the crop: every organ inside, 96 x 80 pixels, 100 slices
CROP = ((16, 112), (24, 104), (8, 108))
SQUARE_CROP = ((16, 112), (16, 112), (8, 108))  # for libraries that mix up rows and columns (bench)
CASES = ("head_first", "feet_first", "oblique")
POSITIONS = {"head_first": "HFS", "feet_first": "FFS", "oblique": "HFS"}


def _image(volume: Volume) -> sitk.Image:
    return to_sitk_image(np.asarray(volume.array), volume.geometry, str(volume.source))


def _volume(image: sitk.Image, kind: str, source: str) -> Volume:
    return Volume(sitk.GetArrayFromImage(image), geometry_of(image, source), kind, source)


def cropped_sample(square: bool = False) -> tuple[sitk.Image, sitk.Image]:
    (x0, x1), (y0, y1), (z0, z1) = SQUARE_CROP if square else CROP
    ct = _image(read_volume(SAMPLE_CT))
    labels = _image(read_volume(SAMPLE_LABELS, kind="labels"))
    return ct[x0:x1, y0:y1, z0:z1], labels[x0:x1, y0:y1, z0:z1]


def _rotation(degrees_about_z: float, degrees_about_x: float) -> np.ndarray:
    a, b = np.radians(degrees_about_z), np.radians(degrees_about_x)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_x @ about_z


def case_volumes(case: str, square: bool = False) -> tuple[Volume, Volume]:
    """(CT, labels) of one placement, both on the same grid; ``square``: square slices, equal spacing."""
    ct, labels = cropped_sample(square)
    if case == "feet_first":
        ct, labels = sitk.DICOMOrient(ct, "RPI"), sitk.DICOMOrient(labels, "RPI")
    elif case == "oblique":
        grid = sitk.Image([96, 96, 90] if square else [100, 84, 90], sitk.sitkInt16)
        grid.SetSpacing((4.688, 4.688, 3.0) if square else (4.2, 4.688, 3.0))
        rotation = _rotation(20, 12)
        grid.SetDirection(tuple(rotation.ravel()))
        centre = np.array(ct.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in ct.GetSize()]))
        half = rotation @ (np.array(grid.GetSpacing()) * (np.array(grid.GetSize()) - 1) / 2)
        grid.SetOrigin(tuple(centre - half))
        identity = sitk.Transform()
        ct = sitk.Resample(ct, grid, identity, sitk.sitkLinear, -1000, sitk.sitkInt16)
        labels = sitk.Resample(labels, grid, identity, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    elif case != "head_first":
        raise ValueError(case)
    return _volume(ct, "image", case), _volume(labels, "labels", f"{case}_labels.nii.gz")


def make_series(case: str, folder: Path, square: bool = False, **uids: str) -> tuple[DicomSeries, Volume]:
    """Write the case's CT as a DICOM series in ``folder``; return it and the case's labels."""
    ct, labels = case_volumes(case, square)
    write_ct_series(ct, folder, patient_id=f"pt_222_{case}", patient_position=POSITIONS[case], **uids)
    return read_series(folder), labels


@functools.cache
def _shared_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="cgs-dicom-cases-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def shared_series(case: str) -> tuple[DicomSeries, Volume]:
    """The case's series, written once per test process (tests must not change its files)."""
    return make_series(case, _shared_root() / case)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total
