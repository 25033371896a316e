"""The panel's correction section: organ picker with colours, segment-editor tools, the specialists'
version of a review region, window/level presets and the three standard views.

Every edit is an engine call (``cgs_engine.edit``, ``cgs_engine.review.alternative``) made in a
thread worker; its result is written to the labels layer as ONE undo step through the layer's own
``data_setitem``, so the panel's edit tracking marks exactly the changed voxels as edited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
)

from cgs_engine.edit.interpolate_process import shared_interpolation
from cgs_engine.edit.tools import EDIT_TOOLS, MARGIN, SIGMA, SMALLEST_ISLAND
from cgs_engine.errors import CGSError
from cgs_engine.review.alternative import region_alternative, specialists_drawing, take_in_region
from cgs_engine.review.state import EDITED
from cgs_engine.volume import Geometry
from napari_cgs._layers import (
    GEOMETRY_KEY,
    display_rotation,
    image_contrast_limits,
    layer_geometry,
    same_layer,
    shown_as,
)
from napari_cgs.panel.prediction_layers import (
    SEPARATOR,
    STROKE_WAIT_MS,
    class_rgba,
    labels_kwargs_like,
    specialist_layer_name,
    stroke_in_progress,
    write_labels_undoable,
)
from napari_cgs.panel.prompt_tools import PromptTools
from napari_cgs.panel.review_queue import camera_of
from napari_cgs.panel.section import WorkerSection
from napari_cgs.panel.tool_preview import ToolPreview, nothing_changed_text, run_and_summarise
from napari_cgs.panel.workers import qt_object_deleted

KEY_TAKE_SPECIALISTS = "Alt-T"
KEY_BACK_TO_PREDICTION = "Alt-G"
# window (low, high) in HU; "auto" is the image's own range as opened
WINDOW_PRESETS = {
    "Soft tissue (W 400, L 40)": (-160.0, 240.0),
    "Bone (W 1800, L 400)": (-500.0, 1300.0),
    "Lung (W 1500, L -600)": (-1350.0, 150.0),
    "Brain (W 80, L 40)": (0.0, 80.0),
}
# dims.order and the 2D camera orientation: superior is up in the coronal and sagittal views
# Per view, world axes (z, y, x = 0, 1, 2 in LPS) on the slider, the rows and the columns, and which
# way the rows' and columns' coordinates grow on screen: posterior down, head up, the patient's
# left to the right (radiological), anterior to the left on a sagittal slice.
VIEWS = {
    "Axial": ((0, 1, 2), ("down", "right")),
    "Coronal": ((1, 0, 2), ("up", "right")),
    "Sagittal": ((2, 0, 1), ("up", "right")),
}
_OPPOSITE = {"down": "up", "up": "down", "right": "left", "left": "right"}


def view_dims(name: str, turn: np.ndarray) -> tuple[tuple[int, int, int], tuple[str, str]]:
    """napari ``dims.order`` and 2D camera orientation of view ``name`` for an image shown in the
    world of ``turn`` (``display_rotation``: a sagittally stored scan's first axis is x)."""
    worlds, (rows, columns) = VIEWS[name]
    axis_of = {int(np.argmax(np.abs(turn[axis]))): axis for axis in range(3)}  # world axis -> shown axis
    order = tuple(axis_of[world] for world in worlds)
    sign = [float(np.sign(turn[order[k], worlds[k]])) for k in (1, 2)]
    return order, (rows if sign[0] > 0 else _OPPOSITE[rows], columns if sign[1] > 0 else _OPPOSITE[columns])


WHOLE_ORGAN, REVIEW_REGION = "whole organ", "current review region"
# Tool defaults (mm); on a coarser image they start at one in-plane voxel instead (see _fit_to_voxels)
SMOOTH_MM, MARGIN_MM = 1.0, 2.0
# The Correct buttons of the tools in cgs_engine.edit.tools: (text, tooltip)
TOOL_BUTTONS = {
    "fill-between-slices": (
        "Fill between slices",
        "Draw the organ on every few slices, then fill the slices between by contour interpolation.",
    ),
    "keep-largest": (
        "Keep largest island",
        "Remove every part of the organ not connected to its largest piece (shown first: Apply or Discard).",
    ),
    "remove-islands": (
        "Remove islands <",
        "Remove the organ's pieces smaller than the volume on the right (shown first: Apply or Discard).",
    ),
    "fill-holes": ("Fill holes", "Fill holes inside the organ on each axial slice."),
    "smooth": ("Smooth", "Smooth the organ's surface (sigma on the right, in mm)."),
    "grow": ("Grow", "Add a margin around the organ (mm on the right), never over another organ."),
    "shrink": ("Shrink", "Take a margin off the organ (mm on the right)."),
}


def alternative_layer_name(image_layer: Any) -> str:
    return f"{image_layer.name}{SEPARATOR}specialists' version"


def colour_icon(rgba: np.ndarray) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor.fromRgbF(*[float(c) for c in rgba[:3]], 1.0))
    return QIcon(pixmap)


# ------------------------------------------------------------------ what the workers run (engine calls)
def run_tool(
    tool: str,
    labels: np.ndarray,
    class_id: int,
    spacing_zyx,
    region,
    value: float,
    interpolate=None,
    geometry=None,
):
    if tool not in EDIT_TOOLS:
        raise CGSError(f"unknown tool {tool!r}")
    return EDIT_TOOLS[tool].run(
        labels, class_id, spacing_zyx, region, value, geometry=geometry, interpolate=interpolate
    )


class CorrectSection(WorkerSection):
    """Signals: ``edited(str, int)`` (what was done, voxels changed), ``failed(str)``."""

    edited = Signal(str, int)
    BUSY = "Busy with the previous correction; wait for it to finish."

    def __init__(self, panel: Any) -> None:
        super().__init__("4 · Correct", panel)
        self.panel = panel
        self.viewer = panel.viewer
        self._shown_box: tuple[slice, ...] | None = None  # the box drawn in the outline layer
        self._build()

        self.prompt_tools = PromptTools(self)
        self.layout().insertWidget(self.layout().indexOf(self.take_button), self.prompt_tools)
        panel.prediction_finished.connect(lambda *_: self.refresh())
        panel.session_restored.connect(lambda *_: self.refresh())
        panel.image_choice.changed.connect(lambda *_: self.refresh())
        self.refresh()

    def follow_review(self, review: Any) -> None:
        """Show the specialists' version of each region the review queue moves to; bind the keys."""
        review.region_shown.connect(self.show_alternative)
        self.bind_keys()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self._build_scope()
        self._build_amounts()
        self.tool_buttons = {
            tool: self._button(*TOOL_BUTTONS[tool], lambda t=tool: self.apply_tool(t)) for tool in EDIT_TOOLS
        }
        self._build_region_and_view()
        self._lay_out()

    def _build_scope(self) -> None:
        """The organ the tools act on, and whether on all of it or in the review region."""
        self.organ_choice = QComboBox()
        self.organ_choice.setToolTip("The organ you paint with and that the tools below work on.")
        self.organ_choice.currentIndexChanged.connect(self._organ_chosen)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setToolTip("The organs of the model and their colours.")
        self.whole_button = QRadioButton(WHOLE_ORGAN)
        self.whole_button.setToolTip("The tools work on the whole organ.")
        self.whole_button.setChecked(True)
        self.region_button = QRadioButton(REVIEW_REGION)
        self.region_button.setToolTip("The tools work only inside the box of the review region on screen.")
        self.scope_group = QButtonGroup(self)
        for button in (self.whole_button, self.region_button):
            self.scope_group.addButton(button)

    def _build_amounts(self) -> None:
        """The tools' amounts (mL, mm), the note on voxel size and the preview of a removal."""
        self.islands_ml = self._spin(0.5, 0.01, 1000.0, " mL", "Islands smaller than this are removed.")
        self.smooth_mm = self._spin(SMOOTH_MM, 0.1, 20.0, " mm", "Gaussian smoothing strength (sigma).")
        self.margin_mm = self._spin(MARGIN_MM, 0.1, 50.0, " mm", "How far to grow or shrink the organ.")
        self._voxel_defaults = {self.smooth_mm: SMOOTH_MM, self.margin_mm: MARGIN_MM}  # as last set by us
        self._amount_boxes = {SMALLEST_ISLAND: self.islands_ml, SIGMA: self.smooth_mm, MARGIN: self.margin_mm}
        self.voxel_note = QLabel()
        self.voxel_note.setWordWrap(True)
        self.voxel_note.setStyleSheet("color: #9a9a9a;")
        self.voxel_note.setToolTip("Grow, Shrink and Smooth by less than one voxel change nothing.")
        self.preview = ToolPreview(self.viewer, on_closed=self.refresh)

    def _build_region_and_view(self) -> None:
        """The specialists' version of a review region, window presets, standard views, status."""
        self.take_button = self._button(
            f"Take specialists' version ({KEY_TAKE_SPECIALISTS})",
            "In the review region on screen, use what the specialist heads draw (shown as an outline "
            "layer) instead of the pre-segmentation.",
            self.take_specialists,
        )
        self.back_button = self._button(
            f"Back to pre-segmentation ({KEY_BACK_TO_PREDICTION})",
            "In the review region on screen, put the generalist's pre-segmentation back.",
            self.back_to_prediction,
        )
        self.window_choice = QComboBox()
        self.window_choice.addItems(["Window: as opened", *WINDOW_PRESETS])
        self.window_choice.setToolTip("Window/level presets for CT (Hounsfield units).")
        self.window_choice.currentTextChanged.connect(self.set_window)
        self.view_buttons = {
            name: self._button(
                name,
                f"Show {name.lower()} slices" + ("" if name == "Axial" else ", superior up"),
                lambda checked=False, n=name: self.set_view(n),
            )
            for name in VIEWS
        }
        self.status = QLabel("Pre-segment an image to correct it.")
        self.status.setWordWrap(True)
        self.status.setToolTip("What the last correction did.")

    def _lay_out(self) -> None:
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Organ"))
        row.addWidget(self.organ_choice, 1)
        layout.addLayout(row)
        layout.addWidget(self.legend)
        layout.addWidget(QLabel("Tools act on"))
        row = QHBoxLayout()
        row.addWidget(self.whole_button)
        row.addWidget(self.region_button)
        layout.addLayout(row)
        grid = QGridLayout()
        grid.addWidget(self.tool_buttons["fill-between-slices"], 0, 0)
        grid.addWidget(self.tool_buttons["keep-largest"], 0, 1)
        grid.addWidget(self.tool_buttons["fill-holes"], 1, 0)
        grid.addWidget(self.tool_buttons["remove-islands"], 2, 0)
        grid.addWidget(self.islands_ml, 2, 1)
        grid.addWidget(self.tool_buttons["smooth"], 3, 0)
        grid.addWidget(self.smooth_mm, 3, 1)
        grid.addWidget(self.tool_buttons["grow"], 4, 0)
        grid.addWidget(self.tool_buttons["shrink"], 4, 1)
        grid.addWidget(self.margin_mm, 5, 1)
        layout.addLayout(grid)
        layout.addWidget(self.voxel_note)
        layout.addWidget(self.preview)
        layout.addWidget(self.take_button)
        layout.addWidget(self.back_button)
        row = QHBoxLayout()
        for button in self.view_buttons.values():
            row.addWidget(button)
        layout.addLayout(row)
        layout.addWidget(self.window_choice)
        layout.addWidget(self.status)

    def _button(self, text: str, tooltip: str, slot: Callable[[], Any]) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.clicked.connect(lambda *_: slot())
        return button

    def _spin(self, value: float, low: float, high: float, suffix: str, tooltip: str) -> QDoubleSpinBox:
        box = QDoubleSpinBox()
        box.setRange(low, high)
        box.setDecimals(2)
        box.setValue(value)
        box.setSuffix(suffix)
        box.setToolTip(tooltip)
        return box

    def bind_keys(self) -> None:
        self.viewer.bind_key(KEY_TAKE_SPECIALISTS, lambda viewer: self.take_specialists(), overwrite=True)
        self.viewer.bind_key(KEY_BACK_TO_PREDICTION, lambda viewer: self.back_to_prediction(), overwrite=True)

    def unbind_keys(self) -> None:
        for key in (KEY_TAKE_SPECIALISTS, KEY_BACK_TO_PREDICTION):
            self.viewer.bind_key(key, None, overwrite=True)

    # ------------------------------------------------------------------ state
    def refresh(self) -> None:
        names = list(self.panel.class_names)
        colours = class_rgba(self.panel.class_colors, len(names))
        current = self.organ_choice.currentData()
        self.organ_choice.blockSignals(True)
        self.organ_choice.clear()
        for class_id, name in enumerate(names):
            if class_id:
                self.organ_choice.addItem(colour_icon(colours[class_id]), name, class_id)
        self.organ_choice.blockSignals(False)
        index = self.organ_choice.findData(current) if current is not None else 0
        self.organ_choice.setCurrentIndex(max(index, 0))
        self.legend.setText(
            " ".join(
                f'<span style="color:{QColor.fromRgbF(*map(float, colours[i][:3])).name()}">■</span> {name}'
                for i, name in enumerate(names)
                if i
            )
        )
        ready = self.panel.labels_layer is not None and bool(names) and not self.panel.out_of_step()
        if self.preview.pending and not (ready and self.preview.is_for(self.panel.image_layer)):
            self.preview.discard()  # offered on an image no longer corrected (closed, switched away)
        busy = self.worker is not None or self.preview.pending
        for button in self.tool_buttons.values():
            button.setEnabled(ready and not busy)
        if hasattr(self, "prompt_tools"):
            self.prompt_tools.set_enabled(ready, busy)
        if ready:
            self._fit_to_voxels()
            shared_interpolation().start()  # load ITK in its helper process before the first fill
        has_maps = self._maps() is not None
        self.take_button.setEnabled(ready and has_maps and not busy)
        self.back_button.setEnabled(ready and self.panel.prediction_labels is not None and not busy)

    def _fit_to_voxels(self) -> None:
        """Grow, Shrink and Smooth start at one voxel of this image; say so."""
        image = self.panel.image_layer
        if image is None:
            return
        spacing_zyx = tuple(layer_geometry(image).spacing[::-1])
        one_voxel = float(np.ceil(max(spacing_zyx[1:]) * 10) / 10)  # in-plane, 0.1 mm up
        for box, default in ((self.smooth_mm, SMOOTH_MM), (self.margin_mm, MARGIN_MM)):
            if abs(box.value() - self._voxel_defaults[box]) < 1e-9:  # not changed by the user
                self._voxel_defaults[box] = max(default, one_voxel)
                box.setValue(self._voxel_defaults[box])
        z, y, x = spacing_zyx
        coarse = one_voxel > min(SMOOTH_MM, MARGIN_MM)
        self.voxel_note.setText(
            f"Voxels {x:.1f} × {y:.1f} × {z:.1f} mm: Grow, Shrink or Smooth by less than {one_voxel:g} mm "
            f"change nothing in-plane{', so they start at one voxel' if coarse else ''}."
        )

    def organ(self) -> int | None:
        value = self.organ_choice.currentData()
        return None if value is None else int(value)

    def _organ_chosen(self, index: int) -> None:
        layer, class_id = self.panel.labels_layer, self.organ()
        if layer is not None and class_id is not None:
            layer.selected_label = class_id

    # ------------------------------------------------------------------ tools
    def _region(self) -> tuple[slice, ...] | None:
        if not self.region_button.isChecked():
            return None
        state = self.panel.review.state
        region = None if state is None else state.current()
        return None if region is None else tuple(region.bbox)

    def apply_tool(self, tool: str) -> Any | None:
        """Start ``tool`` on the chosen organ; the worker, or None (with the reason shown)."""
        layer, class_id, image = self.panel.labels_layer, self.organ(), self.panel.image_layer
        if self.out_of_step():
            return None
        if layer is None or class_id is None or image is None:
            return self._report("Pre-segment an image (or restore a session) before correcting it.")
        if self.region_button.isChecked() and self._region() is None:
            return self._report(
                "No review region on screen: choose one in the queue, or act on the whole organ."
            )
        needs = EDIT_TOOLS[tool].amount
        value = self._amount_boxes.get(needs, self.margin_mm).value()
        geometry = layer_geometry(image)
        spacing_zyx = tuple(geometry.spacing[::-1])
        labels = np.array(layer.data, copy=True)
        name = self.organ_choice.currentText()
        what = f"{self.tool_buttons[tool].text()} on {name}"
        helper = shared_interpolation()
        waiting = ""
        if tool == "fill-between-slices" and not helper.ready:
            waiting = " (ITK's contour interpolation is still loading in its helper process: about 10 s)"
        amount = value if needs is not None and needs.unit == "mm" else None
        return self._start(
            run_and_summarise,
            (run_tool, tool, labels, class_id, spacing_zyx, self._region(), value, helper, geometry),
            f"{what}…{waiting}",
            lambda outcome: self._tool_done(what, name, amount, spacing_zyx, layer, labels, outcome),
        )

    def _tool_done(self, what, organ, amount, spacing_zyx, layer, before, outcome) -> None:
        result, summary, removed = outcome
        if self.written_elsewhere(what, layer):
            return
        if not summary.added and not summary.removed:
            self.status.setText(nothing_changed_text(what, amount, spacing_zyx))
            self.edited.emit(what, 0)
            return
        if removed is None:  # only the voxels the tool changed
            self._write(what, result.labels, result.changed, unchanged_since=before, into=layer)
            return
        image = self.panel.image_layer
        self.preview.offer(
            image,
            f"{what} would remove {summary.removal_text(organ)}, drawn in white. Apply writes it "
            "(Ctrl+Z undoes it), Discard leaves the labels as they are.",
            removed,
            lambda: self._write(what, result.labels, result.changed, unchanged_since=before, into=layer),
        )
        self.status.setText(f"{what}: waiting for Apply or Discard.")
        self.refresh()

    # ------------------------------------------------------------------ the specialists' version
    def _maps(self) -> dict[int, np.ndarray] | None:
        image = self.panel.image_layer
        if image is None:
            return None
        maps = {}
        for class_id, name in enumerate(self.panel.class_names):
            layer_name = specialist_layer_name(image, name)
            if class_id and layer_name in self.viewer.layers:
                maps[class_id] = np.asarray(self.viewer.layers[layer_name].data)
        return maps or None

    def _current_region(self):
        state = self.panel.review.state
        region = None if state is None else state.current()
        if region is None:
            return None, None
        component_map = self.panel.review.component_map
        inside = None if component_map is None else component_map[tuple(region.bbox)] == region.id
        return region, inside

    def show_alternative(self, region: Any = None) -> None:
        """Outline, in its own layer, what the specialist heads draw in the region on screen.

        Only the region's box is rewritten (and the previous one cleared): review navigation must
        not copy the whole volume at every step.
        """

        image, maps = self.panel.image_layer, self._maps()
        region, inside = self._current_region()
        if image is None or maps is None or region is None:
            return
        box = tuple(region.bbox)
        name = alternative_layer_name(image)
        layer = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
        if layer is None or layer.data.shape != image.data.shape:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self._add_alternative_layer(image, name)
        elif self._shown_box is not None:
            layer.data[self._shown_box] = 0
        crop = specialists_drawing({k: v[box] for k, v in maps.items()}, layer.data[box].shape)
        layer.data[box] = np.where(inside if inside is not None else True, crop, 0)
        self._shown_box = box
        layer.refresh()

    def _add_alternative_layer(self, image: Any, name: str) -> Any:
        data = np.zeros(image.data.shape, np.uint8)
        layer = self.viewer.add_labels(data, opacity=0.9, **labels_kwargs_like(image, name=name))
        layer.contour = 1
        layer.editable = False
        if self.panel.labels_layer is not None:
            layer.colormap = self.panel.labels_layer.colormap
            self.viewer.layers.selection.active = self.panel.labels_layer
        return layer

    def take_specialists(self) -> None:
        if self.out_of_step():
            return
        layer, maps = self.panel.labels_layer, self._maps()
        region, inside = self._current_region()
        if layer is None or maps is None or region is None:
            self._report("No review region with specialist maps on screen.")
            return
        current = np.asarray(layer.data)
        labels, changed = region_alternative(current, maps, region.bbox, inside)
        mask = self.panel.review_mask()
        yours = changed & (mask == EDITED) if mask is not None else np.zeros_like(changed)
        kept = int(np.count_nonzero(yours))
        note = f" Kept {kept:,} voxels you edited (the brush or Alt+G changes them)." if kept else ""
        self._write(f"Specialists' version taken in region {region.id}", labels, changed & ~yours, note)

    def back_to_prediction(self) -> None:
        if self.out_of_step():
            return
        layer, predicted = self.panel.labels_layer, self.panel.prediction_labels
        region, inside = self._current_region()
        if layer is None or predicted is None or region is None:
            self._report("No review region of a pre-segmentation on screen.")
            return
        box = tuple(region.bbox)
        labels, _ = take_in_region(np.asarray(layer.data), predicted[box], box, inside)
        self._write(f"Pre-segmentation put back in region {region.id}", labels)

    # ------------------------------------------------------------------ viewing
    def set_window(self, text: str) -> None:
        image = self.panel.image_layer
        if image is None:
            return
        if text in WINDOW_PRESETS:
            image.contrast_limits = WINDOW_PRESETS[text]
        else:
            image.contrast_limits = image_contrast_limits(np.asarray(image.data))

    def set_view(self, name: str) -> None:
        image = self.panel.image_layer
        stored = None if image is None else (image.metadata or {}).get(GEOMETRY_KEY)
        turn = np.eye(3) if not stored else display_rotation(Geometry.from_dict(stored))
        order, orientation = view_dims(name, turn)
        self.viewer.dims.ndisplay = 2
        self.viewer.dims.order = order

        camera_of(self.viewer).orientation2d = orientation

    # ------------------------------------------------------------------ writing and workers
    def after_stroke(self, layer: Any, land: Callable[[], Any]) -> bool:
        """Put ``land`` off while a stroke is being painted in ``layer`` (True when it was): written
        meanwhile, a result joined the stroke, its voxels marked as yours and undone with it."""
        if not stroke_in_progress(layer):
            return False

        def later() -> None:
            if not qt_object_deleted(self):
                land()

        QTimer.singleShot(STROKE_WAIT_MS, later)
        return True

    def _write(
        self,
        what: str,
        new_labels: np.ndarray,
        changed_only: np.ndarray | None = None,
        note: str = "",
        unchanged_since: np.ndarray | None = None,
        into: Any = None,
        shown: np.ndarray | None = None,
    ) -> int:
        """One undo step through the layer's own history; the panel's tracker marks the edits.

        ``changed_only``: write only these voxels; ``unchanged_since``: and only where the labels still
        hold these values (strokes painted while a tool ran, or before a preview was applied, stay);
        ``into``: the labels layer the tool read, written only while the panel still corrects it;
        ``shown``: the voxels the user saw the prompt on (its slice): what it changes elsewhere is
        written as the model's, not marked as yours (a box through every slice marked slices never
        on screen as drawn by you, and a retrain learnt the model's own output as a correction).
        """

        layer = self.panel.labels_layer
        if layer is None or (into is not None and self.written_elsewhere(what, into)):
            return 0
        if self.after_stroke(
            layer, lambda: self._write(what, new_labels, changed_only, note, unchanged_since, into, shown)
        ):
            return 0
        keep = None if changed_only is None else ~changed_only
        if unchanged_since is not None:
            moved_on = np.asarray(layer.data) != unchanged_since
            keep = moved_on if keep is None else keep | moved_on
        before = np.array(layer.data, copy=True) if shown is not None else None
        changed = write_labels_undoable(layer, new_labels, keep=keep)
        if changed and shown is not None:
            unseen = (np.asarray(layer.data) != before) & ~shown
            tracker = self.panel.tracker
            if unseen.any() and tracker is not None and tracker.shape == unseen.shape:
                tracker.touched[unseen] = False
                self.panel.autosave.mark_changed()
                where = "on other slices" if shown.any() else "(prompted in the 3D view)"
                note = f" {int(unseen.sum()):,} of them {where} are the model's until you review them.{note}"
        if changed:
            self.status.setText(f"{what}: {changed:,} voxels changed (Ctrl+Z undoes it).{note}")
        else:
            self.status.setText(f"{what} changed nothing. Nothing to undo.{note}")
        self.edited.emit(what, changed)
        return changed

    def out_of_step(self) -> bool:
        """Whether the Image box shows another image than the one whose labels are corrected (a
        pre-segmentation is running); says so. Tools would read one image and write the other's labels."""
        reason = self.panel.out_of_step()
        if reason:
            self._report(reason)
        return bool(reason)

    def written_elsewhere(self, what: str, read_from: Any) -> bool:
        """Whether a result computed from ``read_from`` would now land in other labels; says so.

        A tool runs for seconds (adapting, a minute): meanwhile the user may switch to another image
        or close this one, and the panel's labels layer is then another scan's (two frames of one
        patient even have the same shape). Such a result is dropped, never written there."""
        current = self.panel.labels_layer
        # (the panel keeps holding a labels layer the user closed, for its work: a result written
        # into it then was saved to the session unseen, and "Ctrl+Z undoes it" had no layer)
        if current is not None and same_layer(current, read_from) and shown_as(self.viewer, read_from):
            if not self.panel.out_of_step():
                return False
            # another image was chosen while the panel's own pre-segmentation runs: the labels are
            # still those read, but a preview would be shown on the chosen image, and dropped
            self.status.setText(f"{what}: not written, {self.panel.image_layer.name} was chosen meanwhile.")
            return True
        where = "is no longer the one corrected" if shown_as(self.viewer, read_from) else "was closed"
        self.status.setText(f"{what}: not written, {read_from.name} {where} meanwhile.")
        return True
