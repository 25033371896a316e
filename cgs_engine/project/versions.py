"""Model versions of a project, the active-version pointer, and the crash-safe writes they rely on.

  models/v0001/model.pt       the checkpoint of that version
  models/v0001/version.json   id, created, parent, origin, status, reason, metrics, run, ...
  active.json                 {"version": "v0002", "history": [{"version", "at", "why"}, ...]}

A version folder is assembled under a hidden temporary name and renamed into place, and JSON
records are replaced with one rename, so a crash leaves either the old state or the new one.
Hidden leftovers (names starting with ".") are ignored everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cgs_engine.durable import (  # noqa: F401 (re-exported for the project)
    copy_file_checked,
    fsync_dir,
    fsync_file,
    temp_path_for,
    write_json_atomically,
)
from cgs_engine.errors import CGSError

VERSION_NAME = re.compile(r"^v(\d{4,})$")
# imported: brought in as a base model; accepted / rejected: compared on held-out data and
# activated or not; unverified: no held-out data to compare on, so not activated automatically.
VERSION_STATUSES = ("imported", "accepted", "rejected", "unverified")
ACTIVE_HISTORY_KEPT = 200
ERROR_MODEL_FILE = "model.review.json"  # the version's calibrated error model, beside model.pt


class ProjectError(CGSError):
    """A project folder or one of its files cannot be used; one line naming the file."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON or a one-line :class:`ProjectError` naming ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProjectError(f"{path}: missing {what}") from None
    except OSError as error:
        raise ProjectError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProjectError(f"{path}: damaged {what} (not valid JSON: {error})") from None


# ------------------------------------------------------------------------------ versions
@dataclass(frozen=True)
class VersionInfo:
    id: str
    folder: Path
    created: str
    origin: str  # "imported" or "retrained"
    status: str  # one of VERSION_STATUSES
    reason: str
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    run: str | None = None  # runs/<id> that produced it
    record: dict[str, Any] = field(default_factory=dict)  # the whole version.json

    @property
    def model_path(self) -> Path:
        return self.folder / "model.pt"

    @property
    def heldout_dice(self) -> float | None:
        return (self.metrics.get("new") or {}).get("dice_mean")


def version_number(version_id: str) -> int:
    match = VERSION_NAME.match(version_id)
    if not match:
        raise ProjectError(f"{version_id!r} is not a version name (expected e.g. v0001)")
    return int(match.group(1))


def read_version(folder: Path) -> VersionInfo:
    path = folder / "version.json"
    data = read_json(path, "version record")
    if not isinstance(data, dict):
        raise ProjectError(f"{path}: damaged version record (expected a JSON object)")
    try:
        info = VersionInfo(
            id=str(data["id"]),
            folder=folder,
            created=str(data.get("created", "")),
            origin=str(data["origin"]),
            status=str(data["status"]),
            reason=str(data.get("reason", "")),
            parent=data.get("parent"),
            metrics=dict(data.get("metrics") or {}),
            run=data.get("run"),
            record=data,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ProjectError(f"{path}: damaged version record (missing or bad {error})") from None
    if info.id != folder.name:
        raise ProjectError(f"{path}: records version {info.id} but sits in folder {folder.name}")
    if not info.model_path.is_file() or info.model_path.stat().st_size == 0:
        raise ProjectError(f"{info.model_path}: model file of version {info.id} is missing or empty")
    return info


def list_versions(models_dir: Path) -> tuple[list[VersionInfo], list[str]]:
    """Readable versions in id order, and one line per damaged version folder."""
    versions, problems = [], []
    if not models_dir.is_dir():
        return versions, problems
    for folder in sorted(models_dir.iterdir(), key=lambda p: p.name):
        if folder.name.startswith(".") or not folder.is_dir() or not VERSION_NAME.match(folder.name):
            continue
        try:
            versions.append(read_version(folder))
        except ProjectError as error:
            problems.append(str(error))
    versions.sort(key=lambda v: version_number(v.id))
    return versions, problems


def next_version_id(models_dir: Path) -> str:
    numbers = [
        int(m.group(1))
        for p in (models_dir.iterdir() if models_dir.is_dir() else [])
        if (m := VERSION_NAME.match(p.name))
    ]
    return f"v{max(numbers, default=0) + 1:04d}"


def write_version(
    models_dir: Path, model_source: Path, record: dict[str, Any], error_model: Path | None = None
) -> VersionInfo:
    """Copy ``model_source`` into a new version folder with ``record`` as its version.json.

    ``error_model`` (a ``*.review.json``, see ``cgs_engine.review.error_model``) is copied beside
    it as ``model.review.json``, so predictions with the version find their calibration.
    """
    if record.get("status") not in VERSION_STATUSES:
        raise ValueError(f"version status must be one of {VERSION_STATUSES}, got {record.get('status')!r}")
    models_dir.mkdir(parents=True, exist_ok=True)
    version_id = next_version_id(models_dir)
    final = models_dir / version_id
    temp = temp_path_for(final)
    temp.mkdir()
    try:
        copy_file_checked(model_source, temp / "model.pt", shown_as=final / "model.pt")
        fsync_file(temp / "model.pt")
        if error_model is not None:
            shutil.copyfile(error_model, temp / ERROR_MODEL_FILE)
            fsync_file(temp / ERROR_MODEL_FILE)
        write_json_atomically(temp / "version.json", {"id": version_id, "created": now_iso(), **record})
        # rename() of a folder onto an existing non-empty folder fails, so a concurrent writer
        # of the same id cannot be overwritten.
        os.rename(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_dir(models_dir)
    return read_version(final)


# ---------------------------------------------------------------------------- active.json
@dataclass(frozen=True)
class ActiveRecord:
    version: str | None
    history: list[dict[str, Any]]


def read_active(path: Path) -> ActiveRecord:
    data = read_json(path, "active-version record")
    if not isinstance(data, dict) or "version" not in data:
        raise ProjectError(f"{path}: damaged active-version record (expected {{'version': ...}})")
    version = data["version"]
    if version is not None and (not isinstance(version, str) or not VERSION_NAME.match(version)):
        raise ProjectError(f"{path}: damaged active-version record (bad version {version!r})")
    history = data.get("history") or []
    return ActiveRecord(version, list(history) if isinstance(history, list) else [])


def write_active(path: Path, version: str | None, why: str, history: list[dict[str, Any]]) -> None:
    entry = {"version": version, "at": now_iso(), "why": why}
    kept = [*history, entry][-ACTIVE_HISTORY_KEPT:]
    write_json_atomically(path, {"version": version, "history": kept})
