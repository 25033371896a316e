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

import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.durable import remove_stale_temp_files
from cgs_engine.errors import first_line
from cgs_engine.locks import exclusive
from cgs_engine.normalize import Normalization
from cgs_engine.project.corrections import CorrectionInfo, CorrectionRecords
from cgs_engine.project.folder import AUTO_PRIOR, create_project_folder, import_prior_into, read_project_file
from cgs_engine.project.settings import DEFAULT_SETTINGS, checked_settings
from cgs_engine.project.unlabeled import UnlabeledRecords
from cgs_engine.project.versions import (
    ProjectError,
    VersionInfo,
    list_versions,
    now_iso,
    read_active,
    read_json,
    read_version,
    version_number,
    write_active,
    write_json_atomically,
    write_version,
)

STATE_LOCK_WAIT_S = 60.0


# Training settings every retrain sets itself (cgs_engine.retrain.recipe.train_config: its budget;
# the architecture comes from the active model when there is one): saved in the project they would
# be ignored without a word.
SET_BY_EACH_RETRAIN = frozenset({"minutes", "iterations"})


class Project(CorrectionRecords, UnlabeledRecords):
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
        create_project_folder(folder, class_names, normalization, colors, base_model, prior_data)
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike, check_active: bool = True) -> Project:
        """Open a project; ``check_active=False`` skips verifying the active version (for repair)."""
        folder = Path(folder)
        names, colors, normalization, settings, created = read_project_file(folder)
        project = cls(folder, names, colors, normalization, settings, created, [])
        remove_stale_temp_files(folder, recursive=True)  # what killed writers left (up to a store each)
        if check_active:
            project.active_version()
        project.problems = project._find_problems()
        return project

    def _find_problems(self) -> list[str]:
        problems = list(self._corrections_and_problems()[1])
        problems += list_versions(self.models_dir)[1]
        try:  # a damaged list is one problem among others, not a project that cannot be opened
            scans = self.unlabeled()
        except ProjectError as error:
            return [*problems, first_line(error)]
        problems += [f"{scan.path}: unlabeled scan is missing" for scan in scans if not scan.path.exists()]
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
            import_prior_into(
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
            if "train" in changes:
                changes = {**changes, "train": self._merged_train(current["train"], changes["train"])}
            settings = checked_settings({**current, **changes})
            data["settings"] = settings
            write_json_atomically(self.project_file, data)
        self.settings = settings
        return settings

    def _merged_train(self, current: Any, given: Any) -> dict[str, Any]:
        """The training overrides after ``update_settings(train=given)``: ``given`` updates the
        current ones (a key set to None drops it), so setting the learning rate keeps the rest;
        a name that is no training setting is refused now, not when a retrain starts."""
        from cgs_engine.train.config import TrainConfig

        if not isinstance(given, dict):
            raise ProjectError(f"{self.project_file}: train must be an object of training settings")
        setting = {key for key, value in given.items() if value is not None}  # None drops a key
        unknown = sorted(setting - {item.name for item in fields(TrainConfig)})
        if unknown:
            raise ProjectError(f"{self.project_file}: unknown training setting(s) {', '.join(unknown)}")
        fixed = sorted(setting & SET_BY_EACH_RETRAIN)
        if fixed:
            raise ProjectError(
                f"{self.project_file}: {', '.join(fixed)} cannot be a project setting (each retrain's "
                "budget sets it: retrain_minutes, or cgs retrain --minutes / --iterations)"
            )
        merged = {**(current if isinstance(current, dict) else {}), **given}
        return {key: value for key, value in merged.items() if value is not None}

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
            try:
                history = read_active(self.active_file).history if self.active_file.is_file() else []
            except ProjectError as error:
                # activating is how a user repairs a damaged record (every other command refuses
                # it): the damaged file is kept beside the new one, its history starts again
                kept = self.active_file.with_name(f"{self.active_file.name}.damaged-{uuid.uuid4().hex[:8]}")
                shutil.copy2(self.active_file, kept)
                history = [
                    {"version": None, "at": now_iso(), "why": f"{first_line(error)}; kept as {kept.name}"}
                ]
            write_active(self.active_file, version.id, why, history)
        return version

    def add_version(
        self, model_source: Path, record: dict[str, Any], error_model: Path | None = None
    ) -> VersionInfo:
        with self.state_lock():
            return write_version(self.models_dir, model_source, record, error_model)

    # ---------------------------------------------------------------------- retraining
    def new_corrections_since_last_retrain(self) -> list[CorrectionInfo]:
        """Corrections added or re-saved after the newest retrained version was trained, that a
        retrain can learn from: one without a reviewed voxel (saved from the panel before any
        region was accepted or edited) teaches nothing and does not count towards
        ``retrain_after_n``."""
        retrained = [v for v in self.versions() if v.origin == "retrained"]
        used = retrained[-1].record.get("corrections_used", {}) if retrained else {}
        return [c for c in self.corrections() if used.get(c.name) != c.revision and c.reviewed_voxels > 0]

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
        self.require_present()
        message = f"{self.folder}: a retrain is already running for this project"
        with exclusive(self.folder / ".retrain.lock", lambda: ProjectError(message), reentrant=False):
            yield

    @contextmanager
    def state_lock(self) -> Iterator[None]:
        """Held for each read-modify-write of the project's records (settings, scans, versions,
        the active pointer), so concurrent commands never lose one another's changes."""
        self.require_present()
        message = f"{self.folder}: another process kept the project busy for {STATE_LOCK_WAIT_S:.0f} s"
        with exclusive(self.folder / ".state.lock", lambda: ProjectError(message), wait_s=STATE_LOCK_WAIT_S):
            yield

    def require_present(self) -> None:
        """Refuse to write into a project whose folder was deleted or moved while it was open: the
        lock file alone recreated the folder at the old place, and scans lists followed it there."""
        if not self.project_file.is_file():
            raise ProjectError(
                f"{self.folder}: the project is no longer there (its folder was deleted or moved); "
                "open it where it is now"
            )

    def is_retraining(self) -> bool:
        if not self.project_file.is_file():
            return False  # gone: nothing runs here (require_present says so to whoever writes)
        try:
            with self.retrain_lock():
                return False
        except ProjectError:
            return True


def _ended_how(run: Path) -> str | None:
    """The outcome in a run's finished.json; None while it has none (running or killed)."""
    path = run / "finished.json"
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("outcome", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"
