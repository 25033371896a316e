"""A model's prior data: the labeled volumes it was trained on, kept in the project it starts.

Fine-tuning on a few corrections alone makes a model forget what it learnt from its training
patients; retraining therefore rehearses the prior data beside the corrections.

Where prior data come from (``find_model_prior``, or given explicitly):
  * a prior folder ``<model stem>.prior/`` beside the checkpoint: ``prior.json`` (format,
    class names, cases with image and label paths and split "train" or "val", citation)
    plus the image/label files (raw intensities, any readable format). The bundled model
    ships one with its 6 OpenKBP training patients;
  * the slice store a ``cgs train`` run was trained on (recorded in the run folder's
    ``config.json``), or any slice store given: its labeled volumes are prior "train" data,
    its val volumes prior "val" data (unlabeled volumes are left out).

In the project they are copied into ``prior/prior.h5``, a slice store normalised with the
project's normalization (split "labeled" = prior train, "val" = prior validation cases), with
``prior/prior.json`` saying where they came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.errors import CGSError
from cgs_engine.io import check_label_map, check_same_grid, read_volume
from cgs_engine.normalize import Normalization
from cgs_engine.store import SliceStore
from cgs_engine.store.fingerprint import same_fingerprint

PRIOR_FORMAT = "napari-cgs-prior"
PRIOR_FORMAT_VERSION = 1
PRIOR_SPLITS = {"train": "labeled", "val": "val"}


class PriorDataError(CGSError):
    """Prior data that cannot be used; one line naming the file."""


@dataclass(frozen=True)
class PriorSummary:
    source: str
    kind: str  # "folder" or "store"
    train: list[str]
    val: list[str]
    citation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "kind": self.kind,
            "train": self.train,
            "val": self.val,
            "citation": self.citation,
        }


def sidecar_folder(model_path: str | os.PathLike) -> Path:
    path = Path(model_path)
    return path.with_name(f"{path.stem}.prior")


def find_model_prior(model_path: str | os.PathLike) -> Path | None:
    """The prior data of a checkpoint: its sidecar folder, else its training run's store, else None."""
    path = Path(model_path)
    sidecar = sidecar_folder(path)
    if (sidecar / "prior.json").is_file():
        return sidecar
    record = path.parent / "config.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            store, fingerprint = data.get("store"), data.get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None
        if isinstance(store, str) and Path(store).is_file():
            _require_same_store(Path(store), fingerprint, path)
            return Path(store)
    return None


def _require_same_store(store: Path, fingerprint: Any, model: Path) -> None:
    """The run's store may have been imported again since, with other patients under its name:
    they were copied in as the model's prior data (rehearsed, held out) without a word."""
    if not isinstance(fingerprint, str) or not fingerprint:
        return  # a record from before fingerprints: nothing to compare
    try:
        with SliceStore.open(store) as opened:
            same = same_fingerprint(opened, fingerprint)
    except CGSError as error:
        raise PriorDataError(
            f"{store}: the store {model.name} was trained on cannot be read ({error})"
        ) from None
    if not same:
        raise PriorDataError(
            f"{store}: no longer holds the data {model} was trained on (its content changed since); "
            "name the data it was trained on explicitly (cgs project create --prior-data), or none"
        )


def import_prior(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    class_names: list[str],
    normalization: Normalization,
    colors: list[list[int]] | None = None,
) -> PriorSummary:
    """Copy prior data into the slice store ``destination`` (normalised), checked first."""
    summary, volumes = read_prior(source, class_names, normalization)
    with SliceStore.create(destination, class_names, normalization, colors) as target:
        for name, split, image, label, review, geometry, in_plane in volumes:
            target.add_volume(
                name, image, label, review, geometry, split=split, source=summary.source, in_plane_mm=in_plane
            )
    return summary


def read_prior(source: str | os.PathLike, class_names: list[str], normalization: Normalization):
    """(summary, volumes) of prior data, checked; ``volumes`` yields (name, split, normalised image,
    labels, review or None, geometry or None where the store does not know the volume's spacing,
    the canonical slices' pixel spacing (row, column mm) where a store records it, also for slices
    cut out of a scan, which have no 3D grid) one volume at a time, split "labeled" (train) or "val"."""
    source = Path(source)
    if not source.exists():
        raise PriorDataError(f"{source}: no such prior data (a prior folder or a slice store file)")
    if source.is_dir():
        cases, citation = _read_manifest(source, class_names)
        summary = PriorSummary(str(source.resolve()), "folder", *_case_names(cases), citation)
        volumes = _folder_volumes(source, cases, normalization, len(class_names))
    else:
        store = _open_store(source, class_names, normalization)
        with store:
            names = {split: store.volume_names(split) for split in ("labeled", "val")}
        summary = PriorSummary(str(source.resolve()), "store", names["labeled"], names["val"], "")
        volumes = _store_volumes(source)
    if not summary.train:
        raise PriorDataError(f"{source}: prior data without any training case")
    return summary, volumes


def _read_manifest(folder: Path, class_names: list[str]) -> tuple[list[dict[str, str]], str]:
    manifest = folder / "prior.json"
    if not manifest.is_file():
        raise PriorDataError(f"{manifest}: missing; a prior folder lists its cases in prior.json")
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as error:
        raise PriorDataError(f"{manifest}: not readable JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != PRIOR_FORMAT:
        raise PriorDataError(f"{manifest}: not a napari-cgs prior data manifest")
    if data.get("class_names") != class_names:
        raise PriorDataError(
            f"{manifest}: its classes {data.get('class_names')} differ from the project's {class_names}"
        )
    cases = data.get("cases")
    if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
        raise PriorDataError(f"{manifest}: 'cases' must be a list of {{name, image, labels, split}}")
    for case in cases:
        if case.get("split") not in PRIOR_SPLITS or not all(
            isinstance(case.get(key), str) for key in ("name", "image", "labels")
        ):
            raise PriorDataError(
                f"{manifest}: bad case {case!r} (needs name, image, labels, split train/val)"
            )
        for key in ("image", "labels"):
            path = (folder / case[key]).resolve()
            if folder.resolve() not in path.parents:
                raise PriorDataError(
                    f"{manifest}: case {case['name']!r}: {case[key]} lies outside the folder"
                )
            if not path.exists():
                raise PriorDataError(f"{path}: missing prior {key} of case {case['name']!r}")
    return cases, str(data.get("citation", ""))


def _case_names(cases: list[dict[str, str]]) -> tuple[list[str], list[str]]:
    return (
        [c["name"] for c in cases if c["split"] == "train"],
        [c["name"] for c in cases if c["split"] == "val"],
    )


def _folder_volumes(folder: Path, cases: list[dict[str, str]], normalization: Normalization, classes: int):
    for case in cases:
        image_path, labels_path = folder / case["image"], folder / case["labels"]
        image = read_volume(image_path)
        labels = read_volume(labels_path, kind="labels")
        check_same_grid(labels, image, str(labels_path))
        label = check_label_map(labels.array, str(labels_path))
        highest = int(label.max()) if label.size else 0
        if highest >= classes:  # checked before the uint8 store type: id 257 was stored as 1
            raise PriorDataError(
                f"{labels_path}: label id {highest} is not a class of the project (0..{classes - 1})"
            )
        label = label.astype(np.uint8)
        normalised = normalization.apply(image.array)
        yield case["name"], PRIOR_SPLITS[case["split"]], normalised, label, None, image.geometry, None


def _open_store(path: Path, class_names: list[str], normalization: Normalization) -> SliceStore:
    try:
        store = SliceStore.open(path)
    except CGSError as error:
        raise PriorDataError(f"{path}: not usable as prior data ({error})") from None
    problem = None
    if store.class_names != class_names:
        problem = f"its classes {store.class_names} differ from the project's {class_names}"
    elif store.normalization != normalization:
        problem = f"it was normalised with {store.normalization.describe()}, not {normalization.describe()}"
    if problem:
        store.close()
        raise PriorDataError(f"{path}: {problem}")
    return store


def _store_volumes(path: Path):
    with SliceStore.open(path) as store:
        for split in ("labeled", "val"):
            for name in store.volume_names(split):
                stored = store.read_volume(name)
                # a volume stored without its spacing (cgs import acdc) holds a 1 mm placeholder:
                # None says so, so that nothing measures millimetres or millilitres on it
                info = store.volume_info(name)
                yield (
                    name,
                    split,
                    stored.image,
                    stored.label,
                    stored.review,
                    stored.geometry if info.spacing_known else None,
                    info.in_plane_mm,  # known for slices cut out of a scan, without a 3D grid
                )
