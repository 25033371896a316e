"""Creating a project folder (assembled under a temporary name, then renamed into place) and
reading its ``project.json``."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.classes.checks import ClassTableError, check_class_names, check_colors
from cgs_engine.durable import TEMP_SUFFIX, WriteError, describe_write_failure, process_alive
from cgs_engine.errors import first_line
from cgs_engine.normalize import Normalization
from cgs_engine.project.prior import PriorDataError, find_model_prior, import_prior
from cgs_engine.project.settings import DEFAULT_SETTINGS, checked_settings
from cgs_engine.project.versions import (
    ProjectError,
    fsync_dir,
    now_iso,
    read_json,
    temp_path_for,
    write_active,
    write_json_atomically,
    write_version,
)
from cgs_engine.review.error_model import sidecar_path

PROJECT_FORMAT = "napari-cgs-project"
PROJECT_FORMAT_VERSION = 1
AUTO_PRIOR = "auto"  # Project.create: the base model's own prior data, when it has some


def create_project_folder(
    folder: Path,
    class_names: Sequence[str],
    normalization: Normalization,
    colors: Sequence[Sequence[int]] | None,
    base_model: str | os.PathLike | None,
    prior_data: str | os.PathLike | None,
) -> None:
    """The folder of a new project, complete or not at all (see ``Project.create``)."""
    names, colors = _checked_new_project(folder, class_names, normalization, colors, base_model)
    if isinstance(prior_data, str) and prior_data == AUTO_PRIOR:
        prior_data = None if base_model is None else find_model_prior(base_model)
    _remove_killed_creations(folder)
    temp = temp_path_for(folder)
    try:
        temp.mkdir()
    except OSError as error:
        raise ProjectError(f"{folder}: cannot be created ({error.strerror or error})") from None
    try:
        _assemble(temp, names, colors, normalization, base_model)
        if prior_data is not None:
            import_prior_into(temp, Path(prior_data), names, normalization, colors)
        _move_into_place(temp, folder)
    except (OSError, WriteError) as error:  # the disk refused (full?): name the project, not a temp file
        shutil.rmtree(temp, ignore_errors=True)
        reason = describe_write_failure(error, folder.parent)
        raise ProjectError(f"{folder}: cannot be created ({reason}); nothing was left behind") from None
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)


def _remove_killed_creations(folder: Path) -> None:
    """The half-assembled copies (base model, prior data) that creations of this project killed
    midway left beside it: exactly the temp name a creation uses, its process gone. Anything else
    there is the user's, in a folder they chose (their home, say), and is never touched."""
    own_form = re.compile(rf"^\.{re.escape(folder.name)}\.(\d+)-[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}$")
    try:
        entries = list(folder.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = own_form.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not process_alive(int(match[1])):
            shutil.rmtree(entry, ignore_errors=True)


def _checked_new_project(folder: Path, class_names, normalization, colors, base_model):
    """(class names, colours) checked, with the base model's colours when none are given."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ProjectError(f"{folder}: already exists and is not an empty folder")
    if not folder.parent.is_dir():
        raise ProjectError(f"{folder}: parent folder {folder.parent} does not exist")
    if not isinstance(normalization, Normalization):
        raise ProjectError(f"{folder}: normalization must be a Normalization")
    try:
        names = check_class_names(class_names)
    except ClassTableError as error:
        raise ProjectError(f"{folder}: {error}") from None
    if base_model is not None:
        base = _checked_base_model(Path(base_model), names, normalization)
        if colors is None and len(base.class_colors) == len(names):
            colors = base.class_colors
    try:
        return names, check_colors(colors, len(names))
    except ClassTableError as error:
        raise ProjectError(f"{folder}: {error}") from None


def _assemble(temp: Path, names, colors, normalization: Normalization, base_model) -> None:
    for sub in ("corrections", "unlabeled", "models", "runs"):
        (temp / sub).mkdir()
    write_json_atomically(temp / "unlabeled" / "scans.json", {"scans": []})
    record = {
        "format": PROJECT_FORMAT,
        "format_version": PROJECT_FORMAT_VERSION,
        "created": now_iso(),
        "class_names": names,
        "class_colors": colors,
        "normalization": normalization.to_dict(),
        "settings": json.loads(json.dumps(DEFAULT_SETTINGS)),
    }
    write_json_atomically(temp / "project.json", record)
    active = None
    if base_model is not None:
        source = Path(base_model).resolve()
        calibration = sidecar_path(source)
        version = write_version(
            temp / "models",
            source,
            {
                "origin": "imported",
                "status": "imported",
                "reason": f"imported from {source}",
                "parent": None,
                "source": str(source),
                "metrics": {},
                "error_model": "the base model's" if calibration.is_file() else None,
            },
            error_model=calibration if calibration.is_file() else None,
        )
        active = version.id
    write_active(temp / "active.json", active, "created", [])


def read_project_file(folder: Path) -> tuple[list[str], list[list[int]], Normalization, dict[str, Any], str]:
    """(class names, colours, normalization, settings, created) from ``folder/project.json``, checked."""
    if folder.is_file():
        raise ProjectError(f"{folder}: is a file, not a project folder (`cgs project create` makes one)")
    if not folder.is_dir():
        raise ProjectError(f"{folder}: no such project folder")
    path = folder / "project.json"
    if not path.is_file():
        raise ProjectError(f"{path}: missing project file; {folder} is not a napari-cgs project")
    data = read_json(path, "project file")
    if not isinstance(data, dict) or data.get("format") != PROJECT_FORMAT:
        raise ProjectError(f"{path}: not a napari-cgs project file")
    version = data.get("format_version")
    if not isinstance(version, int) or version > PROJECT_FORMAT_VERSION:
        raise ProjectError(
            f"{path}: project format version {version} is not supported "
            f"(this napari-cgs reads up to {PROJECT_FORMAT_VERSION})"
        )
    try:
        names = check_class_names(data["class_names"])
        colors = check_colors(data.get("class_colors"), len(names))
        normalization = Normalization.from_dict(data["normalization"])
        settings = checked_settings({**DEFAULT_SETTINGS, **(data.get("settings") or {})})
    except (KeyError, TypeError, ValueError) as error:
        raise ProjectError(f"{path}: damaged project file ({first_line(error)})") from None
    return names, colors, normalization, settings, str(data.get("created", ""))


def _checked_base_model(path: Path, names: list[str], normalization: Normalization):
    checkpoint = load_checkpoint(path)
    if checkpoint.class_names != names:
        raise ProjectError(
            f"{path}: the model's classes {checkpoint.class_names[1:]} differ from {names[1:]}"
        )
    if Normalization.from_dict(checkpoint.normalization) != normalization:
        described = Normalization.from_dict(checkpoint.normalization).describe()
        raise ProjectError(
            f"{path}: the model expects {described}, not the project's {normalization.describe()}"
        )
    if checkpoint.model_config.heads != "three-class":
        raise ProjectError(
            f"{path}: not a CGS model (heads {checkpoint.model_config.heads!r}); cannot retrain it"
        )
    return checkpoint


def import_prior_into(folder: Path, source: Path, names, normalization, colors) -> None:
    """``folder/prior/prior.h5`` and ``prior.json`` from ``source``; the old ones stay until both exist."""
    prior = folder / "prior"
    prior.mkdir(exist_ok=True)
    # Left by an import killed (or out of disk space) after its new files were complete: ours to
    # replace, as the caller holds the project's retrain lock. Kept, one file blocked every later import.
    for leftover in (prior / "prior.h5.new", prior / "prior.json.new"):
        leftover.unlink(missing_ok=True)
    try:
        summary = import_prior(source, prior / "prior.h5.new", list(names), normalization, colors)
    except PriorDataError as error:
        raise ProjectError(str(error)) from None
    record = {**summary.to_dict(), "imported": now_iso()}
    write_json_atomically(prior / "prior.json.new", record)
    os.replace(prior / "prior.h5.new", prior / "prior.h5")
    os.replace(prior / "prior.json.new", prior / "prior.json")
    fsync_dir(prior)


def _move_into_place(temp: Path, folder: Path) -> None:
    """Rename the assembled project onto ``folder``; another process's project there is kept."""
    try:
        if folder.is_dir():
            folder.rmdir()  # empty (checked before); rename needs the name free on every OS
        os.rename(temp, folder)
    except OSError as error:
        if folder.exists():
            raise ProjectError(f"{folder}: was created by another process meanwhile; kept as it is") from None
        raise ProjectError(f"{folder}: cannot be created ({error.strerror or error})") from None
