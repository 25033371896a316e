"""A retraining project: one folder holding corrections, unlabeled scan references and model versions.

  project.json          format, version, class names and colours, normalization, settings
  active.json           which model version is active (see ``versions.py``)
  corrections/<n>.h5    one corrected volume: raw image as read, labels, review mask, geometry
  prior/prior.h5        the base model's prior data (the labeled volumes it was trained on),
                        normalised, rehearsed by every retrain (see ``prior.py``); prior.json
  unlabeled/scans.json  absolute paths of unlabeled scans plus cheap fingerprints (read at retrain)
  models/vNNNN/         model versions (model.pt + version.json)
  runs/<id>/            retraining runs (training store, training run dir, plan, outcome)

Every file is replaced with a temp file + fsync + rename, so a crash at any moment leaves the
previous content or the new one; hidden ``.*.partial`` leftovers of a crash are ignored.
Unlabeled scans are referenced, not copied: they can be large, and they are only read when a
retrain builds its training store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.classes.checks import ClassTableError, check_class_names, check_colors
from cgs_engine.durable import WriteError, describe_write_failure, remove_stale_temp_files
from cgs_engine.errors import CGSError
from cgs_engine.h5_durable import foreign_link, write_h5_atomically
from cgs_engine.locks import exclusive
from cgs_engine.normalize import Normalization
from cgs_engine.project.prior import PriorDataError, find_model_prior, import_prior
from cgs_engine.project.versions import (
    ProjectError,
    VersionInfo,
    fsync_dir,
    list_versions,
    now_iso,
    read_active,
    read_json,
    read_version,
    temp_path_for,
    version_number,
    write_active,
    write_json_atomically,
    write_version,
)
from cgs_engine.review.error_model import sidecar_path
from cgs_engine.review.state import ACCEPTED, EDITED, UNREVIEWED
from cgs_engine.volume import Geometry, Volume

STATE_LOCK_WAIT_S = 60.0

PROJECT_FORMAT = "napari-cgs-project"
PROJECT_FORMAT_VERSION = 1
CORRECTION_FORMAT = "napari-cgs-correction"
# 2: review masks hold 0 / 1 ACCEPTED / 2 EDITED; version 1 files held 0 / 1 (read as EDITED).
CORRECTION_FORMAT_VERSION = 2
CORRECTION_NAME = re.compile(r"^[\w][\w .()+-]{0,199}$")
FINGERPRINT_BYTES = 1 << 20
AUTO_PRIOR = "auto"  # Project.create: the base model's own prior data, when it has some

RETRAIN_KEEP = ("final", "best")
DEFAULT_SETTINGS: dict[str, Any] = {
    "retrain_after_n": None,  # opt-in: suggest a retrain after this many new corrected volumes
    "heldout_fraction": 0.25,  # share of corrected volumes set aside to compare models
    "activation_tolerance": 0.0,  # activate when new held-out Dice >= active - tolerance (0..1)
    "retrain_minutes": 10.0,  # default budget when neither minutes nor iterations are given
    "thorough_minutes": 240.0,  # the same for the thorough mode (cgs retrain --thorough)
    # with prior data: the share of labeled training slices drawn from corrections (at least
    # their natural share), so a few corrected volumes are not drowned by the prior data
    "correction_share": 0.5,
    # the model a retrain keeps: "final" (the EMA teacher at the end) or "best" (the training
    # loop's best on the held-out data, which then also judges it: an optimistic comparison)
    "retrain_keep": "final",
    "train": {},  # TrainConfig overrides for retraining (e.g. batch sizes, device)
}


@dataclass(frozen=True)
class CorrectionInfo:
    name: str
    path: Path
    shape: tuple[int, int, int]
    saved: str
    source: str
    revision: str  # changes on every save; tells retraining which corrections are new
    reviewed_voxels: int
    geometry: Geometry
    edited_voxels: int = 0  # drawn or corrected by the user (review mask EDITED)
    format_version: int = CORRECTION_FORMAT_VERSION


@dataclass(frozen=True)
class Correction:
    info: CorrectionInfo
    image: Volume  # raw intensities as read, with their geometry
    labels: np.ndarray  # uint8 class ids
    review: np.ndarray  # uint8: 0 ignored, 1 ACCEPTED (model output a person checked), 2 EDITED


@dataclass(frozen=True)
class UnlabeledScan:
    path: Path
    added: str
    fingerprint: dict[str, Any]

    def problem(self) -> str | None:
        """None when the scan is usable as added; else what is wrong, in a few words."""
        if not self.path.exists():
            return "missing"
        try:
            if scan_fingerprint(self.path) != self.fingerprint:
                return "changed since it was added"
        except OSError as error:
            return f"unreadable ({error.strerror or error})"
        return None


def scan_fingerprint(path: Path) -> dict[str, Any]:
    """Size plus a hash of the first and last MiB (a file) or of the file list (a DICOM folder)."""
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        digest.update(json.dumps(files).encode())
        return {"kind": "folder", "files": len(files), "sha256": digest.hexdigest()}
    size = path.stat().st_size
    with open(path, "rb") as stream:
        digest.update(stream.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            stream.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(stream.read(FINGERPRINT_BYTES))
    return {"kind": "file", "size": size, "sha256": digest.hexdigest()}


class Project:
    """Open one with :meth:`create` or :meth:`open`; every method re-reads the folder, so two
    processes (the GUI and a retrain worker) can share a project."""

    def __init__(
        self,
        folder: Path,
        class_names: list[str],
        class_colors: list[list[int]],
        normalization: Normalization,
        settings: dict[str, Any],
        created: str,
        problems: list[str],
    ) -> None:
        self.folder = folder
        self.class_names = class_names
        self.class_colors = class_colors
        self.normalization = normalization
        self.settings = settings
        self.created = created
        self.problems = problems  # damaged corrections / versions, missing scans: reported, not fatal

    # ------------------------------------------------------------------------ layout
    @property
    def project_file(self) -> Path:
        return self.folder / "project.json"

    @property
    def active_file(self) -> Path:
        return self.folder / "active.json"

    @property
    def corrections_dir(self) -> Path:
        return self.folder / "corrections"

    @property
    def unlabeled_file(self) -> Path:
        return self.folder / "unlabeled" / "scans.json"

    @property
    def models_dir(self) -> Path:
        return self.folder / "models"

    @property
    def runs_dir(self) -> Path:
        return self.folder / "runs"

    def __repr__(self) -> str:
        return f"Project({str(self.folder)!r})"

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        class_names: Sequence[str],
        normalization: Normalization,
        colors: Sequence[Sequence[int]] | None = None,
        base_model: str | os.PathLike | None = None,
        prior_data: str | os.PathLike | None = AUTO_PRIOR,
    ) -> Project:
        """A new project; ``base_model`` becomes version v0001 ("imported") and is activated.

        ``prior_data`` (a prior folder or a slice store) is copied into the project; by default
        the base model's own (``find_model_prior``), ``None`` for none.
        """
        folder = Path(folder)
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
        base = None
        if base_model is not None:
            base = _checked_base_model(Path(base_model), names, normalization)
            if colors is None and len(base.class_colors) == len(names):
                colors = base.class_colors
        try:
            colors = check_colors(colors, len(names))
        except ClassTableError as error:
            raise ProjectError(f"{folder}: {error}") from None
        if isinstance(prior_data, str) and prior_data == AUTO_PRIOR:
            prior_data = None if base_model is None else find_model_prior(base_model)
        temp = temp_path_for(folder)
        try:
            temp.mkdir()
        except OSError as error:
            raise ProjectError(f"{folder}: cannot be created ({error.strerror or error})") from None
        try:
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
            if prior_data is not None:
                _import_prior_into(temp, Path(prior_data), names, normalization, colors)
            _move_into_place(temp, folder)
        except (OSError, WriteError) as error:  # the disk refused (full?): name the project, not a temp file
            shutil.rmtree(temp, ignore_errors=True)
            reason = describe_write_failure(error, folder.parent)
            raise ProjectError(f"{folder}: cannot be created ({reason}); nothing was left behind") from None
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        fsync_dir(folder.parent)
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike, check_active: bool = True) -> Project:
        """Open a project; ``check_active=False`` skips verifying the active version (for repair)."""
        folder = Path(folder)
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
            settings = _checked_settings({**DEFAULT_SETTINGS, **(data.get("settings") or {})})
        except (KeyError, TypeError, ValueError) as error:
            raise ProjectError(f"{path}: damaged project file ({_first_line(error)})") from None
        project = cls(folder, names, colors, normalization, settings, str(data.get("created", "")), [])
        remove_stale_temp_files(folder, recursive=True)  # what killed writers left (up to a store each)
        if check_active:
            project.active_version()
        project.problems = project._find_problems()
        return project

    def _find_problems(self) -> list[str]:
        problems = list(self._corrections_and_problems()[1])
        problems += list_versions(self.models_dir)[1]
        problems += [
            f"{scan.path}: unlabeled scan is missing" for scan in self.unlabeled() if not scan.path.exists()
        ]
        return problems

    # ---------------------------------------------------------------------- prior data
    @property
    def prior_store(self) -> Path | None:
        """The prior data slice store, or None when the project has none."""
        path = self.folder / "prior" / "prior.h5"
        return path if path.is_file() else None

    def prior_summary(self) -> dict[str, Any] | None:
        path = self.folder / "prior" / "prior.json"
        return read_json(path, "prior data record") if self.prior_store and path.is_file() else None

    def set_prior_data(self, source: str | os.PathLike) -> dict[str, Any]:
        """Copy (or replace) the project's prior data from a prior folder or a slice store."""
        with self.retrain_lock():
            _import_prior_into(
                self.folder, Path(source), self.class_names, self.normalization, self.class_colors
            )
        return self.prior_summary() or {}

    # ---------------------------------------------------------------------- settings
    def update_settings(self, **changes: Any) -> dict[str, Any]:
        unknown = sorted(set(changes) - set(DEFAULT_SETTINGS))
        if unknown:
            raise ProjectError(f"{self.project_file}: unknown setting(s) {', '.join(unknown)}")
        with self.state_lock():
            data = read_json(self.project_file, "project file")
            current = {**DEFAULT_SETTINGS, **(data.get("settings") or {})}
            settings = _checked_settings({**current, **changes})
            data["settings"] = settings
            write_json_atomically(self.project_file, data)
        self.settings = settings
        return settings

    # ------------------------------------------------------------------- corrections
    def add_correction(
        self,
        name: str,
        image: Volume,
        labels: np.ndarray,
        review_mask: np.ndarray | None = None,
    ) -> CorrectionInfo:
        """Save (or atomically replace) the correction ``name``.

        ``review_mask``: 0 = not reviewed (ignored), 1 = ACCEPTED (the model's label, checked by a
        person), 2 = EDITED (drawn or corrected by a person). ``None``: every voxel is EDITED, i.e.
        the labels are the user's own.
        """
        if not isinstance(name, str) or not CORRECTION_NAME.match(name):
            raise ProjectError(
                f"correction name {name!r}: use letters, digits, spaces and ._-+() "
                "(at most 200, not starting with a dot or space)"
            )
        if not isinstance(image, Volume):
            image = Volume(np.asarray(image))
        raw = np.asarray(image.array)
        if raw.dtype.kind not in "iufb" or raw.size == 0:
            raise ProjectError(f"correction {name!r}: image must be a non-empty numeric array")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise ProjectError(f"correction {name!r}: image has NaN or infinite values")
        labels = self._checked_labels(name, labels, raw.shape)
        review = _checked_review(name, review_mask, raw.shape)
        self.corrections_dir.mkdir(exist_ok=True)
        path = self.corrections_dir / f"{name}.h5"
        attrs = {
            "format": CORRECTION_FORMAT,
            "format_version": CORRECTION_FORMAT_VERSION,
            "name": name,
            "source": image.source or "",
            "saved": now_iso(),
            "revision": uuid.uuid4().hex,
            "geometry": json.dumps(image.geometry.to_dict()),
            "reviewed_voxels": int(np.count_nonzero(review)),
            "edited_voxels": int(np.count_nonzero(review == EDITED)),
        }
        _write_h5_atomically(path, {"image": raw, "labels": labels, "review": review}, attrs)
        return _read_correction_info(path)

    def remove_correction(self, name: str) -> None:
        path = self._correction_path(name)
        if not path.is_file():
            raise ProjectError(f"{path}: no correction named {name!r}")
        path.unlink()
        fsync_dir(self.corrections_dir)

    def _correction_path(self, name: str) -> Path:
        """The file of correction ``name``; names that could point elsewhere are refused."""
        if not isinstance(name, str) or not CORRECTION_NAME.match(name):
            raise ProjectError(f"correction name {name!r}: not a valid correction name")
        return self.corrections_dir / f"{name}.h5"

    def corrections(self) -> list[CorrectionInfo]:
        """Readable corrections in name order (damaged files are listed in ``problems``)."""
        return self._corrections_and_problems()[0]

    def read_correction(self, name: str) -> Correction:
        path = self._correction_path(name)
        if not path.is_file():
            raise ProjectError(f"{path}: no correction named {name!r}")
        info = _read_correction_info(path)
        try:
            with h5py.File(path, "r") as file:
                image, labels, review = (file[key][()] for key in ("image", "labels", "review"))
        except (OSError, KeyError) as error:
            raise ProjectError(f"{path}: damaged correction file ({_first_line(error)})") from None
        if info.format_version < 2:  # version 1 marked every reviewed voxel 1, whatever its origin
            review = np.where(review > 0, np.uint8(EDITED), np.uint8(0))
        volume = Volume(image, info.geometry, "image", info.source or None)
        return Correction(info, volume, labels, review)

    def read_review_mask(self, name: str) -> np.ndarray:
        """Only the review mask of a correction (0 / ACCEPTED / EDITED), without its image."""
        path = self._correction_path(name)
        info = _read_correction_info(path)
        try:
            with h5py.File(path, "r") as file:
                review = file["review"][()]
        except (OSError, KeyError) as error:
            raise ProjectError(f"{path}: damaged correction file ({_first_line(error)})") from None
        if info.format_version < 2:
            review = np.where(review > 0, np.uint8(EDITED), np.uint8(0))
        return review

    def _corrections_and_problems(self) -> tuple[list[CorrectionInfo], list[str]]:
        found, problems = [], []
        if not self.corrections_dir.is_dir():
            return found, problems
        for path in sorted(self.corrections_dir.glob("*.h5")):
            if path.name.startswith("."):
                continue
            try:
                found.append(_read_correction_info(path))
            except ProjectError as error:
                problems.append(str(error))
        return found, problems

    def _checked_labels(self, name: str, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != shape:
            raise ProjectError(f"correction {name!r}: labels shape {labels.shape} differs from image {shape}")
        if labels.dtype.kind == "f":
            if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
                raise ProjectError(f"correction {name!r}: labels must be whole-number class ids")
        elif labels.dtype.kind not in "iub":
            raise ProjectError(f"correction {name!r}: labels must be integer class ids, got {labels.dtype}")
        low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
        if low < 0 or high >= len(self.class_names):
            raise ProjectError(
                f"correction {name!r}: label ids must lie in 0..{len(self.class_names) - 1} "
                f"({', '.join(self.class_names)}), got {low:g}..{high:g}"
            )
        return labels.astype(np.uint8)

    # --------------------------------------------------------------------- unlabeled
    def add_unlabeled(self, paths: Sequence[str | os.PathLike]) -> list[UnlabeledScan]:
        """Reference unlabeled scans (files or DICOM folders); already-listed paths are skipped."""
        from cgs_engine.io import is_supported_path

        checked = []
        for given in paths:
            path = Path(given).expanduser().resolve()
            if not path.exists():
                raise ProjectError(f"{given}: no such unlabeled scan")
            if not is_supported_path(path):
                raise ProjectError(f"{given}: not a supported image file or DICOM folder")
            check_unlabeled_scan(path, self.normalization)  # read it now, not in a retrain later
            checked.append(path)
        with self.state_lock():
            scans = self.unlabeled()
            known = {scan.path for scan in scans}
            added = []
            for path in checked:
                if path in known:
                    continue
                scan = UnlabeledScan(path, now_iso(), scan_fingerprint(path))
                scans.append(scan)
                added.append(scan)
                known.add(path)
            if added:
                self._write_unlabeled(scans)
        return added

    def remove_unlabeled(self, paths: Sequence[str | os.PathLike]) -> int:
        drop = {Path(p).expanduser().resolve() for p in paths} | {Path(p) for p in paths}
        with self.state_lock():
            scans = self.unlabeled()
            kept = [scan for scan in scans if scan.path not in drop]
            if len(kept) != len(scans):
                self._write_unlabeled(kept)
        return len(scans) - len(kept)

    def unlabeled(self) -> list[UnlabeledScan]:
        if not self.unlabeled_file.is_file():
            return []
        data = read_json(self.unlabeled_file, "unlabeled scan list")
        try:
            return [
                UnlabeledScan(Path(entry["path"]), str(entry.get("added", "")), dict(entry["fingerprint"]))
                for entry in data["scans"]
            ]
        except (KeyError, TypeError, ValueError) as error:
            raise ProjectError(
                f"{self.unlabeled_file}: damaged unlabeled scan list ({_first_line(error)})"
            ) from None

    def _write_unlabeled(self, scans: list[UnlabeledScan]) -> None:
        self.unlabeled_file.parent.mkdir(exist_ok=True)
        entries = [{"path": str(s.path), "added": s.added, "fingerprint": s.fingerprint} for s in scans]
        write_json_atomically(self.unlabeled_file, {"scans": entries})

    # ---------------------------------------------------------------------- versions
    def versions(self) -> list[VersionInfo]:
        return list_versions(self.models_dir)[0]

    def version(self, version_id: str) -> VersionInfo:
        version_number(version_id)
        folder = self.models_dir / version_id
        if not folder.is_dir():
            raise ProjectError(f"{folder}: no version {version_id} in this project")
        return read_version(folder)

    def active_version(self) -> VersionInfo | None:
        """The active version, or None before the first model; errors name the damaged file."""
        record = read_active(self.active_file)
        if record.version is None:
            return None
        try:
            return self.version(record.version)
        except ProjectError as error:
            raise ProjectError(
                f"{self.active_file}: active version {record.version} is unusable: {error}"
            ) from None

    def active_model_path(self) -> Path | None:
        active = self.active_version()
        return None if active is None else active.model_path

    def activate(self, version_id: str, why: str = "activated by hand") -> VersionInfo:
        """Make ``version_id`` active (switch or roll back); its model must load."""
        version = self.version(version_id)
        load_checkpoint(version.model_path)
        with self.state_lock():
            history = read_active(self.active_file).history if self.active_file.is_file() else []
            write_active(self.active_file, version.id, why, history)
        return version

    def add_version(
        self, model_source: Path, record: dict[str, Any], error_model: Path | None = None
    ) -> VersionInfo:
        with self.state_lock():
            return write_version(self.models_dir, model_source, record, error_model)

    # ---------------------------------------------------------------------- retraining
    def new_corrections_since_last_retrain(self) -> list[CorrectionInfo]:
        """Corrections added or re-saved after the newest retrained version was trained."""
        retrained = [v for v in self.versions() if v.origin == "retrained"]
        used = retrained[-1].record.get("corrections_used", {}) if retrained else {}
        return [c for c in self.corrections() if used.get(c.name) != c.revision]

    def should_retrain(self) -> bool:
        """Opt-in rule: True once ``retrain_after_n`` new corrected volumes exist; never otherwise."""
        threshold = self.settings.get("retrain_after_n")
        if not threshold:
            return False
        return len(self.new_corrections_since_last_retrain()) >= threshold and not self.is_retraining()

    def new_run_dir(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run = self.runs_dir / f"{stamp}-{uuid.uuid4().hex[:4]}"
        run.mkdir(parents=True)
        return run

    def interrupted_run(self) -> Path | None:
        """The newest run that saved a training state and did not finish (crash, kill, failure).

        While a retrain is running (``is_retraining()``) this is that live run, not a crashed one.
        """
        runs = self.resumable_runs()
        return runs[0] if runs else None

    def resumable_runs(self) -> list[Path]:
        """Runs with a saved training state that ended without a version: killed ones (no
        ``finished.json``) and failed ones (the error may be gone: a full disk, a vanished parent).
        Newest first."""
        if not self.runs_dir.is_dir():
            return []
        return [
            run
            for run in sorted(self.runs_dir.iterdir(), key=lambda p: p.name, reverse=True)
            if run.is_dir() and (run / "train" / "state.pt").is_file() and _ended_how(run) in (None, "failed")
        ]

    @contextmanager
    def retrain_lock(self) -> Iterator[None]:
        """Held for a whole retrain; the OS drops it when the process dies, even by kill -9."""
        message = f"{self.folder}: a retrain is already running for this project"
        with exclusive(self.folder / ".retrain.lock", lambda: ProjectError(message), reentrant=False):
            yield

    @contextmanager
    def state_lock(self) -> Iterator[None]:
        """Held for each read-modify-write of the project's records (settings, scans, versions,
        the active pointer), so concurrent commands never lose one another's changes."""
        message = f"{self.folder}: another process kept the project busy for {STATE_LOCK_WAIT_S:.0f} s"
        with exclusive(self.folder / ".state.lock", lambda: ProjectError(message), wait_s=STATE_LOCK_WAIT_S):
            yield

    def is_retraining(self) -> bool:
        try:
            with self.retrain_lock():
                return False
        except ProjectError:
            return True


# --------------------------------------------------------------------------- helpers
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


def _checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    after = settings["retrain_after_n"]
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 1):
        raise ValueError(f"retrain_after_n must be null or a positive integer, got {after!r}")
    if not 0 < float(settings["heldout_fraction"]) <= 0.5:
        raise ValueError("heldout_fraction must be in (0, 0.5]")
    if not 0 <= float(settings["activation_tolerance"]) < 1:
        raise ValueError("activation_tolerance must be in [0, 1) (a Dice difference)")
    for key in ("retrain_minutes", "thorough_minutes"):
        if not float(settings[key]) > 0:
            raise ValueError(f"{key} must be positive")
    if settings["retrain_keep"] not in RETRAIN_KEEP:
        keep = settings["retrain_keep"]
        raise ValueError(f"retrain_keep must be one of {', '.join(RETRAIN_KEEP)}, got {keep!r}")
    if not isinstance(settings["train"], dict):
        raise ValueError("train must be an object of training settings")
    return settings


def _import_prior_into(folder: Path, source: Path, names, normalization, colors) -> None:
    """``folder/prior/prior.h5`` and ``prior.json`` from ``source``; the old ones stay until both exist."""
    prior = folder / "prior"
    prior.mkdir(exist_ok=True)
    try:
        summary = import_prior(source, prior / "prior.h5.new", list(names), normalization, colors)
    except PriorDataError as error:
        raise ProjectError(str(error)) from None
    record = {**summary.to_dict(), "imported": now_iso()}
    write_json_atomically(prior / "prior.json.new", record)
    os.replace(prior / "prior.h5.new", prior / "prior.h5")
    os.replace(prior / "prior.json.new", prior / "prior.json")
    fsync_dir(prior)


def _checked_review(name: str, review: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if review is None:
        return np.full(shape, EDITED, np.uint8)
    review = np.asarray(review)
    if review.shape != shape:
        raise ProjectError(
            f"correction {name!r}: review mask shape {review.shape} differs from image {shape}"
        )
    if review.dtype.kind not in "iufb" or not np.isin(review, (UNREVIEWED, ACCEPTED, EDITED)).all():
        raise ProjectError(
            f"correction {name!r}: review mask must hold only 0 (unreviewed), 1 (accepted) and 2 (edited)"
        )
    return review.astype(np.uint8)


def _ended_how(run: Path) -> str | None:
    """The outcome in a run's finished.json; None while it has none (running or killed)."""
    path = run / "finished.json"
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("outcome", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def check_unlabeled_scan(path: Path, normalization: Normalization) -> None:
    """Read a scan once when it is added, so a damaged one is refused now, in one line."""
    from cgs_engine.io import read_volume

    try:
        volume = read_volume(path)
        normalization.apply(volume.array[:1])
    except CGSError as error:
        raise ProjectError(str(error)) from None
    except ValueError as error:
        raise ProjectError(f"{path}: cannot be normalised ({_first_line(error)})") from None


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


def _write_h5_atomically(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    def fill(file: h5py.File) -> None:
        for key, value in attrs.items():
            file.attrs[key] = value
        for key, array in arrays.items():
            chunks = (1, *array.shape[1:]) if array.ndim == 3 else True
            file.create_dataset(key, data=array, chunks=chunks, compression="gzip", compression_opts=1)

    write_h5_atomically(path, fill)


def _read_correction_info(path: Path) -> CorrectionInfo:
    try:
        with h5py.File(path, "r") as file:
            attrs = file.attrs
            if attrs.get("format") != CORRECTION_FORMAT:
                raise ProjectError(f"{path}: not a napari-cgs correction file")
            linked = foreign_link(file)
            if linked:
                raise ProjectError(f"{path}: {linked}; a correction file holds its own data")
            if int(attrs.get("format_version", 1)) > CORRECTION_FORMAT_VERSION:
                raise ProjectError(
                    f"{path}: correction format version {attrs.get('format_version')} is newer than this "
                    f"napari-cgs reads ({CORRECTION_FORMAT_VERSION})"
                )
            shape = tuple(int(n) for n in file["image"].shape)
            if file["labels"].shape != shape or file["review"].shape != shape or len(shape) != 3:
                raise ProjectError(
                    f"{path}: damaged correction file (image, labels and review differ in shape)"
                )
            name = str(attrs["name"])
            if name != path.name[: -len(".h5")] or not CORRECTION_NAME.match(name):
                raise ProjectError(
                    f"{path}: damaged correction file (its recorded name {name!r} is not its file name)"
                )
            return CorrectionInfo(
                name=name,
                path=path,
                shape=shape,  # type: ignore[arg-type]
                saved=str(attrs["saved"]),
                source=str(attrs.get("source", "")),
                revision=str(attrs["revision"]),
                reviewed_voxels=int(attrs.get("reviewed_voxels", 0)),
                geometry=Geometry.from_dict(json.loads(attrs["geometry"])),
                edited_voxels=int(attrs.get("edited_voxels", attrs.get("reviewed_voxels", 0))),
                format_version=int(attrs.get("format_version", 1)),
            )
    except ProjectError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ProjectError(f"{path}: damaged correction file ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
