"""ACDC for the benchmarks: patient splits, slice stores, volume files and scoring.

The SSL4MIS release here has 70 train patients (as slices) and 10 val patients (20 volumes). The
benchmarks never choose a recipe, a checkpoint or a stopping point on the patients they report,
so the train patients are split, in the order of ``train_slices.list``:

  labeled  the first 3 (the literature's "3 labeled patients", 68 slices)
  pool     the next 10: the patients a clinic corrects later (the retrain benchmarks add k of them)
  dev      the last 10 (20 volumes): selection data (validation during training, recipe choices)
  rest     the other 47: unlabeled scans

and every reported figure comes from the 20 ``val`` volumes (``test`` below), which nothing is
selected on. Research-only data: read from ../shared/data, never copied into the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELED, POOL, DEV = 3, 10, 10


@dataclass(frozen=True)
class AcdcSplit:
    root: Path
    volumes: dict[str, list[str]]  # patient -> its train volume ids
    labeled: list[str]
    pool: list[str]
    dev: list[str]
    rest: list[str]
    test: list[str]  # val.list volume ids (reported only)

    def volume_ids(self, patients: list[str]) -> list[str]:
        return [v for p in patients for v in self.volumes[p]]


def acdc_split(root: Path) -> AcdcSplit:
    from cgs_engine.store.importers import _list_entries, read_acdc_train_volumes

    volumes: dict[str, list[str]] = {}
    for volume in read_acdc_train_volumes(root):
        volumes.setdefault(volume.patient, []).append(volume.volume_id)
    order = list(volumes)
    labeled, pool = order[:LABELED], order[LABELED : LABELED + POOL]
    dev, rest = order[-DEV:], order[LABELED + POOL : -DEV]
    test = [volume_id for _, volume_id in _list_entries(root / "val.list")]
    return AcdcSplit(root, volumes, labeled, pool, dev, rest, test)


def read_volume_arrays(split: AcdcSplit, volume_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(image [z, y, x] float32 in [0, 1], label uint8) of a train or val volume."""
    from cgs_engine.store.importers import _read_acdc_slices, _read_h5_pair, read_acdc_train_volumes

    data = split.root / "data"
    single = data / f"{volume_id}.h5"
    if single.is_file():
        return _read_h5_pair(single, ndim=3, with_label=True)
    volume = next(v for v in read_acdc_train_volumes(split.root) if v.volume_id == volume_id)
    return _read_acdc_slices(data, volume, with_label=True)


def build_store(
    split: AcdcSplit,
    out: Path,
    labeled: list[str],
    unlabeled: list[str],
    val_volumes: list[str],
    normalization: str = "minmax",
) -> Path:
    """A slice store: ``labeled`` and ``unlabeled`` patients, ``val_volumes`` as its val split.

    ``normalization`` "minmax" keeps the files' per-volume min-max scale (what SSL4MIS did);
    "mr-percentile" maps each volume's 0.5 and 99.5 percentiles to 0 and 1, which a bright
    outlier voxel cannot squeeze (dev patient042 is stored at a mean of 0.035 of its range).
    """
    from cgs_engine.normalize import Normalization
    from cgs_engine.store import SliceStore
    from cgs_engine.store.importers import ACDC_CLASS_NAMES

    if out.exists():
        return out
    normalize = Normalization(mode=normalization)
    with SliceStore.create(out, ACDC_CLASS_NAMES, normalize) as store:
        for patients, kind in ((labeled, "labeled"), (unlabeled, "unlabeled")):
            for volume_id in split.volume_ids(patients):
                image, label = read_volume_arrays(split, volume_id)
                label = label if kind == "labeled" else None
                store.add_volume(volume_id, normalize.apply(image), label, split=kind)
        for volume_id in val_volumes:
            image, label = read_volume_arrays(split, volume_id)
            store.add_volume(volume_id, normalize.apply(image), label, split="val")
    return out


def write_volume_files(split: AcdcSplit, volume_id: str, folder: Path) -> tuple[Path, Path]:
    """The volume as NIfTI image + labels (unit spacing: ACDC's files carry none), for projects."""
    from cgs_engine.io import write_volume
    from cgs_engine.volume import Geometry, Volume

    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"{volume_id}.nii.gz", folder / f"{volume_id}_labels.nii.gz"
    if not label_path.exists():
        image, label = read_volume_arrays(split, volume_id)
        geometry = Geometry()
        write_volume(Volume(image.astype(np.float32), geometry), image_path, overwrite=True)
        write_volume(Volume(label.astype(np.uint8), geometry, kind="labels"), label_path, overwrite=True)
    return image_path, label_path


def score(checkpoint: Path, split: AcdcSplit, volume_ids: list[str] | None = None, threads: int = 1) -> dict:
    """Per volume, per class: 3D Dice in percent on the original grid (default: the 20 test volumes)."""
    import torch

    from cgs_engine.checkpoint import build_network, load_checkpoint
    from cgs_engine.evaluate.metrics import dice_per_class
    from cgs_engine.infer.slices import predict_label_volume
    from cgs_engine.normalize import Normalization
    from cgs_engine.runtime import resolve_runtime

    torch.set_num_threads(threads)
    model = load_checkpoint(checkpoint)
    network = build_network(model, checkpoint).eval()
    normalize = Normalization.from_dict(model.normalization)
    runtime = resolve_runtime("cpu", "auto", threads)
    names = model.class_names
    out = {}
    for volume_id in volume_ids or split.test:
        image, label = read_volume_arrays(split, volume_id)
        predicted = predict_label_volume(network, normalize.apply(image), model.input_size, runtime)
        dice = dice_per_class(predicted, label, len(names))
        out[volume_id] = {n: round(100 * float(d), 2) for n, d in zip(names[1:], dice[1:], strict=True)}
    return out


def summary(scores: dict) -> dict[str, float]:
    """Mean over volumes per class, and 'mean' over classes (NaN-free: ACDC volumes hold every class)."""
    classes = list(next(iter(scores.values())))
    per_class = {c: round(float(np.mean([v[c] for v in scores.values()])), 2) for c in classes}
    return {"mean": round(float(np.mean(list(per_class.values()))), 2), **per_class}
