"""The CGS dock widget: choose a model, pre-segment an image, review the uncertain regions, export.

The panel gathers inputs, starts workers and shows results; every computation is an engine call
(``cgs_engine``) made from ``_workers``, ``_prediction_layers``, ``_review`` or ``_session``.

Public API (used by tests and ``scripts/screenshot.py``)::

    panel = CGSPanel(viewer)
    panel.load_checkpoint(path)      # add a checkpoint to the model selector and select it
    panel.select_image(layer)        # choose the Image layer to work on
    panel.presegment()               # start the worker; returns the PredictionJob
    panel.cancel()                   # stop a running pre-segmentation
    panel.export(path=None)          # labels + class table; asks before overwriting
    panel.restore_session()          # bring back the saved labels and queue of this image
    panel.review                     # ReviewController: next(), previous(), accept(), skip()
    panel.retrain_section            # RetrainSection: project, retrain, versions (see _retrain)
    panel.dicom_section              # DicomSection: RTSTRUCT / SEG export, open RTSTRUCT (_dicom_section)
    panel.worklist_section           # WorklistSection: rank scans, open the next one (_worklist)

Signals: ``prediction_finished(object)`` (PredictionResult, or None when cancelled),
``prediction_failed(str)``, ``exported(list)`` (paths written), ``session_restored(str)``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from cgs_engine.checkpoint import ModelCheckpoint, load_checkpoint
from cgs_engine.classes.checks import ClassTableError
from cgs_engine.classes.relabel import kept_in_new_classes
from cgs_engine.errors import CGSError
from cgs_engine.infer.predictor import Predictor
from cgs_engine.io.formats import extension_of, output_name_problem
from cgs_engine.review import ReviewState, slice_profile
from cgs_engine.review.carry import carry_over
from cgs_engine.review.edits import EditTracker, combined_review_mask
from cgs_engine.review.state import ACCEPTED, EDITED
from cgs_engine.runtime import resolve_runtime
from cgs_engine.volume import Volume
from napari_cgs._layers import KIND_KEY, SOURCE_KEY, layer_geometry, read_geometry, same_layer, shown_as
from napari_cgs._sample_data import BUNDLED_MODEL
from napari_cgs.panel import dialogs
from napari_cgs.panel.correct_section import CorrectSection
from napari_cgs.panel.dicom_section import (
    DicomSection,  # here, not at the top: keeps this edit in one place
)
from napari_cgs.panel.display import DisplayControls, name_slice_axes
from napari_cgs.panel.fit import breakable, fit_to_dock
from napari_cgs.panel.likely_wrong import LikelyWrongSummary
from napari_cgs.panel.prediction_layers import (
    STROKE_WAIT_MS,
    ensure_labels_layer,
    export_labels,
    export_targets,
    find_labels_layer,
    focus_layer_name,
    forget_history,
    image_of_labels,
    image_volume,
    imported_layer_edited,
    labels_layer_name,
    layers_made_for,
    map_layer_data,
    moved_off_image,
    muted_edit_tracking,
    open_source_clash,
    painted_parts,
    rename_derived_layers,
    series_made_on,
    set_aside_labels,
    show_map_layers,
    stack_in_reading_order,
    stroke_in_progress,
    unproxied,
    untracked_touched,
    write_labels_undoable,
)
from napari_cgs.panel.retrain_section import RetrainSection
from napari_cgs.panel.review_queue import ReviewController, ReviewQueueWidget
from napari_cgs.panel.session import SessionAutosave, find_session, is_conflict_file, saved_prediction_of
from napari_cgs.panel.workers import PredictionJob, PredictionResult, qt_object_deleted
from napari_cgs.panel.worklist_section import WorklistSection

DERIVED_KINDS = ("map", "specialist", "disagreement", "labels")
STROKE_SAVE_MS = 2_000  # the session is saved this long after the last paint stroke
FILL_UNTOUCHED = "Fill only voxels I have not touched"
REPLACE_ALL = "Replace everything"
RERUN_TIPS = {
    FILL_UNTOUCHED: "Keep every voxel you painted, erased or accepted; the new prediction fills the rest.",
    REPLACE_ALL: (
        "Overwrite the whole labels layer with the new prediction (asks first when it discards your "
        "edits and accepts; otherwise Ctrl+Z brings the old labels back)."
    ),
}
DEVICES = [("Automatic (GPU if available)", "auto"), ("CPU", "cpu"), ("GPU (CUDA)", "cuda")]
NO_MODEL_HINT = (
    "No model selected: pick one above, or click “Choose checkpoint…” and open a .pt file "
    "trained with `cgs train`."
)


# Small module-level functions so that tests can replace the dialogs.
def choose_export_path(parent: QWidget | None, suggestion: Path) -> str | None:
    path, chosen_filter = QFileDialog.getSaveFileName(
        parent,
        "Export labels",
        str(suggestion),
        "NIfTI (*.nii.gz *.nii);;MetaImage (*.mha *.mhd);;NRRD (*.nrrd *.nhdr)",
        options=QFileDialog.Option.DontConfirmOverwrite,  # the panel asks itself, for the sidecar too
    )
    return with_format_extension(path, chosen_filter) if path else None


def with_format_extension(path: str, chosen_filter: str) -> str:
    """A name typed without an image extension ("pt1_labels") gets the chosen format's first one,
    as save dialogs do; a name with a supported extension (any case) is left as typed."""
    if extension_of(path) is not None:
        return path
    match = re.search(r"\*(\.[\w.]+)", chosen_filter or "")
    return path + (match.group(1) if match else ".nii.gz")


def choose_checkpoint_path(parent: QWidget | None) -> str | None:
    path, _ = QFileDialog.getOpenFileName(
        parent, "Choose a CGS checkpoint", str(Path.home()), "Checkpoints (*.pt)"
    )
    return path or None


def writable_folder(folder: Path) -> bool:
    """Whether new files can be made in ``folder`` (it exists, is a folder and we may write there)."""
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def local_time(saved: str) -> str:
    """A session's UTC ISO time as the clock on the wall shows it (``2026-12-04 14:32``)."""
    try:
        return datetime.fromisoformat(saved).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return saved or "an unknown time"


def describe_checkpoint(checkpoint: ModelCheckpoint) -> str:
    organs = ", ".join(checkpoint.class_names[1:])
    created = checkpoint.created[:10] if checkpoint.created else "unknown date"
    best = (checkpoint.metrics or {}).get("best")
    dice = best.get("dice_mean") if isinstance(best, dict) else None
    # On the 0-100 scale of the retrain's held-out Dice, so the two figures read alike.
    quality = (
        f"best validation Dice {100 * dice:.1f}" if isinstance(dice, (int, float)) else "no validation Dice"
    )
    when = f"Trained {created} · method {checkpoint.method} · {quality}"
    return f"{len(checkpoint.class_names) - 1} organs: {organs}\n{when}"


MIN_IN_PLANE = 8  # voxels; a colour photo read as a "volume" has 3 or 4 along its last axis


def is_volume_layer(layer: Any) -> bool:
    """A single-channel 3D image, the only kind the engine segments (not colour photos, not 2D)."""
    if getattr(layer, "rgb", False) or getattr(layer, "multiscale", False) or getattr(layer, "ndim", 0) != 3:
        return False
    return min(np.shape(layer.data)[1:]) >= MIN_IN_PLANE


class CGSPanel(QWidget):
    prediction_finished = Signal(object)
    prediction_failed = Signal(str)
    exported = Signal(list)
    session_restored = Signal(str)

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.checkpoint: ModelCheckpoint | None = None
        self.predictor: Predictor | None = None
        self.job: PredictionJob | None = None
        self.labels_layer: Any | None = None
        self.tracker: EditTracker | None = None  # the user's edits of labels_layer, undo-aware
        self.prediction_labels: np.ndarray | None = None  # the generalist's labels, for "back to it"
        self.class_names: list[str] = []
        self.class_colors: list[list[int]] = []  # RGB per class id of the labels on screen
        self.prediction_id = ""  # the saved prediction (maps) the labels on screen came from
        self._fingerprint = ""
        self._followed: Any | None = None  # the image whose session the panel saves (see presegment)
        self._setting_aside = False  # an image closed: its layers being removed (see _set_aside)
        self._set_aside_image: Any | None = None  # the followed image last closed (see _set_aside)
        self._export_folder: Path | None = None  # where the last export went
        self._frame_when_shown = False  # a session restored before the panel was on screen
        self._docked = self.parent() is not None  # put in a dock once (see event)
        self._shut_down = False
        self._edit_flags = {"writing": False}
        self._waiting_result = False  # a pre-segmentation's result waits for a stroke to end
        self._models: list[tuple[str, str]] = []
        self._build()
        self.review = ReviewController(self.viewer, self.queue)
        self.review.bind_keys()
        self.correct_section.follow_review(self.review)
        self.review.region_shown.connect(self.display.style_alternative)
        self.display.bind_keys()
        self.autosave = SessionAutosave(self._session_snapshot, parent=self)
        self.autosave.saved.connect(self._show_saved)
        self.autosave.diverted.connect(self._show_saved)
        self.autosave.failed.connect(lambda reason: self._show_session(f"Autosave failed: {reason}", reason))
        self.review.changed.connect(self.autosave.mark_changed)
        self.stroke_timer = QTimer(self)
        self.stroke_timer.setSingleShot(True)
        self.stroke_timer.setInterval(STROKE_SAVE_MS)
        self.stroke_timer.timeout.connect(self.autosave.save_if_changed)
        # Every decision, by button or by key (Alt+A / Alt+S), is on disk at once, as README says.
        self.review.decided.connect(self.autosave.save_now)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_images)
        # Strokes on the labels of an image the panel does not follow went into no session and were
        # lost when napari closed: painting there makes the panel follow that image.
        self._paint_watched: set[int] = set()
        self.viewer.layers.events.inserted.connect(self._watch_paint)
        self.viewer.layers.events.removed.connect(self._unwatch_paint)
        self.viewer.layers.events.removed.connect(self._on_other_image_closed)
        for layer in list(self.viewer.layers):
            self._watch_paint(SimpleNamespace(value=layer))
        self._image_names: dict[Any, str] = {}  # source image layer id -> its name, to see renames
        self.viewer.layers.events.renamed.connect(self._on_layer_renamed)
        # The model first: an image already open may restore its session at once (its colours then
        # come from the session, and older sessions without them from this model).
        if BUNDLED_MODEL.is_file():
            self.load_checkpoint(BUNDLED_MODEL, label="Bundled model")
        else:
            self._show_model(None)
        self._refresh_images()

    # ================================================================= layout
    def _build(self) -> None:
        boxes = (self._build_model_box(), self._build_run_box(), self._build_review_box())
        save_box = self._build_save_box()
        self._build_sections()
        self._build_scroll(*boxes, save_box)

    def _build_model_box(self) -> QGroupBox:
        self.model_choice = ComboBox(
            choices=[], nullable=True, tooltip="The segmentation model (checkpoint) used to pre-segment."
        )
        self.model_choice.changed.connect(self._on_model_chosen)
        choose = QPushButton("Choose checkpoint…")
        choose.setToolTip("Load a model checkpoint (.pt) trained with `cgs train`.")
        choose.clicked.connect(self._on_choose_checkpoint)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setToolTip("Organs the model segments, when it was trained, its method and quality.")
        self.device_choice = ComboBox(
            choices=DEVICES,
            value="auto",
            tooltip="Where the model runs. Automatic uses a GPU when there is one.",
        )
        self.device_choice.changed.connect(self._on_device_chosen)
        self.runtime_label = QLabel()
        self.runtime_label.setWordWrap(True)
        self.runtime_label.setToolTip("The device, precision and threads the model will actually run with.")

        model_box = QGroupBox("1 · Model")
        model_layout = QVBoxLayout(model_box)
        row = QHBoxLayout()
        row.addWidget(self.model_choice.native, 1)
        row.addWidget(choose)
        model_layout.addLayout(row)
        model_layout.addWidget(self.model_info)
        row = QHBoxLayout()
        device_label = QLabel("Device")
        device_label.setToolTip(self.device_choice.tooltip)
        row.addWidget(device_label)
        row.addWidget(self.device_choice.native, 1)
        model_layout.addLayout(row)
        model_layout.addWidget(self.runtime_label)
        return model_box

    def _build_run_box(self) -> QGroupBox:
        self.image_choice = ComboBox(
            choices=self._image_choices, nullable=True, tooltip="The CT/MR Image layer to pre-segment."
        )
        self.image_choice.changed.connect(self._on_image_chosen)
        # Plain Qt radio buttons: magicgui's RadioButtons rebuilds its buttons and drops their tooltips.
        self.fill_untouched_button = QRadioButton(FILL_UNTOUCHED)
        self.fill_untouched_button.setToolTip(RERUN_TIPS[FILL_UNTOUCHED])
        self.fill_untouched_button.setChecked(True)
        self.replace_button = QRadioButton(REPLACE_ALL)
        self.replace_button.setToolTip(RERUN_TIPS[REPLACE_ALL])
        self.rerun_group = QButtonGroup(self)
        self.rerun_group.addButton(self.fill_untouched_button)
        self.rerun_group.addButton(self.replace_button)
        self.run_button = QPushButton("Pre-segment")
        self.run_button.setToolTip(
            "Segment every organ in the image (runs in the background; Ctrl+Z undoes it)."
        )
        self.run_button.clicked.connect(self.presegment)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running pre-segmentation; nothing is written.")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status_label = QLabel("Choose a model and an image, then click Pre-segment.")
        self.status_label.setWordWrap(True)
        self.status_label.setToolTip("What the panel did last.")

        run_box = QGroupBox("2 · Pre-segment")
        run_layout = QVBoxLayout(run_box)
        row = QHBoxLayout()
        image_label = QLabel("Image")
        image_label.setToolTip(self.image_choice.tooltip)
        row.addWidget(image_label)
        row.addWidget(self.image_choice.native, 1)
        run_layout.addLayout(row)
        rerun_label = QLabel("If the labels layer already has work in it:")
        rerun_label.setToolTip(
            "What a new pre-segmentation does to a labels layer that already has work in it."
        )
        run_layout.addWidget(rerun_label)
        run_layout.addWidget(self.fill_untouched_button)
        run_layout.addWidget(self.replace_button)
        row = QHBoxLayout()
        row.addWidget(self.run_button, 2)
        row.addWidget(self.cancel_button, 1)
        run_layout.addLayout(row)
        run_layout.addWidget(self.status_label)
        self.scope_label = QLabel()
        self.scope_label.setWordWrap(True)
        self.scope_label.setStyleSheet("color: #ffb347;")
        self.scope_label.setToolTip(
            "The scan differs from what the model was trained on (modality, body region): check every "
            "organ before trusting the result."
        )
        self.scope_label.setVisible(False)
        run_layout.addWidget(self.scope_label)
        return run_box

    def _build_review_box(self) -> QGroupBox:
        self.queue = ReviewQueueWidget()
        self.display = DisplayControls(self)
        review_box = QGroupBox("3 · Review uncertain regions")
        review_layout = QVBoxLayout(review_box)
        review_layout.addWidget(self.queue)
        self.likely_wrong = LikelyWrongSummary()  # per organ "likely wrong: N mL" (_likely_wrong)
        review_layout.addWidget(self.likely_wrong)
        review_layout.addWidget(self.display)
        return review_box

    def _build_save_box(self) -> QGroupBox:
        self.export_button = QPushButton("Export labels…")
        self.export_button.setToolTip(
            "Save the labels on the image's exact grid (NIfTI, MetaImage or NRRD) plus a class table "
            "(<name>_classes.json: id, name, colour)."
        )
        self.export_button.clicked.connect(lambda: self.export())
        self.restore_button = QPushButton("Restore session")
        self.restore_button.setToolTip(
            "Bring back the autosaved labels, review marks and queue position of this image."
        )
        self.restore_button.setEnabled(False)
        self.restore_button.clicked.connect(self.restore_session)
        self.session_label = QLabel(
            "Your review is autosaved every minute and at every accept, skip and export."
        )
        self.session_label.setWordWrap(True)
        self.session_label.setToolTip("Where the review session of this image is saved.")
        save_box = QGroupBox("5 · Save")
        save_layout = QVBoxLayout(save_box)
        row = QHBoxLayout()
        row.addWidget(self.export_button)
        row.addWidget(self.restore_button)
        save_layout.addLayout(row)
        self.export_status = QLabel()
        self.export_status.setWordWrap(True)
        self.export_status.setToolTip("What the last export did.")
        self.export_status.setVisible(False)
        save_layout.addWidget(self.export_status)
        save_layout.addWidget(self.session_label)
        return save_box

    def _build_sections(self) -> None:
        """The sections with their own module: correct, retrain, DICOM, worklist."""
        self.correct_section = CorrectSection(self)
        self.retrain_section = RetrainSection.for_panel(self)

        self.dicom_section = DicomSection.for_panel(self)
        self.worklist_section = WorklistSection.for_panel(self)  # which scan next (_worklist)

    def _build_scroll(self, model_box, run_box, review_box, save_box) -> None:
        """Every section in one scrolled column that follows the dock's width."""
        for combo in (self.model_choice, self.device_choice, self.image_choice):
            # Long model or image names must not widen the dock: the combo box elides them instead.
            combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(12)
        content = QWidget()
        layout = QVBoxLayout(content)
        sections = (model_box, run_box, review_box, self.correct_section, save_box)
        for box in (*sections, self.retrain_section, self.dicom_section, self.worklist_section):
            layout.addWidget(box)
        layout.addStretch(1)
        fit_to_dock(content)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        # Content follows the dock's width; long texts wrap (see _fit.breakable) instead of scrolling.
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(380)

    # ================================================================= model
    def load_checkpoint(self, path: str | Path, label: str | None = None) -> ModelCheckpoint | None:
        """Add a checkpoint to the selector and select it; None (and a message) if it cannot be read."""
        path = Path(path)
        if str(path) not in [value for _, value in self._models]:
            self._models.append((label or f"{path.parent.name}/{path.name}", str(path)))
            self.model_choice.choices = list(self._models)
        self.model_choice.value = str(path)
        return self.checkpoint

    def _on_choose_checkpoint(self) -> None:
        path = choose_checkpoint_path(self)
        if path:
            self.load_checkpoint(path)

    def _on_model_chosen(self, value: str | None) -> None:
        if not value:
            self._show_model(None)
            return
        try:
            checkpoint = load_checkpoint(value)
        except CGSError as error:
            self.checkpoint = None
            self.model_info.setText(f"Cannot use this model: {error}")
            self.run_button.setEnabled(False)
            return
        self._show_model(checkpoint)

    def _show_model(self, checkpoint: ModelCheckpoint | None) -> None:
        self.checkpoint = checkpoint
        self.model_info.setText(NO_MODEL_HINT if checkpoint is None else describe_checkpoint(checkpoint))
        # The predictor is kept: its next run swaps in the new model (same device, no rebuild).
        self._show_runtime(self.device_choice.value)

    def _on_device_chosen(self, device: str) -> None:
        self.predictor = None  # the next run builds one for this device (and keeps it)
        self._show_runtime(device)

    def _show_runtime(self, device: str) -> None:
        try:
            self.runtime_label.setText(f"Runs on: {resolve_runtime(device).describe()}")
            usable = True
        except ValueError as error:
            self.runtime_label.setText(f"Unavailable: {error}")
            usable = False
        self.run_button.setEnabled(usable and self.checkpoint is not None)

    def set_predictor(self, predictor: Predictor) -> None:
        """Use an already built predictor (tests, scripts); it is kept for every later run."""
        self.predictor, self.checkpoint = predictor, predictor.checkpoint
        self.model_info.setText(describe_checkpoint(predictor.checkpoint))
        self.runtime_label.setText(f"Runs on: {predictor.runtime.describe()}")
        self.run_button.setEnabled(True)

    def _get_predictor(self) -> Predictor:
        """Called on the worker thread: build the predictor once, swap the model when it changed."""
        if self.predictor is None:
            self.predictor = Predictor(self.checkpoint, device=self.device_choice.value)
        elif self.predictor.checkpoint is not self.checkpoint:
            self.predictor.swap(self.checkpoint)
        return self.predictor

    # ================================================================= image choice
    def _image_choices(self, widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._source_images() if is_volume_layer(layer)]

    def _source_images(self) -> list[Any]:
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and (layer.metadata or {}).get(KIND_KEY) not in DERIVED_KINDS
        ]

    def _refresh_images(self, event=None) -> None:
        self._image_names = {layer.unique_id: layer.name for layer in self._source_images()}
        added = getattr(event, "value", None)
        if added is not None and added in self._source_images() and not is_volume_layer(added):
            self.status_label.setText(
                f"{added.name} is not offered for pre-segmentation: the models work on single-channel "
                "3D volumes (CT or MR), and this image is 2D, colour or of more dimensions."
            )
        # Rebuilding the choices drops the value when its name changed (a renamed image), which
        # cleared the review of the image still under review: keep the chosen image while offered.
        followed, chosen = self._followed, self.image_choice.value
        with self.image_choice.changed.blocked():
            self.image_choice.reset_choices()
            still = [layer for layer in self.image_choice.choices if same_layer(layer, chosen)]
            if still:
                self.image_choice.value = still[0]
        value = self.image_choice.value
        offered = [layer for layer in self.image_choice.choices if layer is not None]  # nullable box
        if value is None and offered:
            self.image_choice.value = offered[-1]
        elif (value is not None or followed is not None) and not same_layer(value, followed):
            self._on_image_chosen(value)  # what the blocked rebuild chose (the image was removed)

    def _on_layer_renamed(self, event=None) -> None:
        """A renamed image takes the layers the panel made for it along (see rename_derived_layers)."""
        for layer in self._source_images():
            old = self._image_names.get(layer.unique_id)
            if old is not None and old != layer.name:
                rename_derived_layers(self.viewer, layer, old)
        self._image_names = {layer.unique_id: layer.name for layer in self._source_images()}

    @property
    def image_layer(self) -> Any | None:
        return self.image_choice.value

    def out_of_step(self) -> str:
        """Why the image in the Image box is not the one whose labels, review and session the panel
        holds ("" when it is). Choosing another image during a pre-segmentation is put off until the
        run ends; meanwhile a correction would have read one image and written another's labels."""
        chosen, followed = self.image_choice.value, self._followed
        if chosen is None or followed is None or same_layer(chosen, followed):
            return ""
        return (
            f"{chosen.name} is chosen, but the panel still holds {followed.name}'s labels until its "
            "pre-segmentation ends: wait for it, or cancel it."
        )

    def select_image(self, layer: Any) -> None:
        self._refresh_images()
        self.image_choice.value = layer

    def _on_image_chosen(self, layer: Any) -> None:
        if self.running() or self._setting_aside:
            return  # (setting aside removes layers: the Image box is rebuilt meanwhile)
        if layer is not None and same_layer(layer, self._followed):
            return  # the same image again (renamed: the choices were rebuilt): keep its review
        followed = self._followed
        closed = followed if followed is not None and not self._in_viewer(followed) else None
        # The previous image's review, written before it is let go and before the next image's session
        # is looked up: the same file opened again read the session as it was before this write.
        self.autosave.save_if_changed()
        self.autosave.flush()
        closed_text = "" if closed is None else self._set_aside(closed)
        self._set_aside_image = closed  # dealt with here, not again by _on_other_image_closed
        self.review.clear()
        self.likely_wrong.show_estimate(None, [])
        self.labels_layer = self.tracker = self.prediction_labels = None
        self.restore_button.setEnabled(False)
        self._show_scope([])
        if layer is None:
            self._followed = None  # the image is gone: a layer added back is followed afresh
            if closed_text:
                self.status_label.setText(breakable(closed_text))
            return
        self._fingerprint = self.autosave.follow(layer)
        self._followed = layer
        name_slice_axes(self.viewer, layer)
        if self.autosave.note:  # the usual session file is another image's: kept, and said
            self._show_session(f"Note: {self.autosave.note}.", str(self.autosave.path))
        self._offer_session(layer)
        if self.review.state is None:  # not restored: the whole slice (napari frames the field of view)
            QTimer.singleShot(0, self.display.whole_slice)
            if self.checkpoint is not None:
                self.status_label.setText(
                    breakable(f"Ready: click Pre-segment to segment every organ in {layer.name}.")
                )
        if closed_text:
            self.status_label.setText(f"{breakable(closed_text)} {self.status_label.text()}")

    def _set_aside(self, closed_image: Any) -> str:
        """The followed image was closed. Its review saved: the layers made for it go with it (its
        session gives them back when the file is opened again; left behind, its labels stayed
        editable but untracked, and the session came back as "… labels [1]" beside them). Not
        saved, or a labels layer of it that the panel was not following (strokes there are in no
        session): every layer stays, its labels read-only. Returns what to say."""
        labels = self.labels_layer
        if labels is not None and not self._in_viewer(labels):
            labels = None
        if labels is not None:
            labels.events.paint.disconnect(self._on_paint)
        session = self.autosave.path
        saved = not self.autosave.dirty and session is not None and session.is_file()
        made = layers_made_for(self.viewer, closed_image)
        if labels is not None and not any(same_layer(labels, layer) for layer in made):
            made.append(labels)  # renamed by the user: still the closed image's
        name = labels_layer_name(closed_image)
        image_labels = [layer for layer in made if same_layer(layer, labels) or layer.name == name]
        untracked = [layer for layer in image_labels if not same_layer(layer, labels)]
        if saved and not untracked:
            return self._remove_saved_layers(closed_image, made, session)
        for layer in image_labels:
            set_aside_labels(layer)
        if not image_labels:
            return ""
        kept = ", ".join(f'"{layer.name}"' for layer in image_labels)
        why = "its review could not be saved" if not saved else "the panel was not following its labels"
        return (
            f"{closed_image.name} was closed and {why}: {kept} holds it (export it from there); "
            "it cannot be painted."
        )

    def _remove_saved_layers(self, closed_image: Any, made: list[Any], session: Path) -> str:
        """The layers of a closed image whose review is saved go (its session gives them back), but
        an opened RTSTRUCT the user edited, which is in no session, stays, read-only."""
        edited = [layer for layer in made if imported_layer_edited(layer)]
        going = [layer for layer in made if not any(layer is kept for kept in edited)]
        # Removed after napari's own removal: removing layers while napari removes a selection of
        # them (select all, Delete) made it look up a layer already gone. Renamed at once, so that
        # the same file opened meanwhile does not find them by name.
        for layer in going:
            layer.name = f"{layer.name} (closed)"
        QTimer.singleShot(0, lambda: self._remove_layers(going))
        for layer in edited:
            set_aside_labels(layer)
        stays = "".join(
            f" Your edited “{layer.name}” is in no session: it stays, read-only "
            "(File > Save Selected Layers writes it)."
            for layer in edited
        )
        return (
            f"{closed_image.name} was closed: its review is saved ({session.name}) and comes back "
            f"when you open the file again.{stays}"
        )

    def _remove_layers(self, layers: list[Any]) -> None:
        self._setting_aside = True  # the Image box is rebuilt at each removal: no image switch
        try:
            for layer in layers:
                if self._in_viewer(layer):
                    self.viewer.layers.remove(layer)
        finally:
            self._setting_aside = False

    # ================================================================= pre-segmentation
    def presegment(self) -> PredictionJob | None:
        layer = self.image_layer
        if self.checkpoint is None or layer is None:
            self.status_label.setText("Choose a model and an image first.")
            return None
        if self.running():
            return self.job
        if not same_layer(layer, self._followed):  # chosen while an earlier run was busy: switch now,
            self._on_image_chosen(layer)  # or its review would be saved in the other image's session
        if not self._may_discard_review(layer):
            self.status_label.setText(
                f"Not run: your review is kept. '{FILL_UNTOUCHED}' re-runs the rest and keeps it."
            )
            return None
        try:
            volume = image_volume(layer)
        except ValueError as error:
            self.status_label.setText(str(error))
            return None
        self.job = PredictionJob(
            self._get_predictor,
            volume,
            f"Pre-segmenting {layer.name}",
            on_done=lambda result, image=layer, model=self.checkpoint: self._on_prediction(
                image, result, model
            ),
            on_error=self._on_prediction_error,
            owner=self,
        )
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(f"Pre-segmenting {layer.name}… (the viewer stays usable)")
        self.job.start()
        return self.job

    def _replacing_review(self, image_layer: Any) -> np.ndarray | None:
        """The review mask "Replace everything" would discard on this image (None: nothing to lose)."""
        if not self.replace_button.isChecked() or not self.tracks_image(image_layer):
            return None
        mask = self.review_mask()
        return mask if mask is not None and mask.any() else None

    def _may_discard_review(self, image_layer: Any) -> bool:
        """Asked before "Replace everything" discards reviewed voxels. Ctrl+Z after it brought the
        labels back but not their marks: the user's strokes and accepts then counted as the model's
        (never trained on), and the session was saved so."""
        mask = self._replacing_review(image_layer)
        if mask is None:
            return True
        edited, accepted = int(np.count_nonzero(mask == EDITED)), int(np.count_nonzero(mask == ACCEPTED))
        return dialogs.confirm_discard_review(self, image_layer.name, edited, accepted)

    def running(self) -> bool:
        """A pre-segmentation runs, or its result waits for a stroke to end before it lands."""
        return (self.job is not None and not self.job.finished) or self._waiting_result

    def cancel(self) -> None:
        if self.running():
            self.job.cancel()
            self.status_label.setText("Cancelling…")

    def _job_ended(self) -> None:
        self.run_button.setEnabled(self.checkpoint is not None)
        self.cancel_button.setEnabled(False)

    def _on_prediction_error(self, error: Exception) -> None:
        self._job_ended()
        self.status_label.setText(f"Pre-segmentation failed: {error}")
        self.prediction_failed.emit(str(error))
        self._follow_chosen_image_soon()

    def _follow_chosen_image_soon(self) -> None:
        """A run that ended without a result: the image chosen meanwhile is followed now (the panel
        stayed on the image of the run, with the box showing another, or showing none once the run's
        image was closed: its labels must then be set aside like any closed image's)."""
        closed = self._followed is not None and not self._in_viewer(self._followed)
        if self.out_of_step() or closed:
            QTimer.singleShot(0, self._follow_chosen_image)

    def _on_prediction(self, image_layer: Any, result: PredictionResult | None, model: Any = None) -> None:
        painting = result is not None and stroke_in_progress(find_labels_layer(self.viewer, image_layer))
        if painting:  # written now, the result took the stroke's first voxels: it lands when it ends
            job = self.job
            self._waiting_result = True  # still running for the panel: no switch, no second run
            self.status_label.setText("Pre-segmented: the result is shown when your stroke ends.")

            def later() -> None:
                if qt_object_deleted(self):  # the panel closed meanwhile: nothing to land in
                    return
                self._waiting_result = False
                cancelled = job is not None and job.cancel_requested.is_set()
                self._on_prediction(image_layer, None if cancelled else result, model)

            QTimer.singleShot(STROKE_WAIT_MS, later)
            return
        self._job_ended()
        if result is None:
            self.status_label.setText("Cancelled: nothing was written.")
            self.prediction_finished.emit(None)
            self._follow_chosen_image_soon()
            return
        if not self._in_viewer(image_layer):
            # removed while it ran: nothing to show it on (and the image box no longer offers it)
            closed = f"{image_layer.name} was closed during its pre-segmentation: nothing shown."
            self.status_label.setText(closed)
            self.prediction_finished.emit(None)
            QTimer.singleShot(0, self._follow_chosen_image)  # let go of it; an image added back is followed
            return
        chosen_meanwhile = None
        if not same_layer(self.image_choice.value, image_layer):  # another image chosen meanwhile:
            chosen_meanwhile = self.image_choice.value  # taken up once this result is shown and saved
            with self.image_choice.changed.blocked():  # the panel shows, and saves, this one's review
                self.image_choice.value = image_layer
        prediction = result.prediction
        # another model that numbers the organs otherwise: the labels before it are in other ids
        numbered_otherwise = bool(self.class_names) and self.class_names != list(prediction.class_names)
        # a review replaced (the user agreed): an undo would bring back its labels without their marks
        review_replaced = self._replacing_review(image_layer) is not None
        keep = self._voxels_to_keep(image_layer)
        # the kept voxels in the new model's ids, where it numbers the organs otherwise
        kept_labels = kept_baseline = None
        if (
            keep is not None
            and self.tracks_image(image_layer)
            and self.class_names != list(prediction.class_names)
        ):
            try:
                kept_labels = kept_in_new_classes(
                    np.asarray(self.labels_layer.data), keep, self.class_names, list(prediction.class_names)
                )
                # what the program last wrote there, in the new ids too: else a stroke that now has
                # its old baseline's number dropped out of the edits, and accepts became edits
                if self.tracker is not None and self.tracker.shape == keep.shape:
                    kept_baseline = kept_in_new_classes(
                        self.tracker.baseline,
                        keep,
                        self.class_names,
                        list(prediction.class_names),
                        strict=False,
                    )
            except ClassTableError as error:
                self.status_label.setText(
                    breakable(
                        f"Not written: {error}. Re-run with '{REPLACE_ALL}', or with the model your labels "
                        "were drawn with."
                    )
                )
                self.prediction_finished.emit(None)
                return
        # the colours of the model that made it (another model chosen meanwhile may name other organs)
        self.class_names = list(prediction.class_names)
        self.class_colors = self._model_colours(self.class_names, model, self.checkpoint)
        self.prediction_id = uuid.uuid4().hex
        # what the user reviewed so far stays reviewed; a re-run never marks anything new
        reviewed = self.review_mask() if keep is not None and self.tracks_image(image_layer) else None
        # this sitting's strokes stay in the tracker (undoable), the rest of the marks in the state
        tracked = self.tracker if reviewed is not None and self.tracker.shape == reviewed.shape else None
        if tracked is not None:
            reviewed = np.array(self.review.state.review_mask, dtype=np.uint8)
        # so do the queue's accepts, skips and position, unless the user asked to replace everything
        continuing = not self.replace_button.isChecked() and self.tracks_image(image_layer)
        previous = (self.review.state, self.review.component_map) if continuing else None
        # a labels layer removed from the viewer still holds the work the re-run must keep
        removed = reviewed is not None and not self._in_viewer(self.labels_layer)
        carried = np.array(self.labels_layer.data) if removed else None
        labels = self._adopt_labels_layer(image_layer)
        with muted_edit_tracking(self._edit_flags):
            if labels is None:
                labels = self._adopt_labels_layer(image_layer, create=True)
                if carried is not None and carried.shape == labels.data.shape:
                    labels.data = carried
            if kept_labels is not None:  # one undo step: the prediction and the kept voxels renumbered
                written = write_labels_undoable(labels, np.where(keep, kept_labels, prediction.labels.array))
            else:
                written = write_labels_undoable(labels, prediction.labels.array, keep=keep)
        if numbered_otherwise or review_replaced:  # an undo back past it would show the old ids under
            forget_history(labels)  # the new names, or the user's strokes as the model's
        if tracked is not None:
            self.tracker = tracked.continued(np.asarray(labels.data), keep, kept_baseline)
        else:
            self.tracker = EditTracker(np.asarray(labels.data))  # earlier edits are kept in `reviewed`
        self.prediction_labels = np.asarray(prediction.labels.array)
        map_data = map_layer_data(
            image_layer,
            prediction.specialist_maps,
            prediction.disagreement,
            self.class_names,
            self.class_colors,
        )
        maps = show_map_layers(self.viewer, map_data)
        focus_name = focus_layer_name(image_layer)
        focus = self.viewer.layers[focus_name] if focus_name in self.viewer.layers else None  # noqa: SIM401
        stack_in_reading_order(self.viewer, image_layer, maps, [labels, focus])
        state = ReviewState(result.regions, shape=image_layer.data.shape, review_mask=reviewed)
        if previous is not None:
            state = carry_over(*previous, result.regions, result.component_map, state.review_mask)
        self.review.start(image_layer, state, result.component_map, result.profile, self.class_names)
        self.likely_wrong.show_estimate(prediction.errors, self.class_names)
        self.viewer.layers.selection.active = labels
        self.display.apply()
        self.autosave.save_prediction(
            {
                "prediction_id": self.prediction_id,
                "image_fingerprint": self._fingerprint,
                "labels": self.prediction_labels,
                "specialist_maps": {name: v.array for name, v in prediction.specialist_maps.items()},
                "disagreement": None if prediction.disagreement is None else prediction.disagreement.array,
                "class_names": self.class_names,
                "class_colors": self.class_colors,
            }
        )
        self.status_label.setText(
            f"Pre-segmented {image_layer.name} in {prediction.seconds:.1f} s: {written} voxels changed"
            f"{'' if keep is None else ' (your edits kept)'}"
            f"{'' if kept_labels is None else ', renumbered to its organs'}, "
            f"{len(result.regions)} uncertain regions. "
            + (
                "Another model's organ numbers: Ctrl+Z cannot go back past this run."
                if numbered_otherwise
                else "Your earlier review was replaced: Ctrl+Z cannot go back past this run."
                if review_replaced
                else "Ctrl+Z in the labels layer undoes it."
            )
        )
        self._show_scope(result.scope_warnings)
        self.autosave.mark_changed()
        self.autosave.save_now()
        self._watch_window()
        self.prediction_finished.emit(result)
        if chosen_meanwhile is not None:
            # the box went back to this image for its result; the image chosen during the run (Open
            # next, the Image box) stayed unchosen and unsegmented while the list said it was opened
            QTimer.singleShot(0, lambda: self._take_up_choice(chosen_meanwhile, image_layer.name))

    def _take_up_choice(self, chosen: Any, done: str) -> None:
        if not self._in_viewer(chosen) or self.running():
            return
        self.select_image(chosen)
        if same_layer(self._followed, chosen):
            self.status_label.setText(
                breakable(
                    f"Pre-segmented {done} (its review is saved). Now on {chosen.name}, chosen during the "
                    f"run: {self.status_label.text()}"
                )
            )

    def _follow_chosen_image(self) -> None:
        """Follow the image in the box once the run has ended (the choice waited for it)."""
        if self.running():
            QTimer.singleShot(50, self._follow_chosen_image)
            return
        self.image_choice.changed.emit(self.image_choice.value)  # the panel and its sections follow it

    def _in_viewer(self, layer: Any) -> bool:
        return shown_as(self.viewer, layer) is not None

    def _show_scope(self, warnings: list[str]) -> None:
        """A scan far from what the model learnt from: say so before its results are trusted."""
        self.scope_label.setVisible(bool(warnings))
        self.scope_label.setText("⚠ " + "\n⚠ ".join(warnings))
        if warnings:
            show_warning(f"{self.image_layer.name if self.image_layer else 'This scan'}: {warnings[0]}")

    def _voxels_to_keep(self, image_layer: Any) -> np.ndarray | None:
        """The voxels a re-run must not change: reviewed/edited ones, in fill-untouched mode only.

        Also when the image's labels layer was removed from the viewer while the panel follows its
        review: the panel still holds that layer and its review mask, and a re-run wiped the user's
        strokes and accepts without a word."""
        if self.replace_button.isChecked():
            return None
        existing = find_labels_layer(self.viewer, image_layer)
        if self.tracks_image(image_layer) and (existing is None or same_layer(existing, self.labels_layer)):
            touched = self.review_mask()
            return touched > 0 if touched is not None and touched.any() else None
        return None if existing is None else untracked_touched(existing)

    def tracks_image(self, image_layer: Any) -> bool:
        """Whether the panel follows the review and edits of this image's labels layer."""
        return (
            self.review.state is not None
            and self.tracker is not None
            and self.labels_layer is not None
            and same_layer(self.review.image_layer, image_layer)
        )

    def review_mask(self) -> np.ndarray | None:
        """The review mask of the image under review: 2 = edited by you, 1 = accepted, 0 = not reviewed."""
        state, labels = self.review.state, self.labels_layer
        if state is None or labels is None or self.tracker is None:
            return None
        data = np.asarray(labels.data)
        if data.shape != self.tracker.shape:
            return None
        return combined_review_mask(state.review_mask, self.tracker.edited(data))

    def _adopt_labels_layer(self, image_layer: Any, create: bool = False) -> Any | None:
        """The labels layer of this image (created when ``create``), with edit tracking connected."""
        layer = find_labels_layer(self.viewer, image_layer)
        if layer is None and not create:
            return None
        layer = ensure_labels_layer(self.viewer, image_layer, self.class_names, self.class_colors)
        if not same_layer(layer, self.labels_layer):
            if self.labels_layer is not None:
                self.labels_layer.events.paint.disconnect(self._on_paint)
            layer.events.paint.connect(self._on_paint)
            self._watch_history(layer)
            self.labels_layer, self.tracker = layer, None
        return layer

    def _watch_history(self, layer: Any) -> None:
        """napari's undo and redo rewrite the labels without a paint event: without this the
        session kept an undone stroke, and a restore brought it back."""
        target = unproxied(layer)
        for name in ("undo", "redo"):
            replay = getattr(type(target), name)

            def replayed(replay=replay, target=target) -> None:
                replay(target)
                if same_layer(target, self.labels_layer):
                    self.autosave.mark_changed()
                    self.stroke_timer.start()

            setattr(target, name, replayed)

    def _watch_paint(self, event) -> None:
        layer = getattr(event, "value", None)
        if isinstance(layer, Labels) and id(layer) not in self._paint_watched:
            self._paint_watched.add(id(layer))
            layer.events.paint.connect(self._on_any_paint)

    def _on_other_image_closed(self, event) -> None:
        """An image closed that the panel was not following (another one was chosen since). Its
        layers stayed, its labels editable: strokes there went into no session (the image is gone,
        so painting could not make the panel follow it), and its session came back beside them as
        "… labels [1]" when the file was opened again. As for the followed image: saved by this
        panel, its layers go (the session gives them back); otherwise its labels are set aside."""
        image = getattr(event, "value", None)
        if (
            self._setting_aside
            or not isinstance(image, Image)
            or (image.metadata or {}).get(KIND_KEY) in DERIVED_KINDS
            or same_layer(image, self._followed)
            or same_layer(image, self._set_aside_image)
        ):
            return
        made = layers_made_for(self.viewer, image)
        labels = [layer for layer in made if isinstance(layer, Labels) and not imported_layer_edited(layer)]
        if not labels:
            return
        written = [
            path
            for path, owner in list(self.autosave.layer_of.items())  # the writer thread adds to it
            if owner == image.unique_id and path.is_file()
        ]
        if written:
            said = self._remove_saved_layers(image, made, written[-1])
        else:
            for layer in labels:
                set_aside_labels(layer)
            kept = ", ".join(f"“{layer.name}”" for layer in labels)
            said = (
                f"{image.name} was closed and its review was never saved: {kept} holds it; "
                "it cannot be painted."
            )
        self.status_label.setText(breakable(said))

    def _unwatch_paint(self, event) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and id(layer) in self._paint_watched:  # its id may be a new layer's later
            self._paint_watched.discard(id(layer))
            layer.events.paint.disconnect(self._on_any_paint)

    def _on_any_paint(self, event) -> None:
        """A stroke on the labels of an image other than the followed one: follow that image (its
        session, restored with these labels kept, then holds the stroke)."""
        source = event.source
        if self._edit_flags["writing"] or same_layer(source, self.labels_layer):
            return
        owner = next(
            (
                image
                for image in self._source_images()
                if same_layer(find_labels_layer(self.viewer, image), source)
            ),
            None,
        )
        if owner is None:
            return
        if same_layer(owner, self._followed):
            if not self.tracks_image(owner):  # its session is another layer's work (the same file twice)
                self._show_session(
                    f"These strokes on {source.name} are in no session: its session file holds other "
                    "labels (click Restore session to load them, which replaces these; Ctrl+Z brings "
                    "them back), or export these labels to keep them.",
                    str(self.autosave.path or ""),
                )
            return
        if self.running() or self.correct_section.worker is not None:
            what = "pre-segmentation" if self.running() else "correction"
            self.status_label.setText(
                breakable(
                    f"You painted on {source.name}, but the panel follows "
                    f"{getattr(self._followed, 'name', 'another image')} until its "
                    f"{what} ends: choose {owner.name} then, or these strokes are not saved."
                )
            )
            return
        QTimer.singleShot(0, lambda: self._follow_painted(owner, source.name))

    def _follow_painted(self, image_layer: Any, labels_name: str) -> None:
        busy = self.running() or self.correct_section.worker is not None
        if not self._in_viewer(image_layer) or same_layer(image_layer, self._followed) or busy:
            return
        self.select_image(image_layer)
        if self.tracks_image(image_layer):
            text = (
                f"Now following {image_layer.name}: you painted on {labels_name}, so its strokes "
                "are saved in its session."
            )
        else:  # no review of it to follow (never pre-segmented, or its session is another window's)
            text = (
                f"You painted on {labels_name}, whose image has no review the panel can follow: "
                "pre-segment it (your strokes are kept), or export the labels to keep them."
            )
        self.status_label.setText(breakable(text))

    def _on_paint(self, event) -> None:
        if (
            self._edit_flags["writing"]
            or self.tracker is None
            or not same_layer(event.source, self.labels_layer)
        ):
            return
        for where, values in painted_parts(event.value):
            self.tracker.touch(where, values)
        self.autosave.mark_changed()
        self.stroke_timer.start()  # saved shortly after the last stroke

    # ================================================================= export
    def export(self, path: str | Path | None = None) -> list[Path]:
        """Write the labels layer and its class table; [] when cancelled or refused.

        What happened is said in the Save section, where the user clicked, and the folder is
        remembered for the next export's dialog.
        """
        layer = self.labels_layer if self.labels_layer in self.viewer.layers else None
        if layer is None:
            self._show_export("Nothing to export yet: pre-segment (or restore a session) first.")
            return []
        if path is None:
            path = choose_export_path(self, self._export_suggestion())
            if path is None:
                return []
        problem = output_name_problem(path)
        if problem:  # before any question about replacing files: it could not be written anyway
            self._show_export(f"Not exported: {Path(path).name}: {problem}.")
            return []
        targets = export_targets(path)
        clash = open_source_clash(targets, list(self.viewer.layers))
        if clash is not None:
            self._show_export(f"Not exported: {clash}.")
            return []
        existing = [target for target in targets if target.exists()]
        if existing and not dialogs.confirm_replace(self, existing[0]):
            self._show_export(f"Not exported: {existing[0].name} exists and was kept.")
            return []
        image = image_of_labels(self.viewer, layer)
        image = self.image_layer if image is None else image
        try:
            written = export_labels(
                layer,
                path,
                self.class_names,
                self.class_colors,
                overwrite=bool(existing),
                made_on=series_made_on(image),
                image_layer=image,
            )
        except CGSError as error:
            self._show_export(f"Export failed: {error}")
            return []
        self._export_folder = written[0].parent
        moved = moved_off_image(layer, image)
        note = ""
        if moved:
            where = f"written on {image.name}'s grid as read from its file"
            note = f" {moved[0].upper()}{moved[1:]} in the viewer: {where}."
        self._show_export(
            f"Exported {written[0].name} and its class table {written[1].name} to {written[0].parent}.{note}",
            str(written[0]),
        )
        self.autosave.save_now()
        self.exported.emit(written)
        return written

    def _show_export(self, text: str, detail: str = "") -> None:
        self.export_status.setText(breakable(text))
        self.export_status.setToolTip(detail or "What the last export did.")
        self.export_status.setVisible(True)

    def _export_suggestion(self) -> Path:
        """Beside the source image, in its own file format (NIfTI for DICOM folders and unsaved images).

        A folder the user cannot write to (a read-only archive, a CD) is never proposed: then the
        folder of the last export, else the home folder.
        """
        source = (self.image_layer.metadata or {}).get(SOURCE_KEY) if self.image_layer is not None else None
        extension = (extension_of(source) if source else None) or ".nii.gz"
        name = f"{self.labels_layer.name.replace(' ', '_')}{extension}"
        candidates = [Path(source).parent] if source else []
        candidates += [folder for folder in (self._export_folder,) if folder is not None]
        folder = next((c for c in candidates if writable_folder(c)), Path.home())
        return folder / name

    # ================================================================= session
    def _session_snapshot(self) -> dict[str, Any] | None:
        state, image = self.review.state, self.review.image_layer
        # A labels layer the user just closed is still saved: its data is what they last saw.
        mask = self.review_mask()
        if state is None or mask is None:
            return None
        saved_state = ReviewState(
            state.regions, review_mask=mask, status=state.status, position=state.position
        )
        return {
            "labels": np.array(self.labels_layer.data, copy=True),
            "review_state": saved_state,
            "image_fingerprint": self._fingerprint,
            "geometry": read_geometry(image),
            "class_names": self.class_names,
            "component_map": self.review.component_map,
            "class_colors": self.class_colors,
            "prediction_id": self.prediction_id,
        }

    def _offer_session(self, image_layer: Any) -> None:
        session = find_session(image_layer)
        if session is None:
            return
        self.restore_button.setEnabled(True)
        existing = find_labels_layer(self.viewer, image_layer)
        # Its labels still on screen as saved (the image chosen again after another): followed again
        # at once. Left unfollowed, they stayed editable and the strokes went into no session.
        if existing is None or np.array_equal(np.asarray(existing.data), session.labels):
            self.restore_session()
        elif np.shape(existing.data) == session.labels.shape and self.autosave.last_written_for(
            session, image_layer
        ):
            # its labels on screen hold strokes the session does not (painted while another image was
            # followed): its review comes back with the labels as they are, the strokes counted as yours
            self.restore_session(keep_labels_on_screen=True)
        else:
            self._show_session(
                f"A saved session from {local_time(session.saved)} exists for this image: "
                "click Restore session to load it.",
                str(session.path),
            )

    def restore_session(self, keep_labels_on_screen: bool = False) -> str | None:
        """Load this image's saved labels, maps and queue; returns the session path, None if there is none.

        ``keep_labels_on_screen``: the review, maps and queue only; the image's labels layer keeps
        what it holds, its differences from the saved labels counted as your edits (and saved).

        Gives back what the user left: the labels in the colours they were drawn in, the specialist
        and disagreement maps with the slice profile, the queue's decisions and position, and the
        labels layer as the active layer (the brush paints at once).
        """
        busy = self.running()
        if busy or self.out_of_step():
            # it loaded the chosen image's session into a panel still following the running image,
            # which then saved the run's image under that session file and lost it
            self.status_label.setText(
                breakable("Wait for the pre-segmentation to end (or cancel it) before restoring a session.")
            )
            return None
        image_layer = self.image_layer
        into_shown_labels = (
            image_layer is not None and find_labels_layer(self.viewer, image_layer) is not None
        )
        if self.correct_section.worker is not None and into_shown_labels:
            # the running correction's result would land on the labels restored into that layer
            self.status_label.setText(
                breakable("Wait for the correction to finish before restoring a session.")
            )
            return None
        session = None if image_layer is None else find_session(image_layer)
        if session is None:
            self._show_session("No saved session for this image.")
            return None
        self.class_names = list(session.class_names)
        self.class_colors = self._colours_of(session)
        saved, no_maps = saved_prediction_of(session)
        self.prediction_id = session.prediction_id if saved is not None else ""
        with muted_edit_tracking(self._edit_flags):
            labels = self._adopt_labels_layer(image_layer, create=True)
            kept = (
                keep_labels_on_screen and into_shown_labels and np.shape(labels.data) == session.labels.shape
            )
            replaced = not kept and write_labels_undoable(labels, session.labels) and into_shown_labels
        if not replaced and not kept:  # into new (or identical) labels, a restore starts the undo history:
            forget_history(labels)  # one Ctrl+Z too many emptied the layer over the saved review
        # (labels on screen that the restore replaced stay one Ctrl+Z away)
        self.tracker = EditTracker(session.labels if kept else np.asarray(labels.data))  # earlier edits:
        if kept:  # in the review state; the strokes the session lacks are yours, and saved now
            self.tracker.touched = np.asarray(labels.data) != session.labels
            self.autosave.mark_changed()
            self.stroke_timer.start()
        else:  # its labels are now the file's: later saves replace this write of it, nobody else's
            self.autosave.read(session)
            self.autosave.path = session.path
        self.prediction_labels = None if saved is None else saved.labels
        profile = self._show_saved_maps(image_layer, labels, saved)
        self.review.start(image_layer, session.review_state, session.component_map, profile, self.class_names)
        self.display.apply()
        self._activate_labels(labels)
        if self.isVisible():
            QTimer.singleShot(0, self.review.show_current)  # the canvas may have changed size
        else:  # restored while the panel is being docked: frame the region once the canvas has its size
            self._frame_when_shown = True
        when = local_time(session.saved)
        counts = session.review_state.counts()
        self.status_label.setText(
            breakable(
                f"Restored your review of {image_layer.name} from {when}: {counts['accepted']} accepted, "
                f"{counts['skipped']} skipped, {counts['pending']} to review"
                + (f" (no maps: {no_maps}; pre-segment again to see them)." if saved is None else ".")
                + (" It replaced the labels on screen: Ctrl+Z brings them back." if replaced else "")
            )
        )
        self._show_session(f"Restored the session saved {when} ({session.path.name}).", str(session.path))
        self._watch_window()
        self.session_restored.emit(str(session.path))
        return str(session.path)

    def _activate_labels(self, labels: Any) -> None:
        """Make ``labels`` the active layer, now and once more after the event being handled: a restore
        runs while napari inserts the image, and napari then makes the inserted image active."""
        self.viewer.layers.selection.active = labels

        def again() -> None:
            if labels in self.viewer.layers:
                self.viewer.layers.selection.active = labels

        QTimer.singleShot(0, again)

    def _colours_of(self, session: Any) -> list[list[int]]:
        """The session's own colours; for sessions saved without them, the model's when its classes match."""
        if session.class_colors:
            return [list(c) for c in session.class_colors]
        return self._model_colours(session.class_names, self.checkpoint)

    @staticmethod
    def _model_colours(class_names: list[str], *models: Any) -> list[list[int]]:
        """The colours of the first model whose classes are ``class_names``; [] (the default
        palette) when none is."""
        for model in models:
            if model is not None and list(model.class_names) == list(class_names):
                return [list(c) for c in model.class_colors]
        return []

    def _show_saved_maps(self, image_layer: Any, labels: Any, saved: Any) -> np.ndarray | None:
        """The saved prediction's map layers, stacked as after a pre-segmentation; the slice profile."""
        if saved is None:
            return None
        geometry = layer_geometry(image_layer)
        specialist = {name: Volume(array, geometry, "map") for name, array in saved.specialist_maps.items()}
        disagreement = None if saved.disagreement is None else Volume(saved.disagreement, geometry, "map")
        map_data = map_layer_data(image_layer, specialist, disagreement, self.class_names, self.class_colors)
        maps = show_map_layers(self.viewer, map_data)
        focus_name = focus_layer_name(image_layer)
        focus = self.viewer.layers[focus_name] if focus_name in self.viewer.layers else None  # noqa: SIM401
        stack_in_reading_order(self.viewer, image_layer, maps, [labels, focus])
        return None if saved.disagreement is None else slice_profile(saved.disagreement)

    def _show_saved(self, path: str) -> None:
        if is_conflict_file(path):  # the usual file is another window's: say where this work goes
            self._show_session(
                f"Session autosaved at {time.strftime('%H:%M:%S')} to {Path(path).name}: another "
                "window saved this image's usual session file meanwhile, so it was not overwritten.",
                path,
            )
            return
        self._show_session(f"Session autosaved at {time.strftime('%H:%M:%S')} (hover for the file).", path)

    def _show_session(self, text: str, detail: str = "") -> None:
        """Short text in the panel (long file names wrap anywhere), the full path in its tooltip."""
        if qt_object_deleted(self.session_label):
            return  # the last autosave, written (or failed) while napari closed the panel
        self.session_label.setText(breakable(text))
        self.session_label.setToolTip(detail or "Where the review session of this image is saved.")

    # ================================================================= teardown
    def showEvent(self, event) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        self._watch_window()
        if self._frame_when_shown:
            self._frame_when_shown = False
            QTimer.singleShot(0, self.review.show_current)

    def _watch_window(self) -> None:
        """Watch the window the panel is docked in: closing it must not lose unsaved paint.

        Called when shown and whenever there is something to save, because a viewer built
        without showing its window never shows the panel either. Qt installs a filter once
        however often it is asked; no reference to the window is kept (it would keep napari's
        viewer alive after the window closed).
        """
        window = self.window()
        if window is not self:
            window.installEventFilter(self)  # napari's Quit closes this window too

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.Close and watched is self.window():
            self.autosave.save_if_changed(wait=True)
        return False

    def event(self, event) -> bool:  # noqa: N802 (Qt override)
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif getattr(self, "_docked", False):  # (events come during __init__ too)
                # the dock's X: napari takes the panel out of its dock (setParent(None)) and never
                # closes it, so a hidden panel went on saving this image's session beside a new one
                # opened from the Plugins menu, and the review was split across two files
                self.shutdown()
        return super().event(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop every job, save, and let go of the viewer: the window or the dock closes."""
        if self._shut_down:
            return
        self._shut_down = True
        self.stroke_timer.stop()
        self.cancel()
        self.correct_section.prompt_tools.cancel_adapting()
        self.retrain_section.shutdown()
        self.worklist_section.shutdown()
        self.autosave.save_if_changed(wait=True)
        self.autosave.stop()
        self.review.disconnect_viewer()
        self.correct_section.unbind_keys()
        self.display.unbind_keys()
        for emitter in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            emitter.disconnect(self._refresh_images)
        self.viewer.layers.events.renamed.disconnect(self._on_layer_renamed)
        self.viewer.layers.events.inserted.disconnect(self._watch_paint)
        self.viewer.layers.events.removed.disconnect(self._unwatch_paint)
        self.viewer.layers.events.removed.disconnect(self._on_other_image_closed)
        for layer in list(self.viewer.layers):
            if id(layer) in self._paint_watched:
                layer.events.paint.disconnect(self._on_any_paint)
        self._paint_watched.clear()
        if self.labels_layer is not None:
            self.labels_layer.events.paint.disconnect(self._on_paint)
        self.window().removeEventFilter(self)
