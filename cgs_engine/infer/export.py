"""Writing a Prediction as NIfTI files on the input geometry, plus a class table sidecar."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cgs_engine.infer.predictor import Prediction
from cgs_engine.runtime import usable_cores


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def prediction_paths(out_dir: Path, stem: str, prediction: Prediction, maps: bool) -> dict[str, Path]:
    paths = {"labels": out_dir / f"{stem}_labels.nii.gz"}
    if maps:
        for name in prediction.specialist_maps:
            paths[f"map:{name}"] = out_dir / f"{stem}_map_{_safe(name)}.nii.gz"
        if prediction.disagreement is not None:
            paths["disagreement"] = out_dir / f"{stem}_disagreement.nii.gz"
    paths["classes"] = out_dir / f"{stem}_classes.json"
    return paths


def write_prediction(
    prediction: Prediction,
    out_dir: str | Path,
    stem: str,
    maps: bool = True,
    overwrite: bool = False,
    class_colors: list[list[int]] | None = None,
    class_table: list[dict] | None = None,
) -> dict[str, Path]:
    """Write labels (uint8 ids), specialist maps and disagreement (uint8, 255 = 1.0) and a class table.

    ``class_table`` (a checkpoint's, see ``cgs_engine.dicom.class_table``) adds each class's TG-263
    name and SNOMED CT code to the table, for ``cgs rtstruct export`` / ``cgs seg export``.

    Every target path is checked before anything is written, so a refusal writes nothing.
    """
    from cgs_engine.io import VolumeIOError, write_volume

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = prediction_paths(out_dir, stem, prediction, maps)
    if not overwrite:
        for path in paths.values():
            if path.exists():
                raise VolumeIOError(f"{path}: already exists (pass --overwrite to replace it)")
    jobs = [(prediction.labels, paths["labels"])]
    if maps:
        jobs += [(volume, paths[f"map:{name}"]) for name, volume in prediction.specialist_maps.items()]
        if prediction.disagreement is not None:
            jobs.append((prediction.disagreement, paths["disagreement"]))
    # gzip dominates writing and ITK releases the GIL: one file per core at a time
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        list(pool.map(lambda job: write_volume(job[0], job[1], overwrite=overwrite), jobs))
    colors = class_colors or []
    identities = {int(entry["id"]): entry for entry in class_table or []}
    table = [
        {
            **identities.get(i, {}),
            "id": i,
            "name": name,
            **({"color": colors[i]} if i < len(colors) else {}),
        }
        for i, name in enumerate(prediction.class_names)
    ]
    paths["classes"].write_text(
        json.dumps({"classes": table, "map_scale": "uint8, 255 = probability 1"}, indent=2)
    )
    return paths
