"""Writing a Prediction as NIfTI files on the input geometry, plus a class table sidecar.

The names of every file are planned from the inputs and the model's classes before anything is
predicted (``plan_outputs``), so clashes and existing files are refused before work is done:
inputs with one file name in different folders get their folder's name in front; classes
whose names give one file name get their class id behind. The class table records each
class's map file, which ``cgs review`` reads.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.files import (
    CLASS_FILE_SUFFIX,
    FIXED_OUTPUT_PARTS,
    LIKELY_WRONG_SUFFIX,
    class_file_entries,
    class_file_for,
    read_class_file,
    write_class_file,
)
from cgs_engine.classes.table import ClassTable
from cgs_engine.durable import (
    WriteError,
    fsync_dir,
    remove_stale_temp_files,
    staging_folder,
    write_json_atomically,
)
from cgs_engine.errors import CGSError
from cgs_engine.infer.predictor import Prediction
from cgs_engine.io import VolumeIOError, write_volume
from cgs_engine.io.formats import strip_image_suffix
from cgs_engine.runtime import usable_cores


def file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def unique_stems(inputs: Sequence[Path]) -> list[str]:
    """One output stem per input: its file name, with its folder's name in front where two clash."""
    stems = [strip_image_suffix(path.name) for path in inputs]
    counts = Counter(stems)
    stems = [
        f"{file_safe(path.resolve().parent.name)}_{stem}" if counts[stem] > 1 else stem
        for path, stem in zip(inputs, stems, strict=True)
    ]
    clashes = [stem for stem, count in Counter(stems).items() if count > 1]
    if clashes:
        same = [str(path) for path, stem in zip(inputs, stems, strict=True) if stem == clashes[0]]
        raise CGSError(f"{same[0]}: gives the same output name as {same[1]}; rename one of them")
    return stems


def map_file_names(class_names: Sequence[str]) -> dict[str, str]:
    """Class name -> the ``<part>`` of ``<stem>_map_<part>.nii.gz``, unique across the classes."""
    safe = {name: file_safe(name) for name in class_names[1:]}
    counts = Counter(part.lower() for part in safe.values())  # also unique on case-blind disks
    return {
        name: part if counts[part.lower()] == 1 else f"{part}_{class_id}"
        for class_id, (name, part) in enumerate(safe.items(), start=1)
    }


def prediction_paths(
    out_dir: Path, stem: str, class_names: Sequence[str], maps: bool, disagreement: bool = True
) -> dict[str, Path]:
    labels_part, disagreement_part, likely_wrong_part = FIXED_OUTPUT_PARTS
    paths = {"labels": out_dir / f"{stem}{labels_part}.nii.gz"}
    if maps:
        for name, part in map_file_names(class_names).items():
            paths[f"map:{name}"] = out_dir / f"{stem}_map_{part}.nii.gz"
        if disagreement:  # models with specialist heads: their disagreement and the error estimate
            paths["disagreement"] = out_dir / f"{stem}{disagreement_part}.nii.gz"
            paths["likely_wrong"] = out_dir / f"{stem}{likely_wrong_part}.nii.gz"
            paths["likely_wrong_json"] = out_dir / f"{stem}{LIKELY_WRONG_SUFFIX}.json"
    paths["classes"] = out_dir / f"{stem}{CLASS_FILE_SUFFIX}"
    return paths


def check_targets(paths: dict[str, Path], overwrite: bool) -> None:
    for path in paths.values():
        if path.is_dir():
            raise VolumeIOError(path, "is a folder; cannot write an output file there")
        if path.exists() and not overwrite:
            raise VolumeIOError(path, "already exists (pass --overwrite to replace it)")


def write_prediction(
    prediction: Prediction,
    out_dir: str | Path,
    stem: str,
    maps: bool = True,
    overwrite: bool = False,
    class_colors: list[list[int]] | None = None,
    class_table: ClassTable | None = None,
    made_on: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write labels (uint8 ids), specialist maps and disagreement (uint8, 255 = 1.0) and a class table.

    With the maps also the likely-wrong map (uint8: P(wrong), or the fallback score when the model
    has no calibrated error model; see ``cgs_engine.review.likely_wrong``) and its per-organ
    figures, ``<stem>_likely_wrong.json``.

    ``class_table`` (a checkpoint's, see ``cgs_engine.classes.table``) gives each class's TG-263
    name and SNOMED CT code in the class file, for ``cgs rtstruct export`` / ``cgs seg export``;
    without it they are derived from the class names. ``made_on`` (the DICOM series the image was
    read from, :func:`cgs_engine.io.series_identity`) is recorded in the class file.

    Every target path is checked before anything is written, so a refusal writes nothing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = prediction_paths(
        out_dir, stem, prediction.class_names, maps, disagreement=prediction.disagreement is not None
    )
    check_targets(paths, overwrite)
    shadowing = _shadowing_class_file(paths, overwrite)
    earlier_outputs = earlier_prediction_outputs(out_dir, stem) if overwrite else set()
    map_names = {
        class_id: paths[f"map:{name}"].name
        for class_id, name in enumerate(prediction.class_names)
        if f"map:{name}" in paths
    }
    entries = class_file_entries(prediction.class_names, class_colors, class_table, map_names)
    # Every file is written into a private folder first and moved into place when all are there,
    # the labels and their class table last: a kill while the maps were written left the new
    # model's maps beside the earlier labels and table (or new labels beside the earlier table,
    # naming its organs by the earlier model's ids), read together by `cgs review` and the panel.
    with staging_folder(paths["labels"]) as staging:
        staged = {key: staging / path.name for key, path in paths.items()}
        jobs = []
        if maps:
            jobs += [(volume, f"map:{name}") for name, volume in prediction.specialist_maps.items()]
            if prediction.disagreement is not None:
                jobs.append((prediction.disagreement, "disagreement"))
            if prediction.errors is not None:
                jobs.append((prediction.labels.like(prediction.errors.map, "map"), "likely_wrong"))
        jobs.append((prediction.labels, "labels"))
        # a failed write names the output, not its staged copy in a hidden folder already removed
        with _named_as_output(staged, paths):
            # gzip dominates writing and ITK releases the GIL: one file per core at a time
            with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
                list(pool.map(lambda job: write_volume(job[0], staged[job[1]]), jobs))
            write_class_file(staged["classes"], entries, paths["labels"], made_on)
            if maps and prediction.errors is not None:
                summary = prediction.errors.summary(list(prediction.class_names))
                write_json_atomically(staged["likely_wrong_json"], summary)
        check_targets(paths, overwrite)  # none appeared meanwhile
        last = ("labels", "classes")
        for key in [key for key in paths if key not in last] + list(last):
            if key == "labels" and shadowing is not None:
                shadowing.unlink(missing_ok=True)
            if staged[key].exists():  # the likely-wrong files only where the model estimated them
                os.replace(staged[key], paths[key])
    fsync_dir(out_dir)
    remove_stale_temp_files(out_dir, name=paths["labels"].name)  # a killed earlier prediction's folder
    if overwrite:
        # What an earlier prediction of this scan wrote and this one did not (its maps, when this
        # one ran without --maps; another model's classes) would be read beside the new labels by
        # `cgs review` and the panel as if they were this model's: removed once all is written.
        written = {path.resolve() for path in paths.values()}
        for stale in sorted(earlier_outputs - written):
            if stale.is_file():
                stale.unlink()
    return paths


@contextlib.contextmanager
def _named_as_output(staged: dict[str, Path], paths: dict[str, Path]):
    """Errors of writes into the staging folder, told with the output's path."""
    outputs = {str(staged[key]): paths[key] for key in staged}
    try:
        yield
    except VolumeIOError as error:
        if error.path is None or error.path not in outputs:
            raise
        raise VolumeIOError(outputs[error.path], error.problem) from None
    except WriteError as error:
        if error.target not in outputs:
            raise
        raise WriteError(outputs[error.target], error.problem) from None


def _shadowing_class_file(paths: dict[str, Path], overwrite: bool) -> Path | None:
    """``<stem>_labels_classes.json`` beside the labels (written for a map saved under the labels'
    name by `cgs convert --labels`, `cgs edit -o`, the panel): it is found before the prediction's
    ``<stem>_classes.json``, so it named the new labels' organs by the other map's ids (the
    Brainstem exported as Mandible). Replaced with ``overwrite`` (it goes with the map it names),
    refused otherwise; returns the file to remove."""
    shadow = class_file_for(paths["labels"])
    if shadow == paths["classes"] or not shadow.exists():
        return None
    if not overwrite:
        raise VolumeIOError(
            shadow,
            f"already exists: it would be read as the class table of the new {paths['labels'].name} "
            "(pass --overwrite to replace it)",
        )
    return shadow


def earlier_prediction_outputs(out_dir: Path, stem: str) -> set[Path]:
    """The files an earlier ``cgs predict`` of ``stem`` wrote in ``out_dir`` (resolved), as its class
    file tells: its maps (recorded, or named after its classes), disagreement and likely-wrong files.

    Only where that class file is, and only in the format predict writes: --overwrite deleted the
    user's own ``<stem>_labels.nrrd`` and ``<stem>_map_dose.nrrd`` kept beside the scan, even on a
    first prediction into the folder."""
    table = out_dir / f"{stem}{CLASS_FILE_SUFFIX}"
    if not table.is_file():
        return set()
    _, disagreement_part, likely_wrong_part = FIXED_OUTPUT_PARTS
    names = [f"{stem}{disagreement_part}.nii.gz", f"{stem}{likely_wrong_part}.nii.gz"]
    names.append(f"{stem}{LIKELY_WRONG_SUFFIX}.json")
    try:
        earlier = read_class_file(table)
        recorded = list(earlier.map_files().values())
    except ClassTableError:  # unreadable: it is replaced, its maps (if any) cannot be told
        return {(out_dir / name).resolve() for name in names}
    classes = ["background"] + [earlier.names[class_id] for class_id in sorted(earlier.names)]
    names += recorded + [f"{stem}_map_{part}.nii.gz" for part in map_file_names(classes).values()]
    return {(out_dir / name).resolve() for name in names}
