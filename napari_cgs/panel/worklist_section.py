"""The panel's "Which scan next" section: score a folder's (or the project's) scans, open the worst.

Scoring is the engine's (``cgs_engine.review.worklist``, one forward pass per scan; for a
project ``cgs_engine.project.worklist``, which keeps the scores); it runs in a napari thread
worker that hands each scan's score to the GUI as it comes, so the list fills while the
viewer stays usable, and *Cancel* stops it between two scans. *Open next* opens the worst scan
not opened yet (double-click opens any) and makes it the panel's image.

Public API (tests)::

    section.score_folder(folder=None)   # a folder dialog when None; returns the worker
    section.score_project()             # the retrain section's open project
    section.project_changed()           # another project was opened: drop the old project's ranking
    section.cancel()
    section.open_next() -> Image layer | None
    section.scores                      # ScanScore list, worst first
Signals: ``finished(list)`` (the scores, when a scoring ends), ``opened(object)`` (the layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
)

from cgs_engine.infer import Predictor
from cgs_engine.project.unlabeled import scan_fingerprint
from cgs_engine.project.worklist import iterate_project_worklist
from cgs_engine.review.worklist import ScanScore, ordered, scans_in_folder, score_scans
from napari_cgs.panel.section import WorkerSection

OPENED_COLOUR = QColor("#9a9a9a")


def choose_scan_folder(parent: Any) -> str | None:
    """Module-level so that tests can replace the dialog."""
    return QFileDialog.getExistingDirectory(parent, "Folder of scans to rank") or None


def scan_text(rank: int, score: ScanScore, opened: bool) -> str:
    return f"{rank}. {score.name}{'  – opened' if opened else ''}\n    {' · '.join(score.findings())}"


def scan_tooltip(score: ScanScore) -> str:
    if score.problem:
        return f"{score.path}\n{score.problem}"
    lines = [score.path, "Per organ: likely wrong mL of predicted mL (estimated Dice)"]
    for organ, row in sorted(score.organs.items(), key=lambda item: -item[1]["likely_wrong_ml"]):
        wrong, predicted, dice = row["likely_wrong_ml"], row["predicted_ml"], row["estimated_dice"]
        lines.append(f"  {organ}: {wrong:.1f} of {predicted:.1f} mL ({dice:.2f})")
    if not score.calibrated:
        lines.append("The model has no calibrated error model: these order the scans, they are no volumes.")
    return "\n".join(lines)


def same_folder(project: Any, other: Any) -> bool:
    return Path(project.folder).resolve() == Path(other.folder).resolve()


# ------------------------------------------------------------------ what the workers run (engine calls)
def score_folder_job(checkpoint: Any, device: str, folder: Path, cancel: Callable[[], bool]):
    """Yield each scan's score; a generator, so the section shows them as they come."""

    scans = scans_in_folder(folder)
    predictor = Predictor(checkpoint, device=device)
    yield len(scans)
    yield from with_fingerprints(score_scans(predictor, scans, cancel=cancel))


def score_project_job(project: Any, device: str, cancel: Callable[[], bool]):
    yield len(project.unlabeled())
    active = project.active_version()
    predictor = None if active is None else Predictor(active.model_path, device=device)
    yield from with_fingerprints(iterate_project_worklist(project, predictor, cancel=cancel))


def with_fingerprints(scores: Iterable[ScanScore]):
    """Each score with its scan's fingerprint as ranked, so *Open next* can tell a scan replaced
    since. Taken here in the worker: a DICOM folder's is hundreds of file reads, which froze the
    viewer when the GUI thread took it as each score arrived."""
    for score in scores:
        yield score, _fingerprint(score.path)


class WorklistSection(WorkerSection):
    finished = Signal(list)
    opened = Signal(object)
    BUSY = "Busy scoring scans; wait for it to finish or cancel it."

    def __init__(
        self,
        viewer: Any,
        checkpoint: Callable[[], Any | None],
        device: Callable[[], str],
        project: Callable[[], Any | None],
        show_image: Callable[[Any], None],
        parent: Any | None = None,
    ) -> None:
        super().__init__("8 · Which scan next", parent)
        self.viewer, self._checkpoint, self._device, self._project = viewer, checkpoint, device, project
        self._show_image = show_image
        self.scores: list[ScanScore] = []
        self._fingerprints: dict[str, Any] = {}  # path -> scan_fingerprint when it was ranked
        self.opened_paths: set[str] = set()
        self._total = 0
        self._cancelled = False
        # The project whose scans the list ranks (None: a folder's); another project opened
        # meanwhile makes that list and any scoring still running for it stale.
        self._ranked_project: Any | None = None
        self._stale = False  # the running scoring is for a project no longer open
        self.folder_button = self._button(
            "Score a folder…",
            "Predict every scan in a folder once and rank them by how wrong the model likely is "
            "(runs in the background).",
            lambda: self.score_folder(),
        )
        self.project_button = self._button(
            "Score project scans",
            "Rank the open retraining project's unlabeled scans with its active model (scores are kept "
            "in the project, so only new scans are predicted).",
            self.score_project,
        )
        self.cancel_button = self._button("Cancel", "Stop scoring after the scan in progress.", self.cancel)
        self.list = QListWidget()
        self.list.setMinimumHeight(120)
        self.list.setWordWrap(True)
        self.list.setToolTip(
            "Scans ranked worst first: score = 1 - the mean estimated Dice of the organs. Correcting the "
            "worst scans teaches the model most. Double-click a scan to open it."
        )
        self.list.itemDoubleClicked.connect(self._on_double_click)
        self.open_button = self._button(
            "Open next ▶",
            "Open the worst scan not opened yet and make it the image to work on.",
            self.open_next,
        )
        self.status = QLabel("Rank scans to find the one worth correcting first.")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the section did last.")
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.folder_button)
        row.addWidget(self.project_button)
        layout.addLayout(row)
        layout.addWidget(self.list)
        row = QHBoxLayout()
        row.addWidget(self.open_button, 2)
        row.addWidget(self.cancel_button, 1)
        layout.addLayout(row)
        layout.addWidget(self.status)
        self.refresh()

    @classmethod
    def for_panel(cls, panel: Any) -> WorklistSection:
        def show_image(layer: Any) -> None:
            panel.select_image(layer)

        section = cls(
            panel.viewer,
            checkpoint=lambda: panel.checkpoint,
            device=lambda: panel.device_choice.value,
            project=lambda: panel.retrain_section.project,
            show_image=show_image,
        )
        panel.retrain_section.project_opened.connect(lambda _folder: section.project_changed())
        return section

    def _button(self, text: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.clicked.connect(lambda: slot())
        return button

    def refresh(self) -> None:
        busy = self.worker is not None
        self.folder_button.setEnabled(not busy and self._checkpoint() is not None)
        self.project_button.setEnabled(not busy and self._project() is not None)
        self.cancel_button.setEnabled(busy)
        self.open_button.setEnabled(any(self._openable(s) for s in self.scores))

    # ================================================================= scoring
    def score_folder(self, folder: str | Path | None = None):
        checkpoint = self._checkpoint()
        if checkpoint is None:
            return self._report("Choose a model first: the scans are scored with it.")
        folder = folder or choose_scan_folder(self)
        if not folder:
            return None
        return self._start_scoring(
            score_folder_job, (checkpoint, self._device(), Path(folder)), Path(folder).name, None
        )

    def score_project(self):
        project = self._project()
        if project is None:
            return self._report("Open a retraining project first (section 6).")
        return self._start_scoring(
            score_project_job, (project, self._device()), "the project's unlabeled scans", project
        )

    def project_changed(self) -> None:
        """Another project is open: a ranking of the previous one's scans no longer describes it.

        Its scoring stops after the scan in progress (the scores already computed stay saved in
        that project) and the list is emptied, so *Open next* cannot offer the old project's scans.
        """
        current, ranked = self._project(), self._ranked_project
        if ranked is None or (current is not None and same_folder(current, ranked)):
            return
        name = Path(self._ranked_project.folder).name
        was_scoring = self.worker is not None
        self._ranked_project = None
        self.scores = []
        self._show_scores()
        if was_scoring:
            self._cancelled = self._stale = True
            self.worker.quit()
        self.status.setText(
            f"Another project was opened: the ranking of {name}'s scans was "
            f"{'stopped and ' if was_scoring else ''}cleared (its scores stay saved in {name}). "
            "Score project scans ranks this one."
        )

    def _start_scoring(self, job: Callable, arguments: tuple, what: str, project: Any | None):
        if self.worker is not None:
            return self._report(self.BUSY)
        self.scores, self._total, self._cancelled, self._stale = [], 0, False, False
        self._ranked_project = project
        self._show_scores()
        connections = {
            "yielded": self._on_yielded,
            "returned": lambda _: None,
            "errored": self._scoring_errored,
            "finished": self._scoring_finished,
        }
        self.worker = create_worker(
            job,
            *arguments,
            self._should_stop,
            _start_thread=False,
            _connect=connections,
            _progress={"desc": "Scoring scans"},
        )
        self.status.setText(f"Scoring {what}… (the viewer stays usable)")
        self.refresh()
        self.worker.start()
        return self.worker

    def _should_stop(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        if self.worker is not None:
            self._cancelled = True
            self.worker.quit()
            self.status.setText("Cancelling after the scan in progress…")

    def _on_yielded(self, value: Any) -> None:
        if isinstance(value, int):
            self._total = value
            return
        if self._stale:  # scored for a project no longer open (saved there by the engine)
            return
        value, fingerprint = value
        self.scores = ordered([*self.scores, value])
        self._fingerprints[value.path] = fingerprint
        self._show_scores()
        self.status.setText(f"Scored {len(self.scores)} of {self._total} scans; latest: {value.describe()}")

    def _scoring_errored(self, error: Exception) -> None:
        if not self._stale:  # a stale run's failure concerns a project no longer open
            self._errored(error)

    def _scoring_finished(self) -> None:
        self.worker = None
        if self._stale:  # project_changed said why it stopped
            self._stale = False
            self.refresh()
            self.finished.emit([])
            return
        done = f"Ranked {len(self.scores)} scan(s)"
        if self._cancelled:
            done = f"Cancelled: {len(self.scores)} of {self._total} scan(s) ranked"
        elif self.status.text().startswith("Failed"):
            done = self.status.text()
        if self.scores and not any(s.calibrated for s in self.scores):
            done += " (the model has no calibrated error model: an order, not Dice estimates)"
        self.status.setText(done + ".")
        self.refresh()
        self.finished.emit(list(self.scores))

    def _show_scores(self) -> None:
        self.list.clear()
        for rank, score in enumerate(self.scores, start=1):
            opened = score.path in self.opened_paths
            item = QListWidgetItem(scan_text(rank, score, opened))
            item.setToolTip(scan_tooltip(score))
            item.setData(Qt.ItemDataRole.UserRole, score.path)
            if opened or score.problem:
                item.setForeground(OPENED_COLOUR)
            self.list.addItem(item)
        self.refresh()

    # ================================================================= opening scans
    def _openable(self, score: ScanScore) -> bool:
        return not score.problem and score.path not in self.opened_paths

    def open_next(self) -> Any | None:
        for score in list(self.scores):
            if not self._openable(score):
                continue
            if self._changed_since_ranked(score.path):  # its rank is another file's
                self._mark_unopenable(score.path, "changed since it was ranked: rank the folder again")
                continue
            return self.open_scan(score.path)
        return self._report("Every ranked scan has been opened: rank another folder.")

    def _changed_since_ranked(self, path: str) -> bool:
        recorded = self._fingerprints.get(path)  # (a deleted scan is said so when opening it fails)
        return recorded is not None and Path(path).exists() and _fingerprint(path) != recorded

    def _mark_unopenable(self, path: str, problem: str) -> None:
        """Listed last with its reason: *Open next* kept choosing a scan deleted after it was
        ranked, failing each time, and never reached the next one."""
        self.scores = ordered(
            [dataclasses.replace(s, problem=problem) if s.path == path else s for s in self.scores]
        )
        self._show_scores()

    def _on_double_click(self, item: QListWidgetItem) -> None:
        self.open_scan(item.data(Qt.ItemDataRole.UserRole))

    def open_scan(self, path: str) -> Any | None:
        changed = self._changed_since_ranked(path)
        try:
            layers = self.viewer.open(path, plugin="napari-cgs")
        except Exception as error:  # napari wraps reader errors in its own types
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            self._mark_unopenable(path, f"cannot open: {reason}")
            return self._report(f"Cannot open {Path(path).name}: {reason}")
        self.opened_paths.add(path)
        self._show_scores()
        layer = layers[0] if layers else None
        if layer is not None:
            self._show_image(layer)
            note = " It changed since it was ranked: its score is not this file's." if changed else ""
            self.status.setText(
                f"Opened {Path(path).name}: pre-segment it, then review and correct it.{note}"
            )
            self.opened.emit(layer)
        return layer

    def shutdown(self) -> None:
        """The panel is closing: stop scoring."""
        self.cancel()


def _fingerprint(path: str) -> Any:
    """The scan's fingerprint (its size, header and end), or None when it cannot be read."""
    try:
        return scan_fingerprint(Path(path))
    except OSError:
        return None
