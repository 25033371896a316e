"""The panel's radiotherapy DICOM section: RTSTRUCT / SEG export of the labels of an image that
came from a DICOM series, and an RTSTRUCT opened onto that series as a Labels layer.

Every computation is an engine call (``cgs_engine.dicom``) in a napari thread worker; this
module only gathers the image, its labels and the model's class table, and shows the outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from cgs_engine.classes.table import ClassTable, checkpoint_class_table, derive_class_table
from cgs_engine.dicom import export_rtstruct, export_seg, import_rtstruct, read_series
from cgs_engine.volume import Volume
from napari_cgs._layers import SOURCE_KEY, labels_kwargs_like, shown_as
from napari_cgs.panel import dialogs
from napari_cgs.panel.prediction_layers import (
    IMPORTED_DIGEST_KEY,
    SEPARATOR,
    find_labels_layer,
    imported_layer_edited,
    labels_digest,
    labels_geometry,
    moved_off_image,
    style_labels_layer,
)
from napari_cgs.panel.section import WorkerSection

NOT_DICOM = "Open a DICOM series folder as the image to export RTSTRUCT / SEG or open an RTSTRUCT."
NO_LABELS = "Pre-segment (or restore a session) first: there are no labels to export."


# Module-level so that tests can replace the dialogs.
def choose_save_path(parent: Any, title: str, suggestion: Path) -> str | None:
    path, _ = QFileDialog.getSaveFileName(
        parent, title, str(suggestion), "DICOM (*.dcm)", options=QFileDialog.Option.DontConfirmOverwrite
    )
    return path or None


def choose_rtstruct_path(parent: Any, folder: Path) -> str | None:
    path, _ = QFileDialog.getOpenFileName(
        parent, "Open an RTSTRUCT", str(folder), "DICOM (*.dcm);;All files (*)"
    )
    return path or None


def dicom_folder(image_layer: Any | None) -> Path | None:
    """The series folder an Image layer was read from, None for files and unsaved images."""
    source = None if image_layer is None else (image_layer.metadata or {}).get(SOURCE_KEY)
    return Path(source) if source and Path(source).is_dir() else None


def rtstruct_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}RTSTRUCT"


# ------------------------------------------------------------------ what the workers run (engine calls)
def export_job(kind: str, labels: Volume, folder: Path, table: ClassTable, path: Path, overwrite: bool):
    series = read_series(folder)
    if kind == "RTSTRUCT":
        return export_rtstruct(labels, series, table, path, overwrite=overwrite)
    return export_seg(labels, series, table, path, kind, overwrite=overwrite)


def import_job(path: Path, folder: Path, table: ClassTable):
    return import_rtstruct(path, read_series(folder), table)


class DicomSection(WorkerSection):
    """Signals: ``exported(str)`` (the file written), ``imported(object)`` (the new Labels layer),
    ``failed(str)`` (the one-line reason)."""

    exported = Signal(str)
    imported = Signal(object)
    BUSY = "Busy with the previous DICOM file; wait for it to finish."

    def __init__(
        self,
        viewer: Any,
        image_layer: Callable[[], Any | None],
        class_table: Callable[[], ClassTable | None],
        parent: Any | None = None,
    ) -> None:
        super().__init__("7 · Radiotherapy DICOM", parent)
        self.viewer, self._image_layer, self._class_table = viewer, image_layer, class_table
        self._status_for: Any = None  # the layer id of the image the status line speaks of
        self.rtstruct_button = self._button(
            "Export RTSTRUCT…",
            "Write the labels as a DICOM RT Structure Set on the image's series: one ROI per organ "
            "with its TG-263 name, SNOMED CT code and colour.",
            lambda: self.export("RTSTRUCT"),
        )
        self.seg_button = self._button(
            "Export SEG…",
            "Write the labels as a DICOM Segmentation (BINARY) referencing the image's series.",
            lambda: self.export("BINARY"),
        )
        self.open_button = self._button(
            "Open RTSTRUCT…",
            "Show the contours of an RT Structure Set drawn on this series as a Labels layer "
            "(ROIs matched to the model's organs by name or code).",
            self.open_rtstruct,
        )
        self.status = QLabel(NOT_DICOM)
        self.status.setWordWrap(True)
        self.status.setToolTip("What the DICOM section did last.")
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.rtstruct_button)
        row.addWidget(self.seg_button)
        layout.addLayout(row)
        layout.addWidget(self.open_button)
        layout.addWidget(self.status)
        self.refresh()

    @classmethod
    def for_panel(cls, panel: Any) -> DicomSection:
        """The section of a CGSPanel: its selected image, labels and model's class table."""

        def class_table() -> ClassTable | None:
            names, checkpoint = list(panel.class_names), panel.checkpoint
            if checkpoint is not None and (not names or names == list(checkpoint.class_names)):
                return checkpoint_class_table(checkpoint)
            colours = checkpoint.class_colors if checkpoint is not None else None
            return derive_class_table(names, colours) if len(names) > 1 else None

        section = cls(panel.viewer, lambda: panel.image_layer, class_table)
        panel.image_choice.changed.connect(lambda *_: section.refresh())
        panel.prediction_finished.connect(lambda *_: section.refresh())
        panel.session_restored.connect(lambda *_: section.refresh())
        return section

    def _button(self, text: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.clicked.connect(lambda: slot())
        return button

    # ------------------------------------------------------------------ state
    def refresh(self) -> None:
        folder = dicom_folder(self._image_layer())
        busy = self.worker is not None
        for button in (self.rtstruct_button, self.seg_button, self.open_button):
            button.setEnabled(folder is not None and not busy)
        image = self._image_layer()
        shown_for = getattr(image, "unique_id", None)
        if folder is None:
            self.status.setText(NOT_DICOM)
        elif not busy and (self.status.text() == NOT_DICOM or shown_for != self._status_for):
            # another image: the last export's "Wrote SEG …" was about the one before, and made the
            # image now chosen look exported
            self.status.setText(f"DICOM series: {folder.name}")
            self.status.setToolTip(str(folder))
        if not busy:
            self._status_for = shown_for

    def _labels_layer(self, image_layer: Any) -> Any | None:
        return find_labels_layer(self.viewer, image_layer)

    # ------------------------------------------------------------------ export
    def export(self, kind: str = "RTSTRUCT", path: str | Path | None = None) -> Any | None:
        """Start an RTSTRUCT or SEG (``"BINARY"``/``"LABELMAP"``) export; the worker, or None."""
        image = self._image_layer()
        folder = dicom_folder(image)
        if folder is None:
            return self._report(NOT_DICOM)
        labels_layer = self._labels_layer(image)
        table = self._class_table()
        if labels_layer is None or table is None:
            return self._report(NO_LABELS)
        what = "RTSTRUCT" if kind == "RTSTRUCT" else "SEG"
        if path is None:
            path = choose_save_path(self, f"Export {what}", folder.parent / f"{folder.name}_{what}.dcm")
            if path is None:
                return None
        path = Path(path)
        overwrite = path.exists()
        if overwrite and not dialogs.confirm_replace(self, path):
            return self._report(f"Not exported: {path.name} exists and was kept.")
        # A copy: the export is of the labels as they were at the click, not a mix with strokes
        # painted while it is written.
        geometry = labels_geometry(labels_layer, image)  # the CT file's grid, as a NIfTI export writes it
        labels = Volume(np.array(labels_layer.data, copy=True), geometry, "labels", labels_layer.name)
        moved = moved_off_image(labels_layer, image)
        # said as the labels export says it: the contours go where the CT's file has them, not where
        # a layer dragged in the viewer showed them (a planner would otherwise not know)
        note = (
            f" {moved[0].upper()}{moved[1:]} in the viewer: written on the series' own grid." if moved else ""
        )
        return self._start(
            export_job,
            (kind, labels, folder, table, path, overwrite),
            f"Writing {what} {path.name}…",
            lambda result: self._exported(what, result, note),
        )

    def _exported(self, what: str, result: Any, note: str = "") -> None:
        parts = getattr(result, "rois", None) or getattr(result, "segments", [])
        empty = f"; no voxels: {', '.join(e.structure_name for e in result.empty)}" if result.empty else ""
        renamed = f" Renamed for DICOM: {' '.join(result.renamed)}" if result.renamed else ""
        self.status.setText(f"Wrote {what} {result.path.name}: {len(parts)} organs{empty}.{renamed}{note}")
        self.status.setToolTip(str(result.path))
        self.exported.emit(str(result.path))

    # ------------------------------------------------------------------ import
    def open_rtstruct(self, path: str | Path | None = None) -> Any | None:
        """Start reading an RTSTRUCT onto the selected series; the worker, or None."""
        image = self._image_layer()
        folder = dicom_folder(image)
        if folder is None:
            return self._report(NOT_DICOM)
        table = self._class_table()
        if table is None:
            return self._report("Choose a model first: its organs decide which ROIs are read.")
        if path is None:
            path = choose_rtstruct_path(self, folder)
            if path is None:
                return None
        return self._start(
            import_job,
            (Path(path), folder, table),
            f"Reading {Path(path).name}…",
            lambda result: self._imported(image, table, result),
        )

    def _imported(self, image: Any, table: ClassTable, result: Any) -> None:
        if shown_as(self.viewer, image) is None:
            self.status.setText(f"Not opened: {image.name} was closed while its RTSTRUCT was read.")
            return
        name = rtstruct_layer_name(image)
        kept = ""
        if name in self.viewer.layers:
            earlier = self.viewer.layers[name]
            if imported_layer_edited(earlier) is False:  # as the file filled it: read again
                self.viewer.layers.remove(name)
            else:  # the user's corrections of the contours: never dropped for a new reading
                earlier.name = f"{name} (edited)"
                kept = f" Your edits of the earlier one are kept as “{earlier.name}”."
        layer = self.viewer.add_labels(
            result.labels.array, opacity=0.5, **labels_kwargs_like(image, name=name)
        )
        layer.metadata[IMPORTED_DIGEST_KEY] = labels_digest(layer.data)
        count = max(table.ids) + 1
        names = ["background"] + [
            table.by_id(i).name if table.by_id(i) else f"class {i}" for i in range(1, count)
        ]
        colours = [[0, 0, 0]] + [
            list(table.by_id(i).color) if table.by_id(i) else [128] * 3 for i in range(1, count)
        ]
        style_labels_layer(layer, names, colours)
        left_out = (
            f"; left out (no organ of the model): {', '.join(result.unmatched)}" if result.unmatched else ""
        )
        warnings = "".join(f" Warning: {line}." for line in result.warnings)
        # which organ each ROI became, where its name is not the organ's own (the CLI prints it)
        mapped = [
            f"{roi.roi_name} → {roi.entry.name}" for roi in result.rois if roi.roi_name != roi.entry.name
        ]
        read_as = f" Read as: {', '.join(mapped)}." if mapped else ""
        self.status.setText(
            f"Opened {len(result.rois)} ROIs as layer “{name}”{left_out}.{read_as}{warnings}{kept}"
        )
        self.imported.emit(layer)
