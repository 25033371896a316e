"""Which RTSTRUCT library round-trips a label map: ours (pydicom + marching-squares contours) or rt-utils.

On the three DICOM CT series the tests use (the bundled OpenKBP CT head first, feet first and
oblique with unequal row/column spacing, all cropped to non-square slices) plus slices of
rings, islands in holes and separate islands, and again on square slices with equal spacing,
each label map goes out as an RTSTRUCT and comes back; printed: the per-organ Dice (min and
mean over the organs) and seconds, for

  cgs -> cgs, rt-utils -> rt-utils, cgs -> rt-utils (rt-utils reads ours), rt-utils -> cgs.

rt-utils is not a dependency (it pulls opencv); install it to compare, e.g. in a scratch venv:
``pip install --no-deps rt-utils opencv-python-headless``. Without it only cgs -> cgs runs.

    python bench/rtstruct_libraries.py [--json bench/results/rtstruct-libraries.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))  # the test series: same anatomy, same placements

from dicom_cases import CASES, dice, make_series  # noqa: E402

from cgs_engine.classes.organs import openkbp_class_names  # noqa: E402
from cgs_engine.classes.table import derive_class_table  # noqa: E402
from cgs_engine.dicom import export_rtstruct, import_rtstruct  # noqa: E402
from cgs_engine.volume import Volume  # noqa: E402

TABLE = derive_class_table(openkbp_class_names())


def holes_labels(labels: Volume) -> Volume:
    """Rings with islands in their holes and separate islands, on a few slices of the case's grid."""
    array = np.zeros(labels.shape, np.uint8)
    rows, columns = np.mgrid[: labels.shape[1], : labels.shape[2]]
    for z, (cy, cx) in zip(range(40, 60, 4), [(40, 40), (38, 45), (42, 50), (40, 35), (35, 40)], strict=True):
        radius = np.hypot(rows - cy, columns - cx)
        array[z][(radius <= 15) & (radius > 8)] = 1
        array[z][radius <= 3] = 1
        array[z, 5:9, 70:74] = 2
        array[z, 70:75, 5:12] = 2
        array[z][(radius > 8) & (radius <= 10) & (columns > cx)] = 3
    return Volume(array, labels.geometry, "labels", "holes")


def organ_dice(truth: np.ndarray, result: np.ndarray) -> list[float]:
    return [dice(result == class_id, truth == class_id) for class_id in np.unique(truth) if class_id]


# ------------------------------------------------------------------------------------------- rt-utils
def rt_utils_available() -> bool:
    try:
        import rt_utils  # noqa: F401
    except ImportError:
        return False
    return True


def _rtu_order(rtstruct, series) -> list[int]:
    """Our slice index of each of rt-utils' slices (it sorts the series itself)."""
    ours = {uid: index for index, uid in enumerate(series.sop_instance_uids)}
    return [ours[str(ds.SOPInstanceUID)] for ds in rtstruct.series_data]


def rtu_export(labels: Volume, series, path: Path) -> None:
    from rt_utils import RTStructBuilder

    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(series.folder))
    order = _rtu_order(rtstruct, series)
    for entry in TABLE.entries:
        organ = labels.array == entry.id
        if organ.any():
            # rt-utils wants [row, column, slice] in its own slice order
            rtstruct.add_roi(
                mask=np.moveaxis(organ[order], 0, -1), color=list(entry.color), name=entry.structure_name
            )
    rtstruct.save(str(path))


def rtu_import(path: Path, series) -> np.ndarray:
    from rt_utils import RTStructBuilder

    rtstruct = RTStructBuilder.create_from(dicom_series_path=str(series.folder), rt_struct_path=str(path))
    order = _rtu_order(rtstruct, series)
    array = np.zeros(series.volume.shape, np.uint8)
    for name in rtstruct.get_roi_names():
        entry = TABLE.match(name)
        mask = np.moveaxis(rtstruct.get_roi_mask_by_name(name), -1, 0)
        if mask.shape[1:] != array.shape[1:]:
            raise ValueError(f"rt-utils returned {mask.shape[1:]} slices for a {array.shape[1:]} series")
        for position, index in enumerate(order):
            array[index][mask[position] & (array[index] == 0)] = entry.id
    return array


# ------------------------------------------------------------------------------------------------ runs
def cgs_export(labels, series, path):
    export_rtstruct(labels, series, TABLE, path)


def cgs_import(path, series):
    return import_rtstruct(path, series, TABLE).labels.array


def run(folder: Path) -> list[dict]:
    pipelines = {"cgs -> cgs": (cgs_export, cgs_import)}
    if rt_utils_available():
        pipelines.update(
            {
                "rt-utils -> rt-utils": (rtu_export, rtu_import),
                "cgs -> rt-utils": (cgs_export, rtu_import),
                "rt-utils -> cgs": (rtu_export, cgs_import),
            }
        )
    rows = []
    cases = [(case, square) for square in (False, True) for case in (*CASES, "holes")]
    for case, square in cases:
        placement = "head_first" if case == "holes" else case
        series, labels = make_series(placement, folder / f"{case}{square}", square=square)
        if case == "holes":
            labels = holes_labels(labels)
        case = f"{case}{' square' if square else ''}"
        for name, (export, load) in pipelines.items():
            path = folder / f"{case.replace(' ', '_')}_{name.replace(' ', '').replace('>', '')}.dcm"
            start = time.perf_counter()
            try:
                export(labels, series, path)
                exported = time.perf_counter()
                result = load(path, series)
                scores = organ_dice(labels.array, result)
                row = {
                    "case": case,
                    "pipeline": name,
                    "dice_min": min(scores),
                    "dice_mean": float(np.mean(scores)),
                    "export_s": exported - start,
                    "import_s": time.perf_counter() - exported,
                }
            except Exception as error:  # a library that cannot handle the case is a result too
                row = {"case": case, "pipeline": name, "error": f"{type(error).__name__}: {error}"[:120]}
            rows.append(row)
            print(_format(row), flush=True)
    return rows


def _format(row: dict) -> str:
    head = f"{row['case']:<18} {row['pipeline']:<21}"
    if "error" in row:
        return f"{head} failed: {row['error']}"
    return (
        f"{head} Dice min {row['dice_min']:.4f} mean {row['dice_mean']:.4f}  "
        f"export {row['export_s']:.2f} s  import {row['import_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if not rt_utils_available():
        print("rt-utils not installed: only cgs -> cgs runs (see the module docstring)")
    with tempfile.TemporaryDirectory(prefix="cgs-rtstruct-bench-") as folder:
        rows = run(Path(folder))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
