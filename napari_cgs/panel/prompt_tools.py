"""Correct by pointing, in the Correct section: click, box and "Adapt to this scan".

*Click*: while on, a click on the viewer adds to the chosen organ where you click, Shift+click
removes (the labels layer pans instead of painting meanwhile). *Box*: draw a rectangle around
the organ in the prompt-box Shapes layer; the organ is re-segmented inside it and cleared outside
(over ``depth`` mm either side of the slice, or every slice). *Adapt to this scan*: fine-tunes a
copy of the model on the slices you corrected and re-predicts what you have not touched.

Every prompt is an engine call (``cgs_engine.edit``) in the section's worker and one Ctrl+Z.
Click and box changes are marked as yours (they are what you pointed at); the adapted
re-prediction is the model's, so it is written with edit tracking muted, like a pre-segmentation.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QDoubleSpinBox, QGridLayout, QLabel, QPushButton, QWidget

from cgs_engine.classes.table import derive_class_table
from cgs_engine.edit import box_from_drawing, box_prompt, click, why_click_does_nothing
from cgs_engine.edit.adapt import adapt_to_scan, trusted_voxels
from cgs_engine.infer import Cancelled
from napari_cgs._layers import layer_geometry
from napari_cgs.panel.prediction_layers import muted_edit_tracking, write_labels_undoable

BOX_LAYER_SUFFIX = " · prompt box"
POLL_MS = 200


# ------------------------------------------------------------------ what the workers run (engine calls)
def run_click(labels, class_id, point, positive, probability, spacing_zyx, image, locked, reach_mm):
    return click(
        labels,
        class_id,
        point,
        positive,
        probability,
        spacing_zyx,
        image=image,
        locked=locked,
        reach_mm=reach_mm,
    )


def run_box(labels, class_id, corners, spacing_zyx, slice_axis, depth_mm, probability, locked):
    box = box_from_drawing(corners, labels.shape, spacing_zyx, slice_axis, depth_mm)
    return box_prompt(labels, class_id, box, probability, locked=locked)


def run_adapt(checkpoint, image, labels, reviewed, keep, geometry, class_names, seconds, progress, cancel):
    trusted = trusted_voxels(labels, reviewed, geometry=geometry)
    class_table = derive_class_table(class_names) if class_names else None
    try:
        return adapt_to_scan(
            checkpoint,
            image,
            labels,
            trusted,
            keep=keep,
            seconds=seconds,
            progress=progress,
            cancel=cancel,
            geometry=geometry,
            class_table=class_table,
        )
    except Cancelled:
        return None


class PromptTools(QWidget):
    def __init__(self, section: Any) -> None:
        super().__init__(section)
        self.section, self.panel, self.viewer = section, section.panel, section.panel.viewer
        self._cancel = threading.Event()
        self._progress: tuple[str, int, int] | None = None
        self._build()
        self.poll = QTimer(self)
        self.poll.setInterval(POLL_MS)
        self.poll.timeout.connect(self._show_progress)

    def _build(self) -> None:
        self.click_button = self._button(
            "Click to correct", "While on: click adds to the organ there, Shift+click removes (3D).", True
        )
        self.click_button.toggled.connect(self.set_click_mode)
        self.reach_mm = self._spin(15.0, 2.0, 60.0, " mm", "How far along the organ a click acts.")
        self.box_button = self._button(
            "Draw box",
            "Draw a rectangle around the organ: it is re-segmented inside and cleared outside.",
            True,
        )
        self.box_button.toggled.connect(self.set_box_mode)
        self.depth_mm = self._spin(
            0.0, 0.0, 500.0, " mm", "Box depth either side of the slice (0: every slice)."
        )
        self.depth_mm.setSpecialValueText("all slices")
        self.adapt_button = self._button(
            "Adapt to this scan",
            "Fine-tune a copy of the model on the slices you corrected, then re-predict the voxels you "
            "have not touched (your voxels never change; the project's models are not touched).",
        )
        self.adapt_button.clicked.connect(lambda *_: self.adapt())
        self.cancel_button = self._button("Cancel", "Stop adapting; nothing changes.")
        self.cancel_button.clicked.connect(lambda *_: self._cancel.set())
        self.cancel_button.setEnabled(False)
        self.seconds = self._spin(60.0, 10.0, 600.0, " s", "Time budget of the adaptation (CPU).")
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.click_button, 0, 0)
        grid.addWidget(self.reach_mm, 0, 1)
        grid.addWidget(self.box_button, 1, 0)
        grid.addWidget(self.depth_mm, 1, 1)
        grid.addWidget(self.adapt_button, 2, 0)
        grid.addWidget(self.seconds, 2, 1)
        grid.addWidget(self.cancel_button, 3, 0)
        grid.addWidget(self.progress_label, 3, 1)

    def _button(self, text: str, tooltip: str, checkable: bool = False) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.setCheckable(checkable)
        return button

    def _spin(self, value, low, high, suffix, tooltip) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setDecimals(0 if suffix == " s" else 1)
        box.setValue(value)
        box.setSuffix(suffix)
        box.setToolTip(tooltip)
        return box

    def set_enabled(self, ready: bool, busy: bool) -> None:
        for button in (self.click_button, self.box_button, self.adapt_button):
            button.setEnabled(ready and not busy)
        self.cancel_button.setEnabled(busy and self.poll.isActive())

    # ------------------------------------------------------------------ what a prompt needs
    def _inputs(self) -> tuple | None:
        if self.section.out_of_step():
            return None
        layer, image, class_id = self.panel.labels_layer, self.panel.image_layer, self.section.organ()
        if layer is None or image is None or class_id is None:
            self.section._report("Pre-segment an image (or restore a session) before correcting it.")
            return None
        maps = self.section._maps()
        if maps is None or class_id not in maps:
            self.section._report("Prompts need the specialist maps of a pre-segmentation; run it first.")
            return None
        review = self.panel.review_mask()
        locked = None if review is None else review > 0
        spacing_zyx = tuple(layer_geometry(image).spacing[::-1])
        return layer, image, class_id, maps[class_id], locked, spacing_zyx

    # ------------------------------------------------------------------ click
    def set_click_mode(self, on: bool) -> None:
        callbacks = self.viewer.mouse_drag_callbacks
        if on:
            if self.box_button.isChecked():
                self.box_button.setChecked(False)
            if self._on_mouse not in callbacks:
                callbacks.append(self._on_mouse)
            if self.panel.labels_layer is not None:
                self.panel.labels_layer.mode = "pan_zoom"
        elif self._on_mouse in callbacks:
            callbacks.remove(self._on_mouse)

    def _on_mouse(self, viewer, event):
        """A press and release without moving is a click; a drag pans as usual."""
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        position, negative = tuple(event.position), "Shift" in {str(m) for m in event.modifiers}
        yield
        moved = False
        while event.type == "mouse_move":
            moved = True
            yield
        if not moved:
            self.click_at_world(position, positive=not negative)

    def click_at_world(self, position, positive: bool = True) -> Any | None:
        layer = self.panel.labels_layer
        if layer is None:
            return self.section._report("Pre-segment an image before clicking on it.")
        index = tuple(int(np.round(v)) for v in layer.world_to_data(position))
        return self.click_at(index, positive)

    def click_at(self, index: tuple[int, int, int], positive: bool = True) -> Any | None:
        """Run a click at voxel ``index`` of the labels (z, y, x); the worker, or None."""
        inputs = self._inputs()
        if inputs is None:
            return None
        layer, image, class_id, probability, locked, spacing_zyx = inputs
        if not all(0 <= i < n for i, n in zip(index, layer.data.shape, strict=True)):
            return self.section._report("The click lies outside the image.")
        name = self.section.organ_choice.currentText()
        what = f"{'Added to' if positive else 'Removed from'} {name} at {index}"
        reason = why_click_does_nothing(layer.data, class_id, index, positive, self.panel.class_names)
        if reason is not None:
            return self.section._report(f"Nothing changed: {reason}.")
        before = np.array(layer.data, copy=True)
        shown = self._shown_slice(before.shape, index[self._slice_axis()])  # as seen now, not at the result
        return self.section._start(
            run_click,
            (
                before,
                class_id,
                index,
                positive,
                probability,
                spacing_zyx,
                np.asarray(image.data),
                locked,
                self.reach_mm.value(),
            ),
            f"{what}…",
            self._landing(what, before, layer, shown),
        )

    def _landing(self, what: str, before: np.ndarray, layer: Any, shown: np.ndarray):
        """What writes a prompt's result: into the labels it read, only where they still hold what
        they held, the voxels on the prompted slice marked as yours."""

        def land(result) -> int:
            return self.section._write(
                what, result.labels, result.changed, unchanged_since=before, into=layer, shown=shown
            )

        return land

    def _slice_axis(self) -> int:
        """The array axis the 2D view steps through (0 in the 3D view)."""
        return int(self.viewer.dims.not_displayed[0]) if self.viewer.dims.ndisplay == 2 else 0

    def _shown_slice(self, shape: tuple[int, ...], position: int) -> np.ndarray:
        """The voxels of the slice a prompt was given on: what the user saw it do (in the 3D view
        none: a surface is no slice checked)."""
        axis = self._slice_axis()
        shown = np.zeros(shape, dtype=bool)
        if self.viewer.dims.ndisplay != 2:
            return shown
        where = [slice(None)] * len(shape)
        where[axis] = int(np.clip(position, 0, shape[axis] - 1))
        shown[tuple(where)] = True
        return shown

    # ------------------------------------------------------------------ box
    def box_layer(self) -> Any | None:
        image = self.panel.image_layer
        if image is None:
            return None
        name = f"{image.name}{BOX_LAYER_SUFFIX}"
        if name in self.viewer.layers:
            return self.viewer.layers[name]
        layer = self.viewer.add_shapes(
            name=name,
            ndim=3,
            edge_color="yellow",
            face_color="transparent",
            edge_width=1,
            **_transforms_of(image),
        )
        layer.events.data.connect(self._on_box_drawn)
        return layer

    def set_box_mode(self, on: bool) -> None:
        layer = self.box_layer() if on else None
        if on and layer is not None:
            if self.click_button.isChecked():
                self.click_button.setChecked(False)
            self.viewer.layers.selection.active = layer
            layer.mode = "add_rectangle"
        elif not on and self.panel.labels_layer is not None:
            self.viewer.layers.selection.active = self.panel.labels_layer

    def _on_box_drawn(self, event) -> None:
        action = getattr(event, "action", "added")
        layer = event.source
        if str(action) != "added" or len(layer.data) == 0:
            return
        self.box_at(np.asarray(layer.data[-1]))  # the layer keeps the rectangles drawn, as a record

    def box_at(self, corners) -> Any | None:
        """Run a box prompt on the rectangle ``corners`` (N x 3 voxel coordinates of the labels)."""
        inputs = self._inputs()
        if inputs is None:
            return None
        layer, _, class_id, probability, locked, spacing_zyx = inputs
        slice_axis = self._slice_axis()
        drawn_on = int(np.round(np.asarray(corners, dtype=float)[:, slice_axis].mean()))
        name = self.section.organ_choice.currentText()
        what = f"{name} re-segmented in the box"
        before = np.array(layer.data, copy=True)
        shown = self._shown_slice(before.shape, drawn_on)
        return self.section._start(
            run_box,
            (
                before,
                class_id,
                np.asarray(corners, dtype=float),
                spacing_zyx,
                slice_axis,
                self.depth_mm.value(),
                probability,
                locked,
            ),
            f"{what}…",
            self._landing(what, before, layer, shown),
        )

    # ------------------------------------------------------------------ adapt
    def adapt(self) -> Any | None:
        if self.section.out_of_step():
            return None
        layer, image, checkpoint = self.panel.labels_layer, self.panel.image_layer, self.panel.checkpoint
        if layer is None or image is None or checkpoint is None:
            return self.section._report("Pre-segment an image and correct a few slices before adapting.")
        review = self.panel.review_mask()
        if review is None or not review.any():
            return self.section._report("Correct (or accept) a few slices first: adapting learns from them.")
        keep = review > 0
        if self.panel.tracker is not None:  # voxels painted and undone again stay as they are too
            keep = keep | self.panel.tracker.touched
        self._cancel.clear()
        self._progress = None
        before = np.array(layer.data, copy=True)
        worker = self.section._start(
            run_adapt,
            (
                checkpoint,
                np.asarray(image.data),
                before,
                review,
                keep,
                layer_geometry(image),
                list(self.panel.class_names),
                self.seconds.value(),
                self._note_progress,
                self._cancel.is_set,
            ),
            "Adapting the model to this scan…",
            lambda result: self._adapted(result, layer, before),
        )
        if worker is not None:
            self.poll.start()
            self.cancel_button.setEnabled(True)
            worker.finished.connect(self._adapt_ended)
        return worker

    def cancel_adapting(self) -> None:
        """The panel is closing: a run would train on for its whole budget, its result thrown away."""
        self._cancel.set()

    def _note_progress(self, stage: str, done: int, total: int) -> None:
        self._progress = (stage, done, total)  # read by the GUI thread's timer

    def _show_progress(self) -> None:
        if self._progress is None:
            return
        stage, done, total = self._progress
        text = f"training step {done}" if stage == "training" else f"re-predicting slice {done} of {total}"
        self.progress_label.setText(f"Adapting: {text}")

    def _adapt_ended(self) -> None:
        self.poll.stop()
        self.cancel_button.setEnabled(False)
        self.progress_label.setText("")

    def _adapted(self, result, layer, before: np.ndarray) -> None:
        """Write the re-prediction into the labels it was made from, except where they changed
        during the run (strokes painted while it trained stay the user's)."""
        if result is None:
            self.section.status.setText("Adapting cancelled: nothing changed.")
            return
        what = "Adapted to this scan"
        if self.section.written_elsewhere(what, layer):
            return
        if self.section.after_stroke(layer, lambda: self._adapted(result, layer, before)):
            return
        keep = ~result.changed | (np.asarray(layer.data) != before)
        # what was reviewed while it ran: an accept changes no voxel, so the voxels accepted then
        # were re-predicted and still said "accepted", labels the user never saw, trained on as theirs
        review = self.panel.review_mask()
        if review is not None and review.shape == keep.shape:
            keep |= review > 0
        tracker = self.panel.tracker
        if tracker is not None and tracker.touched.shape == keep.shape:
            keep |= tracker.touched
        with muted_edit_tracking(self.panel._edit_flags):
            changed = write_labels_undoable(layer, result.labels, keep=keep)
        if changed:  # written untracked (the model's, not yours), so the autosave must be told
            self.panel.autosave.mark_changed()
            self.panel.autosave.save_now()
        # (with nothing changed no undo step was made: "Ctrl+Z undoes it" took back the stroke before)
        undo = "Ctrl+Z undoes it" if changed else "nothing to undo: Ctrl+Z would undo your previous edit"
        self.section.status.setText(
            f"Adapted to this scan ({result.steps} steps on {result.trained_slices} corrected slices, "
            f"{result.seconds:.0f} s): {changed:,} voxels re-predicted ({undo})."
        )
        self.section.edited.emit("Adapted to this scan", changed)


def _transforms_of(image: Any) -> dict[str, Any]:
    return {
        "scale": np.array(image.scale),
        "translate": np.array(image.translate),
        "rotate": np.array(image.rotate),
        "shear": np.array(image.shear),
        "affine": np.array(image.affine.affine_matrix),
    }
