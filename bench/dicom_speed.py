"""Seconds and file sizes of RTSTRUCT / SEG export and import on a clinical-size CT series.

The bundled OpenKBP CT and its 7 organs resampled to 512 x 512 pixels (1.17 mm) x 128 slices
(labels by nearest voxel), written as a DICOM CT series; then each step is timed once.

    python bench/dicom_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import (
    export_rtstruct,
    export_seg,
    import_rtstruct,
    import_seg,
    read_series,
    write_ct_series,
)
from cgs_engine.io import read_volume
from cgs_engine.io.dicom_series_checks import check_dicom_series, read_checked_series
from cgs_engine.io.readers import geometry_of
from cgs_engine.io.writers import to_sitk_image
from cgs_engine.volume import Volume

SAMPLES = Path(__file__).resolve().parents[1] / "napari_cgs" / "samples"
SIZE = 512


def upsampled(path: Path, kind: str) -> Volume:
    volume = read_volume(path, kind=kind)
    image = to_sitk_image(volume.array, volume.geometry, str(path))
    grid = sitk.Image([SIZE, SIZE, image.GetDepth()], image.GetPixelID())
    factor = image.GetSize()[0] / SIZE
    grid.SetSpacing((image.GetSpacing()[0] * factor, image.GetSpacing()[1] * factor, image.GetSpacing()[2]))
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((-0.5 + factor / 2, -0.5 + factor / 2, 0)))
    method = sitk.sitkNearestNeighbor if kind == "labels" else sitk.sitkLinear
    result = sitk.Resample(image, grid, sitk.Transform(), method, 0 if kind == "labels" else -1000)
    return Volume(sitk.GetArrayFromImage(result), geometry_of(result, str(path)), kind, str(path))


def itk_alone(folder: Path) -> sitk.Image:
    """What reading a series was before the series check: GDCM lists the files, ITK stacks them."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def timed(label: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label:<34} {time.perf_counter() - start:6.2f} s", flush=True)
    return result


def main() -> None:
    table = derive_class_table(openkbp_class_names())
    ct = upsampled(SAMPLES / "openkbp_pt_222_ct.nii.gz", "image")
    labels = upsampled(SAMPLES / "openkbp_pt_222_labels.nii.gz", "labels")
    print(
        f"CT {ct.shape[2]} x {ct.shape[1]} x {ct.shape[0]} voxels, {len(np.unique(labels.array)) - 1} organs"
    )
    with tempfile.TemporaryDirectory(prefix="cgs-dicom-speed-") as folder:
        root = Path(folder)
        timed("write CT series (SimpleITK)", write_ct_series, ct, root / "CT")
        series = timed("read_series (ITK pixels + headers)", read_series, root / "CT")
        checked = timed("  of which the series check", check_dicom_series, root / "CT", "CT")
        timed("  and the pixels", read_checked_series, checked, "CT")
        timed("ITK alone (its own file list)", itk_alone, root / "CT")
        rs = timed("export_rtstruct", export_rtstruct, labels, series, table, root / "RS.dcm")
        back = timed("import_rtstruct", import_rtstruct, rs.path, series, table)
        contours = sum(roi.contours for roi in rs.rois)
        same = np.array_equal(back.labels.array, labels.array)
        print(
            f"  RTSTRUCT {rs.path.stat().st_size / 1e6:.1f} MB, {contours} contours, exact round trip: {same}"
        )
        for kind in ("BINARY", "LABELMAP"):
            seg = timed(f"export_seg {kind}", export_seg, labels, series, table, root / f"{kind}.dcm", kind)
            back = timed(f"import_seg {kind}", import_seg, seg.path, series, table)
            same = np.array_equal(back.labels.array, labels.array)
            print(f"  SEG {kind} {seg.path.stat().st_size / 1e6:.1f} MB, exact round trip: {same}")


if __name__ == "__main__":
    main()
