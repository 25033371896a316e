"""One checkpoint file: model weights plus everything needed to use them on a new volume.

Written atomically (temp file, fsync, rename), so a crash mid-write leaves the previous file.
Loaded with ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain values only.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from cgs_engine import __version__
from cgs_engine.classes.checks import MAX_CLASSES, ClassTableError
from cgs_engine.classes.table import class_table_from_list, derive_class_table
from cgs_engine.durable import write_atomically, zip_archive_problem
from cgs_engine.errors import CGSError
from cgs_engine.io.formats import extension_of
from cgs_engine.model import ModelConfig, build_model
from cgs_engine.normalize import Normalization

CHECKPOINT_FORMAT = "napari-cgs-checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = (
    "format",
    "format_version",
    "model_config",
    "state_dict",
    "class_names",
    "input_size",
    "normalization",
)


class CheckpointError(CGSError):
    """A checkpoint that cannot be read or used; one line naming the file."""


@dataclass
class ModelCheckpoint:
    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    input_size: int
    normalization: dict[str, Any]
    class_colors: list[list[int]] = field(default_factory=list)
    # TG-263 name, SNOMED CT code and colour per class (cgs_engine.classes.table); derived from
    # the class names when a checkpoint has none, and written into every checkpoint saved.
    class_table: list[dict[str, Any]] = field(default_factory=list)
    method: str = "cgs"
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    # What the model was trained on (cgs_engine.scope.TrainingScope.to_dict()); empty for
    # checkpoints from before scopes were recorded, which get no scope check.
    scope: dict[str, Any] = field(default_factory=dict)
    engine_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # The file it was read from ("" when built in memory); not saved. Files beside a checkpoint
    # belong to it (its error model, model.review.json; its prior data, model.prior/).
    source: str = field(default="", compare=False)

    def to_payload(self, half: bool = False) -> dict[str, Any]:
        class_table = self.class_table or derive_class_table(self.class_names, self.class_colors).to_list()
        weights = {
            k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
            for k, v in self.state_dict.items()
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "model_config": self.model_config.to_dict(),
            "state_dict": weights,
            "weights_sha256": weights_digest(weights),
            "class_names": list(self.class_names),
            "class_colors": [list(c) for c in self.class_colors],
            "class_table": class_table,
            "input_size": int(self.input_size),
            "normalization": dict(self.normalization),
            "method": self.method,
            "train_config": self.train_config,
            "metrics": self.metrics,
            "data_fingerprint": self.data_fingerprint,
            "scope": dict(self.scope),
            "engine_version": self.engine_version,
            "created": self.created,
        }


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the target folder, read back (every member's CRC), fsync, then
    rename over the target; a full disk is a one-line WriteError and the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temp: torch.save(payload, temp), verify=zip_archive_problem)


def save_checkpoint(checkpoint: ModelCheckpoint, path: str | os.PathLike, half: bool = False) -> Path:
    return atomic_torch_save(checkpoint.to_payload(half=half), path)


def load_payload(path: str | os.PathLike) -> dict[str, Any]:
    """torch.load with clear one-line errors for missing, truncated or foreign files."""
    path = Path(path)
    if path.is_dir():  # a run folder (`cgs train -o runs/cgs`) given where its model belongs
        inside = [name for name in ("best.pt", "final.pt") if (path / name).is_file()]
        hint = f"; its model is {path / inside[0]}" if inside else ""
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.pt){hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    if extension_of(path) is not None:  # a scan where the model belongs (arguments swapped)
        raise CheckpointError(f"{path}: is an image, not a checkpoint (.pt); the model comes first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged archives
        if not zipfile.is_zipfile(path) and not _starts_like_an_archive(path):  # (a cut one does)
            raise CheckpointError(
                f"{path}: not a readable checkpoint (no PyTorch archive: another kind of file?)"
            ) from None
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        foreign = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if foreign and not foreign[1].startswith("torch."):
            # torch's own advice (load it with weights_only=False) would run the file's code
            raise CheckpointError(
                f"{path}: holds Python objects ({foreign[1]}) beyond weights and settings, which are "
                "not loaded (a checkpoint of another program?)"
            ) from None
        if "weights only" in first_line.lower():  # a torch name cut short: the file ends early
            first_line = f"an object in it is cut short or damaged ({foreign[1] if foreign else 'unknown'})"
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt: {first_line})"
        ) from None


def _starts_like_an_archive(path: Path) -> bool:
    """A zip archive (torch's format, maybe cut short) or torch's older pickle format."""
    with open(path, "rb") as stream:
        start = stream.read(4)
    return start == b"PK\x03\x04" or start[:1] == b"\x80"


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, type, shape and bytes: a flipped bit changes it."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | os.PathLike) -> ModelCheckpoint:
    """A checkpoint whose weights and metadata are checked, so that a damaged or hand-edited file is
    refused here in one line instead of failing (or predicting nonsense) later."""
    payload = load_payload(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a napari-cgs model checkpoint")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    _check_format_version(payload["format_version"], path)
    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: incompatible model settings ({error})") from None
    class_names = _check_class_names(payload["class_names"], config.num_classes, path)
    _check_input_size(payload["input_size"], path)
    normalization = _check_normalization(payload["normalization"], path)
    colors = _check_colors(payload.get("class_colors"), len(class_names), path)
    _check_weights(payload, path)
    scope = payload.get("scope") or {}
    _check_scope(scope, path)
    tables = {key: payload.get(key) or {} for key in ("train_config", "metrics")}
    for key, value in tables.items():
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: damaged checkpoint (its {key} is not a table)")
    checkpoint = ModelCheckpoint(
        model_config=config,
        state_dict=payload["state_dict"],
        class_names=class_names,
        input_size=int(payload["input_size"]),
        normalization=normalization,
        class_colors=colors,
        class_table=_check_class_table(payload.get("class_table") or [], path),
        method=str(payload.get("method", "cgs")),
        train_config=tables["train_config"],
        metrics=tables["metrics"],
        data_fingerprint=str(payload.get("data_fingerprint", "")),
        scope=dict(scope),
        engine_version=str(payload.get("engine_version", "unknown")),
        created=str(payload.get("created", "")),
        source=str(path),
    )
    return checkpoint


MIN_INPUT_SIZE, MAX_INPUT_SIZE = 8, 4096


def _check_format_version(value: Any, path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(
            f"{path}: damaged checkpoint (format version {value!r} is not a whole number >= 1)"
        )
    if value > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {value} is newer than this engine reads ({CHECKPOINT_VERSION}); "
            "update napari-cgs"
        )


def _check_class_names(names: Any, num_classes: int, path) -> list[str]:
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
        raise CheckpointError(f"{path}: damaged checkpoint (class names must be a list of non-empty texts)")
    if len(names) != num_classes:
        raise CheckpointError(f"{path}: {len(names)} class names for a {num_classes}-class model")
    if num_classes > MAX_CLASSES:  # what a training store (uint8 labels) holds
        raise CheckpointError(f"{path}: {num_classes} classes; at most {MAX_CLASSES} are supported")
    return list(names)


def _check_normalization(value: Any, path) -> dict[str, Any]:
    try:
        return Normalization.from_dict(value).to_dict()
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: damaged checkpoint (normalisation: {error})") from None


def _check_colors(value: Any, count: int, path) -> list[list[int]]:
    if not value:
        return []
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise CheckpointError(f"{path}: damaged checkpoint (it needs one colour per class, {count})")
    for color in value:
        valid = isinstance(color, (list, tuple)) and len(color) in (3, 4)
        if not valid or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color
        ):
            raise CheckpointError(
                f"{path}: damaged checkpoint (class colour {color!r} is not 3 whole numbers from 0 to 255)"
            )
    return [list(color) for color in value]


def _check_class_table(value: Any, path) -> list[dict[str, Any]]:
    if not value:
        return []
    if not isinstance(value, list):
        raise CheckpointError(f"{path}: damaged checkpoint (its class table is not a list)")
    try:
        class_table_from_list(value, str(path))
    except ClassTableError as error:
        raise CheckpointError(f"damaged checkpoint: {error}") from None
    return list(value)


def _check_scope(scope: Any, path) -> None:
    """A table of numbers (three texts aside): ``check_scope`` computes with every one of them."""
    if not isinstance(scope, dict):
        raise CheckpointError(f"{path}: damaged checkpoint (its training scope is not a table)")
    texts = {"modality", "body_region", "intensity.unit"}

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{where}.{key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for inner in value:
                walk(inner, where)
        elif where in texts:
            if not isinstance(value, str):
                raise CheckpointError(f"{path}: damaged checkpoint (training scope {where} is not text)")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CheckpointError(
                f"{path}: damaged checkpoint (training scope {where} = {value!r} is not a number)"
            )

    walk(scope, "")


def _check_input_size(value: Any, path) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_INPUT_SIZE <= value <= MAX_INPUT_SIZE:
        raise CheckpointError(
            f"{path}: damaged checkpoint (input size {value!r}, expected {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE})"
        )


def _check_weights(payload: dict[str, Any], path) -> None:
    weights = payload["state_dict"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: damaged checkpoint (its weights are not a table of tensors)")
    recorded = payload.get("weights_sha256")  # checkpoints before the checksum have none
    if recorded is not None and recorded != weights_digest(weights):
        raise CheckpointError(f"{path}: damaged checkpoint (its weights do not match their checksum)")
    # A checksum recomputed after the damage still matches: NaN or infinite weights are refused on
    # their own (such a model answers "background" everywhere without any error).
    for key, tensor in weights.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: damaged checkpoint (weights {key} hold NaN or infinite values)")


def build_network(checkpoint: ModelCheckpoint, path: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """The network of a checkpoint with its weights loaded (fp32, eval mode)."""
    model = build_model(checkpoint.model_config)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in checkpoint.state_dict.items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the model settings ({detail})") from None
    return model.eval()
