"""The demo without a display: the panel's pipeline through the engine, every result written to disk.

Pre-segmentation and review analysis are the very calls the panel's worker makes
(``Predictor.predict`` with maps, then ``cgs_engine.review.prediction.analyse_prediction``); no
Qt is involved in the maths. Only the picture of the viewer (``_demo_render``) uses Qt or napari.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgs_engine.checkpoint import ModelCheckpoint
from cgs_engine.durable import write_text_atomically
from cgs_engine.errors import CGSError
from cgs_engine.evaluate.volumes import format_volume_table, organ_volumes, volume_table_csv
from cgs_engine.infer import Prediction, Predictor, write_prediction
from cgs_engine.io import read_volume
from cgs_engine.review.prediction import analyse_prediction
from cgs_engine.volume import Volume
from napari_cgs._sample_data import SAMPLE_CT
from napari_cgs.demo.render import render_picture

TOP_REGIONS = 5


class DemoError(Exception):
    """The demo cannot run (unreadable model); the message is one line for the user."""


@dataclass
class DemoRun:
    ct: Volume
    checkpoint: ModelCheckpoint
    prediction: Prediction
    regions: list[Any]
    runtime: Any
    load_seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def presegment(ct_path: Path, model: Path, device: str = "auto") -> DemoRun:
    """Read the CT, load the model, predict labels and maps, find the review regions."""

    ct = read_volume(ct_path, kind="image")
    started = time.perf_counter()
    try:
        predictor = Predictor(model, device=device)
    except CGSError as error:
        raise DemoError(f"cannot use the model {model}: {error}") from error
    load_seconds = time.perf_counter() - started
    prediction = predictor.predict(ct, maps=True)
    regions, _, _ = analyse_prediction(prediction)
    return DemoRun(ct, predictor.checkpoint, prediction, regions, predictor.runtime, load_seconds)


def organ_names(region: Any, class_names: list[str]) -> str:
    names = [class_names[c] for c in region.likely_classes if 0 <= c < len(class_names)]
    return "; ".join(names) or "unknown organ"


def write_regions_csv(regions: list[Any], class_names: list[str], path: Path) -> Path:
    columns = ["rank", "region_id", "likely_organs", "volume_ml", "voxels", "mass", "mean_disagreement"]
    columns += ["centroid_z", "centroid_y", "centroid_x", "z_start", "z_stop", "y_start", "y_stop"]
    columns += ["x_start", "x_stop", "source"]
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(columns)
    for rank, region in enumerate(regions, start=1):
        box = [bound for part in region.bbox for bound in (part.start, part.stop)]
        centroid = [f"{c:.1f}" for c in region.centroid]
        writer.writerow(
            [rank, region.id, organ_names(region, class_names), f"{region.volume_ml:.3f}", region.voxels]
            + [f"{region.mass:.1f}", f"{region.mean_disagreement:.3f}", *centroid, *box, region.source]
        )
    return write_text_atomically(path, table.getvalue())  # read back before it replaces anything


def write_results(run: DemoRun, output: Path, stem: str) -> dict[str, Path]:
    """NIfTI label/specialist/disagreement maps, class table, organ volumes and review regions."""

    files = write_prediction(
        run.prediction, output, stem, maps=True, overwrite=True, class_colors=run.checkpoint.class_colors
    )
    rows = organ_volumes(run.prediction.labels, run.prediction.class_names)
    files["volumes"] = output / f"{stem}_volumes.csv"
    write_text_atomically(files["volumes"], volume_table_csv(rows))
    files["regions"] = write_regions_csv(
        run.regions, run.prediction.class_names, output / f"{stem}_review_regions.csv"
    )
    return files


def print_summary(run: DemoRun) -> None:
    prediction, names = run.prediction, run.prediction.class_names
    depth, height, width = run.ct.shape
    print(
        f"demo: pre-segmentation of the {depth} x {height} x {width} CT took {prediction.seconds:.2f} s "
        f"(wall time) on {run.runtime.describe()}; loading the model took {run.load_seconds:.2f} s"
    )
    print("demo: organ volumes of the pre-segmentation:")
    for line in format_volume_table(organ_volumes(prediction.labels, names)).splitlines():
        print(f"  {line}")
    shown = run.regions[:TOP_REGIONS]
    print(f"demo: {len(run.regions)} uncertain regions to review, most uncertain first:")
    for rank, region in enumerate(shown, start=1):
        print(
            f"  {rank}. {organ_names(region, names)}: {region.volume_ml:.2f} mL, disagreement mass "
            f"{region.mass:.0f}, slice z={round(region.centroid[0])}"
        )
    if len(run.regions) > len(shown):
        print(f"  … and {len(run.regions) - len(shown)} more in the review regions table")


def print_files(files: dict[str, Path], same_geometry: bool) -> None:
    titles = {"labels": "label map", "disagreement": "disagreement map", "classes": "class table"}
    titles.update({"volumes": "organ volumes (mL)", "regions": "review regions", "picture": "viewer picture"})
    print("demo: files written:")
    for key, path in files.items():
        title = f"specialist map {key[4:]}" if key.startswith("map:") else titles.get(key, key)
        note = " (exactly the CT's geometry)" if key == "labels" and same_geometry else ""
        print(f"  {title:28s} {path.resolve()}{note}")


def run_headless(model: Path, output: Path, render: bool = True) -> dict[str, Path]:
    """The whole headless demo; returns every file written (keys as ``write_prediction`` plus ours)."""

    started = time.perf_counter()
    print(f"demo: pre-segmenting the bundled OpenKBP CT {SAMPLE_CT.name} with {model}")
    run = presegment(SAMPLE_CT, model)
    print_summary(run)
    stem = SAMPLE_CT.name.removesuffix("_ct.nii.gz")
    files = write_results(run, output, stem)
    written = read_volume(files["labels"], kind="labels")
    same_geometry = written.shape == run.ct.shape and written.geometry.is_close(run.ct.geometry)
    if not same_geometry:
        raise DemoError(f"{files['labels']} does not have the CT's geometry")
    if render:
        picture = output / f"{stem}_viewer.png"
        how = render_picture(run, model, picture)
        files["picture"] = picture
        print(f"demo: viewer picture {how}")
    print_files(files, same_geometry)
    print(f"demo: done in {time.perf_counter() - started:.1f} s")
    return files
