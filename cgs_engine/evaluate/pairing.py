"""Pair prediction files with ground-truth files by case name.

A file's case name is its file name without the image extension (any of
``cgs_engine.io.formats.SUPPORTED_EXTENSIONS``, case-insensitive).  Other files (``.raw`` data of
``.mhd`` headers, JSON, hidden files) and sub-directories are ignored.

A ground-truth case ``NAME`` is matched by the prediction named ``NAME`` or, failing that,
``NAME_labels`` and then ``NAME_seg`` (the names this plugin and common tools write); where the
folder's ``NAME_classes.json`` names ``NAME_labels`` (``cgs predict`` wrote beside the scans),
``NAME_labels`` comes first.
Predictions left over after matching are reported in ``missing_gt``, except the maps that
``cgs predict --maps`` writes beside a matched ``NAME_labels`` (``NAME_map_<organ>``,
``NAME_disagreement``, ``NAME_likely_wrong``): those are counted in ``maps_ignored``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cgs_engine.io.formats import SUPPORTED_EXTENSIONS, extension_of

PREDICTION_SUFFIXES = ("", "_labels", "_seg")  # in order of preference
LABELS_SUFFIX = "_labels"


@dataclass(frozen=True)
class PairResult:
    """``pairs`` sorted by name; ``missing_pred``: ground truths without a prediction;
    ``missing_gt``: predictions without a ground truth (by prediction case name)."""

    pairs: list[tuple[str, Path, Path]]
    missing_pred: list[str]
    missing_gt: list[str]
    maps_ignored: int = 0


def case_name(path: Path) -> str | None:
    """File name without its image extension, or None for a non-image file."""
    extension = extension_of(path.name)
    if extension is None or len(path.name) == len(extension):
        return None
    return path.name[: -len(extension)]


MAP_NAME = re.compile(r"_(disagreement|likely_wrong)$|_map_")  # names `cgs predict --maps` gives


def pair_files(pred_dir: str | Path, gt_dir: str | Path) -> PairResult:
    """Pair the image files of two directories; raise ValueError when nothing pairs."""
    predictions = _images_by_case(Path(pred_dir), "--pred")
    ground_truths = _images_by_case(Path(gt_dir), "--gt")
    if not ground_truths:
        raise ValueError(f"no ground-truth image files ({', '.join(SUPPORTED_EXTENSIONS)}) in {gt_dir}")

    matched: dict[str, Path] = {}
    unused_predictions = dict(predictions)
    # `cgs predict -o` into the scans' folder: NAME is the CT and NAME_labels the prediction, as
    # the class table there says; the CT was scored as the prediction (or refused for its HU).
    for name in sorted(ground_truths):
        predicted = name + LABELS_SUFFIX
        if predicted in unused_predictions and _table_names(Path(pred_dir), name, predicted):
            matched[name] = unused_predictions.pop(predicted)
            unused_predictions.pop(name, None)  # the scan itself, not an unpaired prediction
    # Exact names first for every case, so "a_seg" cannot steal the prediction of case "a_seg".
    for suffix in PREDICTION_SUFFIXES:
        for name in sorted(ground_truths):
            if name not in matched and name + suffix in unused_predictions:
                matched[name] = unused_predictions.pop(name + suffix)
    pairs = [(name, matched[name], ground_truths[name]) for name in sorted(matched)]
    missing_pred = sorted(set(ground_truths) - set(matched))
    if not pairs:
        # the maps `cgs predict --maps` writes beside each prediction are no predictions to count
        maps = [name for name in predictions if MAP_NAME.search(name)]
        besides = f" besides {len(maps)} maps" if maps else ""
        raise ValueError(
            f"no prediction in {pred_dir} matches a ground-truth file in {gt_dir} "
            f"({len(predictions) - len(maps)} predictions{besides}, {len(ground_truths)} ground truths)"
        )
    maps = [name for name in unused_predictions if _is_map_of(name, [p for _, p, _ in pairs])]
    leftover = sorted(set(unused_predictions) - set(maps))
    return PairResult(pairs, missing_pred, missing_gt=leftover, maps_ignored=len(maps))


def _table_names(folder: Path, name: str, predicted: str) -> bool:
    """Whether ``<name>_classes.json`` in ``folder`` is the table of the labels ``predicted``."""
    try:
        table = json.loads((folder / f"{name}_classes.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(table, dict):
        return False
    labels = table.get("labels")
    if labels is None:  # an older prediction's table names no map: NAME_classes.json is predict's
        return isinstance(table.get("classes"), list)
    return isinstance(labels, str) and case_name(Path(labels)) == predicted


def _is_map_of(name: str, label_files: list[Path]) -> bool:
    """Whether ``name`` is a specialist or disagreement map written beside one of ``label_files``."""
    for path in label_files:
        case = case_name(path) or ""
        if case.endswith(LABELS_SUFFIX):
            stem = case[: -len(LABELS_SUFFIX)]
            if name in (f"{stem}_disagreement", f"{stem}_likely_wrong") or name.startswith(f"{stem}_map_"):
                return True
    return False


def _images_by_case(directory: Path, what: str) -> dict[str, Path]:
    if not directory.exists():
        raise ValueError(f"{directory}: no such folder ({what})")
    if not directory.is_dir():
        raise ValueError(f"{directory}: is a file; {what} takes a folder of label maps")
    images: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        name = case_name(path)
        if name is None or path.name.startswith(".") or not path.is_file():
            continue
        if name in images:
            raise ValueError(f"two images for case {name!r} in {directory}: {images[name].name}, {path.name}")
        images[name] = path
    return images
