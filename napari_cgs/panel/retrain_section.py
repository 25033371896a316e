"""The panel's "Retrain" section: a project of corrections, retraining in another process, model versions.

* Project: create one (it starts from the panel's current model, which becomes version v0001)
  or open one; the section shows its corrected volumes, unlabeled scans and active version.
* "Add as corrected" saves the selected image, its labels layer and the review mask (the voxels
  edited or accepted) as one correction; "Add unlabeled folder…" references a folder of scans.
  Both run on a worker thread; the engine writes atomically.
* "Retrain now" starts ``cgs_engine.retrain.worker.start_retrain_process``: a separate, low-priority
  Python process that leaves a core to the GUI (never a thread of napari). A QTimer polls its
  JSON-lines messages; iteration, loss and held-out Dice show here and in napari's activity
  dock. "Cancel" asks the worker to stop; it keeps the model as it is then and applies the
  activation rule to it. The outcome says whether the new version was activated, and why.
* Versions: "Activate" switches or rolls back and swaps the model into the panel's predictor;
  "Re-predict" re-runs the pre-segmentation (only voxels the user has not touched) and reports
  the changed voxels per class, with a hidden "changes" Labels layer on the image's grid.
* "Retrain after N new corrected volumes" (0 = off) is the project's opt-in setting: counted
  in volumes added or re-saved since the last retrain, never one retrain per save.

Every computation is an engine call (``cgs_engine.project``, ``cgs_engine.review.changes``).

Public API (tests, ``bench/gui_responsiveness.py``)::

    section.create_project(folder=None)  / section.open_project(folder=None)
    section.add_correction()             / section.add_unlabeled_folder(folder=None)
    section.start_retrain(minutes=None, iterations=None) -> RetrainProcess | None
    section.cancel_retrain()             / section.activate(version_id=None) / section.repredict()
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from cgs_engine.checkpoint import load_checkpoint
from cgs_engine.classes.files import prediction_outputs_in
from cgs_engine.classes.relabel import renumbered
from cgs_engine.classes.table import derive_class_table
from cgs_engine.errors import CGSError
from cgs_engine.io import is_supported_path
from cgs_engine.io.formats import is_image_file
from cgs_engine.normalize import Normalization
from cgs_engine.project import Project, ProjectError, VersionInfo
from cgs_engine.retrain import worker as retrain_worker
from cgs_engine.retrain.recipe import RETRAIN_DEFAULTS
from cgs_engine.review.changes import change_map, count_label_changes
from cgs_engine.train.events import RETRAIN_ENDINGS, Event, RetrainFailed, retrain_event_from_dict
from napari_cgs.panel.changes_layer import show_changes_layer
from napari_cgs.panel.fit import breakable
from napari_cgs.panel.prediction_layers import image_volume
from napari_cgs.panel.retrain_link import PanelLink, link_to_panel
from napari_cgs.panel.retrain_text import (
    RetrainProgress,
    budget_text,
    outcome_headline,
    outcome_text,
    version_text,
    version_tooltip,
)

POLL_MS = 250
NOT_ALLOWED_IN_NAMES = re.compile(r"[^\w .()+-]")
LEADING_NON_WORD = re.compile(r"^\W+")  # a correction name starts with a letter, digit or "_"
NO_PROJECT = "No project yet: create one (it starts from the current model) or open one."


# Small module-level functions so that tests can replace the dialogs.
def choose_new_project_folder(parent: QWidget | None) -> str | None:
    path, _ = QFileDialog.getSaveFileName(
        parent, "New retraining project (type a new folder name)", str(Path.home() / "cgs-project")
    )
    return path or None


def choose_project_folder(parent: QWidget | None) -> str | None:
    return QFileDialog.getExistingDirectory(parent, "Open a retraining project", str(Path.home())) or None


def choose_unlabeled_folder(parent: QWidget | None) -> str | None:
    return QFileDialog.getExistingDirectory(parent, "Folder of unlabeled scans", str(Path.home())) or None


def correction_name(layer_name: str) -> str:
    """The layer name with characters a correction name cannot hold replaced by "_"."""
    name = LEADING_NON_WORD.sub("", NOT_ALLOWED_IN_NAMES.sub("_", layer_name))[:200].rstrip()
    return name or "volume"


def scans_in_folder(folder: Path) -> list[Path]:
    """Image files and DICOM series folders inside ``folder``, else the folder itself (one series);
    not the outputs of an earlier prediction there."""
    outputs = prediction_outputs_in(folder)
    found = sorted(
        p
        for p in folder.iterdir()
        if (is_image_file(p) or (p.is_dir() and is_supported_path(p))) and p.resolve() not in outputs
    )
    if not found and is_supported_path(folder):
        found = [folder]
    if not found:
        raise ProjectError(f"{folder}: no NIfTI/MHA/NRRD images or DICOM series in this folder")
    return found


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------------- the section
class RetrainSection(QGroupBox):
    project_opened = Signal(str)  # project folder
    correction_added = Signal(object)  # CorrectionInfo
    unlabeled_added = Signal(int)  # scans added
    retrain_message = Signal(object)  # every event of the worker, in order (cgs_engine.train.events)
    retrain_ended = Signal(object)  # the RetrainFinished / RetrainCancelled / RetrainFailed event
    model_activated = Signal(str)  # version id
    changes_shown = Signal(object)  # LabelChanges after a re-predict
    failed = Signal(str)  # any one-line error shown in the section

    def __init__(self, link: PanelLink, parent: QWidget | None = None) -> None:
        super().__init__("6 · Retrain from your corrections", parent)
        self.link = link
        self.project: Project | None = None
        self._seen_active: str | None = None  # the active version this panel last loaded
        self.process: Any | None = None  # the running RetrainProcess
        self.last_process: Any | None = None
        self.progress = RetrainProgress()
        self._progress_bar: Any | None = None
        self._busy = False
        self._automatic = False
        self._interrupted: Path | None = None  # a killed or failed run that Resume continues
        self._auto_trigger_count = 0
        self._auto_held_at: int | None = None  # an automatic run kept nothing: wait for N more
        self._repredict: tuple[Any, np.ndarray, str] | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self._poll)
        self._build()
        link.prediction_finished.connect(self._on_prediction_finished)
        link.prediction_failed.connect(self._on_prediction_failed)
        self._update_controls()

    @classmethod
    def for_panel(cls, panel: Any) -> RetrainSection:
        """The section of a CGSPanel, reading the panel's image, labels, review and predictor."""
        return cls(link_to_panel(panel))

    # ================================================================= layout
    def _button(self, text: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.clicked.connect(lambda: slot())
        return button

    def _label(self, text: str, tooltip: str) -> QLabel:
        label = QLabel(text)
        label.setWordWrap(True)
        label.setToolTip(tooltip)
        return label

    def _build(self) -> None:
        self._build_project_controls()
        self._build_retrain_controls()
        self._build_version_controls()
        self._lay_out()

    def _build_project_controls(self) -> None:
        self.new_button = self._button(
            "New project…",
            "Create a retraining project folder; it starts from the model selected above (version v0001).",
            self.create_project,
        )
        self.open_button = self._button(
            "Open project…", "Open an existing retraining project folder.", self.open_project
        )
        self.project_label = self._label(NO_PROJECT, "The open retraining project (hover for its folder).")
        self.counts_label = self._label("", "What the project holds and which model version is active.")
        self.add_button = self._button(
            "Add as corrected",
            "Save the selected image, its labels layer and the voxels you edited or accepted as a "
            "corrected volume of the project (saving the same image again replaces it).",
            self.add_correction,
        )
        self.unlabeled_button = self._button(
            "Add unlabeled folder…",
            "Reference a folder of scans without labels (files or DICOM series); retraining learns "
            "from them too. They are not copied.",
            self.add_unlabeled_folder,
        )

    def _build_retrain_controls(self) -> None:
        self.minutes_box = QDoubleSpinBox()
        self.minutes_box.setRange(0.5, 600.0)
        self.minutes_box.setDecimals(1)
        self.minutes_box.setSuffix(" min")
        self.minutes_box.setValue(10.0)
        self.minutes_box.setToolTip("How long a retrain may train (wall time), saved in the project.")
        self.minutes_box.valueChanged.connect(self._on_minutes_changed)
        self.retrain_button = self._button(
            "Retrain now",
            "Fine-tune the active model on the corrections and unlabeled scans in a separate, "
            "low-priority process; napari stays usable.",
            self.start_retrain,
        )
        self.resume_button = self._button(
            "Resume",
            "Continue the interrupted retrain (the worker was killed or failed) from its last saved "
            "state, with the settings it started with (as `cgs retrain PROJECT --resume`).",
            self.resume_retrain,
        )
        self.cancel_button = self._button(
            "Cancel",
            "Stop the retrain after the current iteration; the model as it is then is kept as a version.",
            self.cancel_retrain,
        )
        self.auto_box = QSpinBox()
        self.auto_box.setRange(0, 1000)
        self.auto_box.setSpecialValueText("off")
        self.auto_box.setToolTip(
            "Retrain automatically once this many corrected volumes were added (or re-saved) since "
            "the last retrain. 0 = off. Saved in the project."
        )
        self.auto_box.valueChanged.connect(self._on_auto_changed)
        self.progress_label = self._label(
            "", "Iteration, training loss and held-out Dice of the running retrain."
        )

    def _build_version_controls(self) -> None:
        self.versions = QListWidget()
        self.versions.setMinimumHeight(90)
        self.versions.setToolTip(
            "Model versions of the project (● = active): status and held-out Dice. Hover a row for "
            "the reason it was (not) activated and the Dice per class."
        )
        self.versions.currentItemChanged.connect(lambda *_: self._update_controls())
        self.activate_button = self._button(
            "Activate",
            "Make the selected version the active one (switch or roll back) and pre-segment with it "
            "from now on; no restart needed.",
            self.activate,
        )
        self.repredict_button = self._button(
            "Re-predict",
            "Pre-segment the image again with the current model, only on voxels you have not touched "
            "(switches the panel to “Fill only voxels I have not touched”), and show what changed.",
            self.repredict,
        )
        self.status_label = self._label("", "What the retrain section did last.")

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        layout.addLayout(self._row(self.new_button, self.open_button))
        layout.addWidget(self.project_label)
        layout.addWidget(self.counts_label)
        layout.addLayout(self._row(self.add_button, self.unlabeled_button))
        self.budget_label = self._label("Budget", self.minutes_box.toolTip())
        layout.addLayout(self._row(self.budget_label, self.minutes_box))
        layout.addLayout(self._row(self.retrain_button, self.resume_button, self.cancel_button))
        self.cap_label = self._label("", "A retrain also stops at this many iterations (project setting).")
        self.cap_label.setStyleSheet("color: #9a9a9a;")
        layout.addWidget(self.cap_label)
        auto = self._label("Retrain after N new corrected volumes", self.auto_box.toolTip())
        layout.addLayout(self._row(auto, self.auto_box))
        layout.addWidget(self.progress_label)
        layout.addWidget(self.versions)
        layout.addLayout(self._row(self.activate_button, self.repredict_button))
        layout.addWidget(self.status_label)

    @staticmethod
    def _row(*widgets: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        for widget in widgets:
            row.addWidget(widget)
        return row

    @property
    def retraining(self) -> bool:
        return self.process is not None

    def _update_controls(self) -> None:
        has_project = self.project is not None
        for widget in (self.new_button, self.open_button):
            widget.setEnabled(not self.retraining and not self._busy)
        for widget in (self.add_button, self.unlabeled_button):
            widget.setEnabled(has_project and not self._busy)
        for widget in (self.minutes_box, self.auto_box, self.repredict_button):
            widget.setEnabled(has_project)
        self.retrain_button.setEnabled(has_project and not self.retraining)
        self.resume_button.setEnabled(has_project and not self.retraining and self._interrupted is not None)
        self.cancel_button.setEnabled(self.retraining)
        self.activate_button.setEnabled(has_project and self.selected_version() is not None)

    def _say(self, text: str, detail: str = "") -> None:
        self.status_label.setText(breakable(text))
        self.status_label.setToolTip(detail or text)

    def _fail(self, what: str, error: BaseException | str) -> None:
        text = f"{what}: {error if isinstance(error, str) else _one_line(error)}"
        self._say(text)
        self.failed.emit(text)

    # ================================================================= project
    def create_project(self, folder: str | Path | None = None) -> Project | None:
        if self._refuse_while_retraining("create a project"):
            return None
        model = self.link.model_path()
        if not model:
            self._fail("Cannot create a project", "choose a model first; the project starts from it")
            return None
        folder = folder or choose_new_project_folder(self)
        if not folder:
            return None
        try:
            checkpoint = load_checkpoint(model)
            normalization = Normalization.from_dict(checkpoint.normalization)
            project = Project.create(folder, checkpoint.class_names, normalization, base_model=model)
        except (CGSError, OSError, ValueError) as error:
            self._fail("Cannot create the project", error)
            return None
        self._set_project(project)
        self._say(f"Created project {project.folder.name} from {Path(model).name} (version v0001).")
        return project

    def open_project(self, folder: str | Path | None = None) -> Project | None:
        if self._refuse_while_retraining("open a project"):
            return None
        folder = folder or choose_project_folder(self)
        if not folder:
            return None
        try:
            project = Project.open(folder)
        except (CGSError, OSError) as error:
            self._fail("Cannot open the project", error)
            return None
        self._set_project(project)
        problems = f" {len(project.problems)} problem(s): hover here." if project.problems else ""
        interrupted = self._interrupted
        resumable = (
            f" A retrain ({interrupted.name}) was interrupted: Resume continues it; Retrain now starts "
            "afresh and sets it aside."
            if interrupted is not None
            else ""
        )
        self._say(f"Opened project {project.folder.name}.{problems}{resumable}", "\n".join(project.problems))
        return project

    def _refuse_while_retraining(self, what: str) -> bool:
        if self.retraining:
            self._fail(f"Cannot {what} now", "a retrain is running; wait for it or cancel it")
        return self.retraining

    def _set_project(self, project: Project) -> None:
        self.project = project
        self._auto_held_at = None
        self._seen_active = None  # the active version this panel last loaded, to see activations elsewhere
        self.project_label.setText(f"Project: {project.folder.name}")
        self.project_label.setToolTip(str(project.folder))
        for box, value in (
            (self.auto_box, project.settings.get("retrain_after_n") or 0),
            (self.minutes_box, float(project.settings["retrain_minutes"])),
        ):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self._show_cap()
        self.refresh()
        active = self._active_version()
        if active is not None:
            self._use_version_in_panel(active)
        self.project_opened.emit(str(project.folder))

    def _iteration_cap(self) -> int | None:
        """The recipe's max_iterations (the project's own setting first): a timed retrain stops there too."""

        train = (self.project.settings.get("train") or {}) if self.project is not None else {}
        return train.get("max_iterations", RETRAIN_DEFAULTS["max_iterations"])

    def _show_cap(self) -> None:
        """The budget states both limits: the minutes above and the iteration cap of the recipe."""
        cap = self._iteration_cap()
        self.cap_label.setText(
            f"Stops at the budget or after {cap} iterations, whichever comes first." if cap else ""
        )
        self.cap_label.setVisible(bool(cap))

    def refresh(self) -> None:
        """Re-read the project folder: counts, active version and the versions list."""
        project = self.project
        if project is None:
            self.counts_label.setText("")
            self.versions.clear()
            self._update_controls()
            return
        try:
            self._interrupted = None if project.is_retraining() else project.interrupted_run()
            corrections = project.corrections()
            new = len(project.new_corrections_since_last_retrain())
            unlabeled = len(project.unlabeled())
            versions = project.versions()
        except (CGSError, OSError) as error:
            self._fail("Cannot read the project", error)
            return
        active = self._active_version()
        active_id = None if active is None else active.id
        if active is not None and self._seen_active not in (None, active_id):
            # activated elsewhere (`cgs project activate`, another napari): the list said so while
            # the panel went on pre-segmenting with the version it had loaded
            self._use_version_in_panel(active)
            self._say(f"{active_id} was activated outside this panel; the panel now pre-segments with it.")
        auto = self.auto_box.value()
        self.counts_label.setText(
            f"{len(corrections)} corrected volume(s), {new} new since the last retrain"
            f"{f' (automatic retrain at {auto})' if auto else ''} · {unlabeled} unlabeled scan(s) · "
            f"active model {active_id or 'none'}"
        )
        selected = self.selected_version()
        self.versions.clear()
        for version in versions:
            item = QListWidgetItem(version_text(version, active_id))
            item.setToolTip(version_tooltip(version))
            item.setData(Qt.ItemDataRole.UserRole, version.id)
            self.versions.addItem(item)
            if version.id == (selected or active_id):
                self.versions.setCurrentItem(item)
        self._update_controls()

    def _active_version(self) -> VersionInfo | None:
        try:
            return None if self.project is None else self.project.active_version()
        except (CGSError, OSError) as error:
            self._fail("No usable active version", error)
            return None

    def _need_project(self) -> Project | None:
        if self.project is None:
            self._fail("No project", "create or open a retraining project first")
        return self.project

    def _on_auto_changed(self, value: int) -> None:
        if self.project is None:
            return
        try:
            self.project.update_settings(retrain_after_n=value or None)
        except (CGSError, OSError, ValueError) as error:
            self._fail("Cannot save the setting", error)
        self._auto_held_at = None
        self.refresh()

    def _on_minutes_changed(self, value: float) -> None:
        if self.project is not None:
            try:
                self.project.update_settings(retrain_minutes=float(value))
            except (CGSError, OSError, ValueError) as error:
                self._fail("Cannot save the setting", error)

    # ================================================================= corrections and scans
    def _in_background(self, what: str, function: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``function`` on a napari worker thread; ``done(result)`` on the main thread."""

        def guarded() -> tuple[bool, Any]:
            # A refusal comes back as a value, wrapped: superqt raises an exception *returned* by
            # the function again, and the bare error returned here became a traceback (or, without
            # napari's hooks, aborted the process) for an ordinary "that name is taken".
            try:
                return True, function()
            except (CGSError, OSError, ValueError) as error:
                return False, error

        def finish(outcome: tuple[bool, Any]) -> None:
            self._busy = False
            self._update_controls()
            succeeded, result = outcome
            if succeeded:
                done(result)
            else:
                self._fail(what, result)

        def crashed(error: BaseException) -> None:
            self._busy = False
            self._update_controls()
            self._fail(what, error)

        # handlers given to create_worker itself: an "errored" connected later would not stop
        # superqt from re-raising the error in the Qt event loop as well
        worker = create_worker(
            guarded, _start_thread=False, _connect={"returned": finish, "errored": crashed}
        )
        self._busy = True
        self._update_controls()
        self._say(f"{what}…")
        worker.start()

    def add_correction(self) -> bool:
        """Start saving the selected image as a corrected volume; False when it cannot start."""
        project = self._need_project()
        if project is None:
            return False
        image, labels, mask = self.link.image_layer(), self.link.labels_layer(), self.link.review_mask()
        if image is None:
            self._fail("Nothing to add", "choose an image first")
            return False
        if labels is None or mask is None:
            self._fail(
                "Nothing to add", f"pre-segment {image.name} (or restore its session) and review it first"
            )
            return False
        try:
            volume = image_volume(image)
        except ValueError as error:
            self._fail("Cannot add this image", error)
            return False
        name = correction_name(image.name)
        label_copy, mask_copy = np.array(labels.data, copy=True), np.array(mask, copy=True)
        made_by = self.link.class_names()

        def save() -> Any:
            # labels of a model whose classes the project numbers otherwise (or lacks) are stored
            # under the project's ids by name, or refused: never under another organ's id
            relabelled = renumbered(
                label_copy,
                derive_class_table(made_by or project.class_names),
                derive_class_table(project.class_names),
                f"{labels.name}: the model that made it",
                f"project {project.folder.name}",
            )
            # the same scan saved again replaces its own correction, whatever its layer is called now
            saved_as = project.correction_name_for(volume, name)
            return project.add_correction(
                saved_as, volume, relabelled.labels, mask_copy
            ), relabelled.describe()

        self._in_background(
            f"Saving {name} as a corrected volume", save, lambda saved: self._correction_saved(*saved)
        )
        return True

    def _correction_saved(self, info: Any, renumbering: str = "") -> None:
        note = (
            " No voxel is reviewed yet: retraining ignores it until you accept or edit regions."
            if info.reviewed_voxels == 0
            else ""
        )
        if renumbering:
            note += f" Its {renumbering}."
        self._say(
            f"Saved “{info.name}” as a corrected volume: {info.shape[0]} slices, "
            f"{info.reviewed_voxels:,} voxels reviewed.{note}",
            str(info.path),
        )
        self.refresh()
        self.correction_added.emit(info)
        self._maybe_retrain_automatically()

    def add_unlabeled_folder(self, folder: str | Path | None = None) -> bool:
        project = self._need_project()
        if project is None:
            return False
        folder = folder or choose_unlabeled_folder(self)
        if not folder:
            return False
        folder = Path(folder)

        left_out: list[str] = []

        def add() -> Any:
            scans = scans_in_folder(folder)
            return project.add_unlabeled(scans, warn=left_out.append, listed=scans)

        def added(scans: list[Any]) -> None:
            maps = sum(line.endswith("; left out") for line in left_out)  # the others: taken again
            parts = [f"Left out {maps} label map(s)"] if maps else []
            if len(left_out) > maps:
                parts.append(f"{len(left_out) - maps} changed since added, taken again")
            notes = f" {'; '.join(parts)}: hover here." if parts else ""
            self._say(
                f"Added {len(scans)} unlabeled scan(s) from {folder.name}; "
                f"the project references {len(project.unlabeled())}.{notes}",
                "\n".join(left_out) or str(folder),
            )
            self.refresh()
            self.unlabeled_added.emit(len(scans))

        self._in_background(f"Adding unlabeled scans from {folder.name}", add, added)
        return True

    # ================================================================= retraining
    def start_retrain(
        self, minutes: float | None = None, iterations: int | None = None, automatic: bool = False
    ) -> Any | None:
        """Start the worker process; returns its RetrainProcess (None when it cannot start)."""
        return self._start_worker(minutes, iterations, automatic, resume=False)

    def resume_retrain(self) -> Any | None:
        """Continue the interrupted run with its recorded settings; its RetrainProcess, or None."""
        return self._start_worker(None, None, False, resume=True)

    def _start_worker(
        self, minutes: float | None, iterations: int | None, automatic: bool, resume: bool
    ) -> Any | None:
        project = self._need_project()
        if project is None:
            return None
        if self.process is not None:
            return self.process
        if minutes is None and iterations is None and not resume:
            minutes = self.minutes_box.value()
        try:
            project.require_present()  # a deleted project has no corrections: say what is wrong
            interrupted = project.interrupted_run() if resume else None
            if resume and interrupted is None:
                raise ProjectError("no interrupted retrain to resume")
            if not any(c.reviewed_voxels for c in project.corrections()):
                raise ProjectError("add a corrected volume with reviewed voxels first")
            self.process = retrain_worker.start_retrain_process(
                project.folder, minutes=minutes, iterations=iterations, resume=resume
            )
        except (CGSError, OSError) as error:
            self._fail("Cannot resume" if resume else "Cannot retrain", error)
            return None
        self._interrupted = None
        self.last_process = self.process
        self._automatic = automatic
        self.progress = RetrainProgress()
        self._progress_bar = progress(total=iterations or 100, desc=f"Retraining {project.folder.name}")
        if resume:
            started = f"Resuming {interrupted.name} with the settings it started with"
        else:
            budget = f"{iterations} iterations" if iterations else budget_text(minutes, self._iteration_cap())
            started = f"{'Automatic retrain' if automatic else 'Retrain'} started ({budget})"
        self._say(f"{started} in a separate process; napari stays usable.", str(self.process.log_path))
        self.progress_label.setText(self.progress.text())
        self.timer.start()
        self._update_controls()
        return self.process

    def cancel_retrain(self) -> None:
        if self.process is not None:
            self.process.cancel()
            self.cancel_button.setEnabled(False)
            self._say("Cancelling: the worker stops after this iteration and keeps the model as it is then…")

    def _poll(self) -> None:
        if self.process is None:
            self.timer.stop()
            return
        messages = self.process.poll_messages()
        for message in map(retrain_event_from_dict, messages):
            self.progress.update(message)
            self.retrain_message.emit(message)
            if isinstance(message, RETRAIN_ENDINGS):
                self._retrain_ended(message)
                return
        if messages:  # most polls bring nothing: leave the widgets (and their layout) alone
            self.progress_label.setText(self.progress.text())
            self._show_progress()

    def _show_progress(self) -> None:
        bar = self._progress_bar
        if bar is None or not self.progress.step:
            return
        done = self.progress.step if self.progress.total else round(100 * self.progress.share)
        if done > bar.n:
            bar.update(done - bar.n)
        bar.set_description(f"Retraining · {self.progress.text()}")

    def _retrain_ended(self, message: Event) -> None:
        self.timer.stop()
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None
        self.process = None
        text = outcome_text(message)
        self.progress_label.setText(self.progress.text(ended=True))
        self._say(text, "\n".join([text, *self.progress.warnings]))
        # napari shows a notification's first line until it is expanded: the outcome first, then why
        (show_warning if isinstance(message, RetrainFailed) else show_info)(
            f"{outcome_headline(message)}\n{text}"
        )
        kept = None if isinstance(message, RetrainFailed) else message.version
        if self._automatic:
            self._auto_held_at = None if kept else self._auto_trigger_count
        if kept and message.activated:  # this panel's own retrain activated it: used here, not "outside"
            active = self._active_version()
            if active is not None:
                self._use_version_in_panel(active)
        self.refresh()
        self._update_controls()
        self.retrain_ended.emit(message)

    def _maybe_retrain_automatically(self) -> None:
        project, threshold = self.project, self.auto_box.value()
        if project is None or not threshold or self.retraining:
            return
        try:
            new = len(project.new_corrections_since_last_retrain())
            if self._auto_held_at is not None and new < self._auto_held_at + threshold:
                return
            if not project.should_retrain():  # the engine's rule: N new volumes, no retrain running
                return
        except (CGSError, OSError) as error:
            self._fail("Cannot check the automatic retrain", error)
            return
        self._auto_trigger_count = new
        self.start_retrain(automatic=True)

    # ================================================================= versions
    def selected_version(self) -> str | None:
        item = self.versions.currentItem()
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def select_version(self, version_id: str) -> None:
        for row in range(self.versions.count()):
            if self.versions.item(row).data(Qt.ItemDataRole.UserRole) == version_id:
                self.versions.setCurrentRow(row)

    def activate(self, version_id: str | None = None) -> VersionInfo | None:
        project = self._need_project()
        version_id = version_id or self.selected_version()
        if project is None or version_id is None:
            return None
        try:
            version = project.activate(version_id, why="activated by hand in napari")
        except (CGSError, OSError) as error:
            self._fail(f"Cannot activate {version_id}", error)
            return None
        self._use_version_in_panel(version)
        self.refresh()
        self._say(
            f"Activated {version.id} ({version.status}); the panel now pre-segments with it. "
            "Re-predict shows what it changes."
        )
        self.model_activated.emit(version.id)
        return version

    def _use_version_in_panel(self, version: VersionInfo) -> None:
        self._seen_active = version.id
        self.link.use_model(version.model_path, f"{self.project.folder.name} · {version.id}")

    # ================================================================= re-predict
    def repredict(self) -> Any | None:
        """Pre-segment the selected image again (untouched voxels only); returns the panel's job."""
        image = self.link.image_layer()
        if image is None:
            self._fail("Cannot re-predict", "choose an image first")
            return None
        labels = self.link.labels_layer()
        before = np.zeros(image.data.shape, np.uint8) if labels is None else np.array(labels.data, copy=True)
        model = self.link.model_label()
        self._repredict = (image, before, model)
        job = self.link.presegment_untouched()
        if job is None:
            self._repredict = None
            self._fail("Cannot re-predict", "a pre-segmentation is running, or no model or image is chosen")
            return None
        self._say(f"Re-predicting {image.name} on the voxels you have not touched…")
        return job

    def _on_prediction_failed(self, error: str) -> None:
        if self._repredict is not None:
            self._repredict = None
            self._fail("Re-predict failed", error)

    def _on_prediction_finished(self, result: Any) -> None:
        if self._repredict is None:
            return
        image, before, model = self._repredict
        self._repredict = None
        labels = self.link.labels_layer()
        if result is None:
            self._say("Re-predict cancelled: nothing changed.")
            return
        if labels is None:  # the image or its labels were closed while it ran: not a cancel
            self._say(f"Re-predict of {image.name} not shown: its labels layer was closed meanwhile.")
            return
        names = self.project.class_names if self.project is not None else list(result.prediction.class_names)
        after = np.asarray(labels.data)
        review = self.link.review_mask()
        if review is not None and review.shape == after.shape:
            # voxels the user drew or accepted are never re-predicted: a stroke painted while the
            # run went on is theirs, not the new model's change
            after = np.where(review > 0, before, after)
        changes = count_label_changes(before, after, names)
        layer = show_changes_layer(self.link.viewer, image, change_map(before, after))
        self._say(
            f"Re-predicted {image.name} with {model}: {changes.describe()}. Your edits were kept. "
            f"Hidden layer “{layer.name}”: green added, red removed, yellow relabelled.",
            changes.describe(),
        )
        self.changes_shown.emit(changes)

    # ================================================================= teardown
    def shutdown(self) -> None:
        """The panel is closing: ask a running retrain to stop (it keeps its model as it is then)."""
        self.cancel_retrain()
        self.timer.stop()
