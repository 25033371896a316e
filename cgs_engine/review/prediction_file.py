"""What a pre-segmentation showed besides the labels, kept beside the review session for a restore.

A session is rewritten at every accept and after each paint stroke; the specialist maps, the
disagreement map and the generalist's own labels change only when the model runs again. So
they go to their own file, ``<stem>.cgs-prediction.h5`` beside the session file, written once
per pre-segmentation. Both files carry the same ``prediction_id``: a restore shows the maps
only when they belong to the labels it restores (a re-run whose maps could not be written
leaves no stale maps to show).

Layout: datasets ``labels`` (the generalist's labels), ``disagreement`` (uint8) and
``specialist/<class name>`` (uint8, 255 = 1.0), gzip level 1, one chunk per z slice;
attributes ``format``, ``format_version``, ``fingerprint``, ``prediction_id``, ``saved`` and
JSON strings ``class_names`` and ``class_colors``. Written atomically (temp file, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from cgs_engine.h5_durable import write_h5_atomically
from cgs_engine.review.session import SESSION_SUFFIX, SessionError

FORMAT_NAME = "napari-cgs-prediction"
FORMAT_VERSION = 1
PREDICTION_SUFFIX = ".cgs-prediction.h5"


@dataclass
class SavedPrediction:
    path: Path
    prediction_id: str
    fingerprint: str
    class_names: list[str]
    class_colors: list[list[int]]
    labels: np.ndarray
    specialist_maps: dict[str, np.ndarray] = field(default_factory=dict)  # class name -> uint8 map
    disagreement: np.ndarray | None = None


def prediction_path_for(session_path: str | os.PathLike) -> Path:
    """``<stem>.cgs-prediction.h5`` beside ``<stem>.cgs-session.h5``."""
    path = Path(session_path)
    stem = path.name[: -len(SESSION_SUFFIX)] if path.name.endswith(SESSION_SUFFIX) else path.stem
    return path.with_name(stem + PREDICTION_SUFFIX)


def save_prediction(
    path: str | os.PathLike,
    prediction_id: str,
    image_fingerprint: str,
    labels: np.ndarray,
    specialist_maps: dict[str, np.ndarray],
    disagreement: np.ndarray | None,
    class_names: list[str],
    class_colors: list[list[int]],
) -> Path:
    """Write the prediction's maps and labels atomically; the previous file survives any failure."""
    target = Path(path)
    labels = np.asarray(labels)
    arrays = {"labels": labels, **{f"specialist/{k}": np.asarray(v) for k, v in specialist_maps.items()}}
    if disagreement is not None:
        arrays["disagreement"] = np.asarray(disagreement)
    for name, array in arrays.items():
        if array.shape != labels.shape or array.ndim != 3:
            raise SessionError(f"{target}: {name} has shape {array.shape}, the labels {labels.shape}")
    unknown = [name for name in specialist_maps if name not in class_names or "/" in name]
    if unknown:
        raise SessionError(f"{target}: maps of classes not in the class table: {', '.join(unknown)}")

    # through the guarded writer, read back before it replaces the old file: HDF5 opened plainly on
    # a disk that filled up crashed the whole viewer (SIGSEGV) when the file was closed, and the
    # labels painted since the last autosave were lost with it
    def fill(file: h5py.File) -> None:
        file.attrs.update(
            format=FORMAT_NAME,
            format_version=FORMAT_VERSION,
            fingerprint=image_fingerprint,
            prediction_id=prediction_id,
            saved=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            class_names=json.dumps(list(class_names)),
            class_colors=json.dumps([[int(c) for c in colour] for colour in class_colors]),
        )
        for name, array in arrays.items():
            _, height, width = array.shape
            file.create_dataset(
                name, data=array, chunks=(1, height, width), compression="gzip", compression_opts=1
            )

    try:
        write_h5_atomically(target, fill)
    except OSError as error:
        raise SessionError(f"{target}: cannot save the prediction's maps ({_one_line(error)})") from error
    return target


def load_prediction(
    path: str | os.PathLike, expected_fingerprint: str | None = None, expected_id: str | None = None
) -> SavedPrediction:
    """Read a saved prediction; :class:`SessionError` if missing, corrupt, or not the one expected."""
    source = Path(path)
    if not source.is_file():
        raise SessionError(f"{source}: no saved prediction")
    if not h5py.is_hdf5(source):
        raise SessionError(f"{source}: not a saved prediction (not HDF5, or corrupt)")
    try:
        with h5py.File(source, "r") as file:
            if _text(file.attrs.get("format", "")) != FORMAT_NAME:
                raise SessionError(f"{source}: not a napari-cgs saved prediction (HDF5 file of another kind)")
            if int(file.attrs.get("format_version", -1)) != FORMAT_VERSION:
                raise SessionError(
                    f"{source}: saved prediction format {file.attrs.get('format_version')} unknown"
                )
            fingerprint, prediction_id = _text(file.attrs["fingerprint"]), _text(file.attrs["prediction_id"])
            if expected_fingerprint is not None and fingerprint != expected_fingerprint:
                raise SessionError(f"{source}: saved prediction of a different image (fingerprint mismatch)")
            if expected_id is not None and prediction_id != expected_id:
                raise SessionError(f"{source}: saved prediction of an earlier or later run than the session")
            specialist = file.get("specialist", {})
            names = [str(n) for n in json.loads(_text(file.attrs["class_names"]))]
            return SavedPrediction(
                path=source,
                prediction_id=prediction_id,
                fingerprint=fingerprint,
                class_names=names,
                class_colors=[
                    [int(c) for c in colour] for colour in json.loads(_text(file.attrs["class_colors"]))
                ],
                labels=file["labels"][()],
                specialist_maps={name: specialist[name][()] for name in names if name in specialist},
                disagreement=file["disagreement"][()] if "disagreement" in file else None,
            )
    except SessionError:
        raise
    except KeyError as error:
        raise SessionError(
            f"{source}: saved prediction is incomplete (missing {_one_line(error)})"
        ) from error
    except (OSError, ValueError, TypeError) as error:
        raise SessionError(f"{source}: saved prediction is corrupt ({_one_line(error)})") from error


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
