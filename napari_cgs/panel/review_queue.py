"""The review queue: ranked uncertain regions, navigation, the focus outline and the slice profile.

``ReviewQueueWidget`` only shows things and emits requests; ``ReviewController`` owns the
engine's ``ReviewState`` and moves the viewer. Region statistics, the review mask and the
profile all come from ``cgs_engine.review``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import (
    QGridLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from cgs_engine.review.framing import body_box, review_field
from napari_cgs.panel.prediction_layers import FOCUS_COLOR, follow_focus, show_focus

BODY_MARGIN = 1.08  # the whole-slice view leaves a little room around the body

# Viewer key bindings (napari uses plain letters, Alt+Up/Down and Ctrl combos; these are free).
KEY_NEXT = "Alt-N"
KEY_PREVIOUS = "Alt-B"
KEY_ACCEPT = "Alt-A"
KEY_SKIP = "Alt-S"
STATUS_MARKS = {"pending": "", "accepted": "  ✓ accepted", "skipped": "  – skipped"}
STATUS_COLOURS = {"accepted": QColor("#7fd17f"), "skipped": QColor("#9a9a9a")}


def camera_of(viewer: Any) -> Any:
    """napari 0.9 moved the camera to ``viewer.scene.camera`` (``viewer.camera`` is deprecated)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def canvas_size(viewer: Any) -> tuple[float, float] | None:
    """(height, width) of the canvas in pixels (napari 0.9: viewer.canvas.size; older: _canvas_size)."""
    canvas = getattr(getattr(viewer, "canvas", None), "size", None) or getattr(viewer, "_canvas_size", None)
    if not canvas or min(canvas) <= 0:
        return None
    return float(canvas[-2]), float(canvas[-1])


def frame(viewer: Any, layer: Any, centre_index: Sequence[float], field_mm: Sequence[float]) -> None:
    """Centre the 2D camera on a voxel position and zoom so ``field_mm`` (per data axis) fills the canvas."""
    canvas = canvas_size(viewer)
    shown = list(viewer.dims.displayed)
    if canvas is None or len(shown) != 2:  # the 3D view: its camera frames the whole volume
        return
    world = np.asarray(layer.data_to_world(tuple(centre_index)), dtype=float)
    camera = camera_of(viewer)
    camera.center = tuple(world[shown])
    field = np.maximum(np.asarray(field_mm, dtype=float)[shown], 1e-6)
    camera.zoom = float(min(np.asarray(canvas) / field))


def zoom_to_box(viewer: Any, layer: Any, bbox: Sequence[slice], body: Sequence[slice] | None = None) -> None:
    """Frame a region with its anatomy around it, on the body (``cgs_engine.review.framing.review_field``)."""

    spacing = np.abs(np.asarray(layer.scale, dtype=float))
    centre, field = review_field(bbox, spacing, layer.data.shape, limit=body)
    shown = list(viewer.dims.displayed)
    centre = np.asarray(centre, dtype=float)
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    for axis in range(len(centre)):  # keep the slice the viewer is on; centre only the shown axes
        if axis not in shown:
            centre[axis] = point[axis]
    frame(viewer, layer, centre, field)


_bodies: dict[Any, tuple[slice, ...] | None] = {}


def body_of(image_layer: Any) -> tuple[slice, ...] | None:
    """The body's box in an image layer (``cgs_engine.review.framing.body_box``), found once per layer."""

    key = image_layer.unique_id
    if key not in _bodies:
        _bodies[key] = body_box(np.asarray(image_layer.data))
    return _bodies[key]


def frame_body(viewer: Any, layer: Any) -> None:
    """The whole slice on screen, its body filling the canvas (not the scanner's field of view)."""

    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    shown = list(viewer.dims.displayed)
    across = [axis for axis in range(3) if axis not in shown]
    body = None
    if across == [0]:  # the axial view: this slice's body (the shoulders are wider than the neck)
        body = body_box(np.asarray(layer.data), slices=[int(round(point[0]))])
    body = body or body_of(layer) or tuple(slice(0, n) for n in layer.data.shape)
    spacing = np.abs(np.asarray(layer.scale, dtype=float))
    centre = np.array([(part.start + part.stop - 1) / 2 for part in body], dtype=float)
    centre[across] = point[across]
    field = np.array([part.stop - part.start for part in body], dtype=float) * spacing * BODY_MARGIN
    frame(viewer, layer, centre, field)


def region_text(rank: int, region: Any, class_names: Sequence[str], status: str) -> str:
    names = [class_names[c] for c in region.likely_classes if 0 <= c < len(class_names)]
    classes = ", ".join(names) if names else "unknown organ"
    size = f"{region.volume_ml:.2f}" if region.volume_ml < 10 else f"{region.volume_ml:.0f}"
    if region.source == "likely-wrong":  # ranked by the calibrated error model
        rank_by = f"likely wrong {region.likely_wrong_ml:.1f} mL"
    else:
        rank_by = f"disagreement mass {region.mass:.0f}"
    return f"{rank}. {classes}\n    {size} mL · {rank_by}{STATUS_MARKS[status]}"


class ProfilePlot(QWidget):
    """Bar chart of the disagreement per slice; click a bar to jump to that slice."""

    slice_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.profile = np.zeros(0)
        self.current = -1
        self.setMinimumHeight(56)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(
            "Disagreement per slice, first slice on the left. The magenta line is the slice on "
            "screen; click anywhere to jump to that slice."
        )
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_profile(self, profile: np.ndarray | None) -> None:
        self.profile = np.zeros(0) if profile is None else np.asarray(profile, dtype=float)
        self.update()

    def set_current(self, index: int) -> None:
        if index != self.current:
            self.current = index
            self.update()

    def slice_at(self, x: float) -> int:
        count = len(self.profile)
        return int(min(count - 1, max(0, x * count // max(1, self.width()))))

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt override)
        if len(self.profile):
            self.slice_clicked.emit(self.slice_at(event.position().x()))

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt override)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#1e1e22"))
        count = len(self.profile)
        peak = float(self.profile.max()) if count else 0.0
        if count and peak > 0:
            bar_width = self.width() / count
            usable = self.height() - 4
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor("#f28e2c"))
            for index, value in enumerate(self.profile):
                bar = usable * value / peak
                painter.drawRect(QRectF(index * bar_width, self.height() - bar, max(bar_width, 1.0), bar))
        if 0 <= self.current < count:
            painter.setPen(QPen(QColor(FOCUS_COLOR), 2))
            x = (self.current + 0.5) * self.width() / count
            painter.drawLine(QPointF(x, 0), QPointF(x, self.height()))
        if not count:
            painter.setPen(QColor("#9a9a9a"))
            painter.drawText(
                self.rect(), Qt.AlignmentFlag.AlignCenter, "slice profile appears after pre-segmentation"
            )
        painter.end()


class ReviewQueueWidget(QWidget):
    """List of regions plus Previous / Next / Accept / Skip; emits what the user asked for."""

    region_clicked = Signal(int)  # region id
    next_requested = Signal()
    previous_requested = Signal()
    accept_requested = Signal()
    skip_requested = Signal()
    slice_requested = Signal(int)  # z index of the image

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = QLabel("No review queue yet: pre-segment an image first.")
        self.summary.setWordWrap(True)
        self.summary.setToolTip("Regions where the specialist heads disagree, most uncertain first.")
        self.list = QListWidget()
        self.list.setMinimumHeight(160)
        self.list.setWordWrap(True)
        self.list.setToolTip(
            "Uncertain regions ranked by disagreement mass: rank, volume (mL), mass and the organs it "
            "most likely belongs to. Click a row to go there."
        )
        self.list.itemClicked.connect(self._on_item_clicked)
        self.previous_button = self._button("◀ Previous", f"Go to the previous region ({KEY_PREVIOUS})")
        self.next_button = self._button("Next ▶", f"Go to the next region ({KEY_NEXT})")
        self.accept_button = self._button(
            "✓ Accept", f"The labels in this region are right: mark it reviewed and go on ({KEY_ACCEPT})"
        )
        self.skip_button = self._button("Skip", f"Leave this region undecided for now and go on ({KEY_SKIP})")
        self.previous_button.clicked.connect(self.previous_requested)
        self.next_button.clicked.connect(self.next_requested)
        self.accept_button.clicked.connect(self.accept_requested)
        self.skip_button.clicked.connect(self.skip_requested)
        self.profile = ProfilePlot()
        self.profile.slice_clicked.connect(self.slice_requested)
        keys = QLabel(
            f"Keys in the viewer: {KEY_NEXT} next · {KEY_PREVIOUS} previous · "
            f"{KEY_ACCEPT} accept · {KEY_SKIP} skip"
        )
        keys.setWordWrap(True)
        keys.setStyleSheet("color: #9a9a9a;")
        keys.setToolTip("These shortcuts work while the napari canvas has the keyboard focus.")

        buttons = QGridLayout()
        buttons.addWidget(self.previous_button, 0, 0)
        buttons.addWidget(self.next_button, 0, 1)
        buttons.addWidget(self.accept_button, 1, 0)
        buttons.addWidget(self.skip_button, 1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        profile_title = QLabel("Disagreement per slice")
        profile_title.setToolTip(self.profile.toolTip())
        layout.addWidget(profile_title)
        layout.addWidget(self.profile)
        layout.addWidget(keys)
        self.set_enabled(False)

    def _button(self, text: str, tooltip: str) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        return button

    def set_enabled(self, enabled: bool) -> None:
        for button in (self.previous_button, self.next_button, self.accept_button, self.skip_button):
            button.setEnabled(enabled)

    def show_state(self, state: Any | None, class_names: Sequence[str]) -> None:
        self.list.clear()
        if state is None:
            self.summary.setText("No review queue yet: pre-segment an image first.")
            self.set_enabled(False)
            return
        for rank, region in enumerate(state.regions, start=1):
            status = state.status[region.id]
            item = QListWidgetItem(region_text(rank, region, class_names, status))
            item.setData(Qt.ItemDataRole.UserRole, region.id)
            if status in STATUS_COLOURS:
                item.setForeground(STATUS_COLOURS[status])
            self.list.addItem(item)
        counts = state.counts()
        if state.regions:
            self.summary.setText(
                f"{len(state.regions)} uncertain regions: {counts['pending']} to review, "
                f"{counts['accepted']} accepted, {counts['skipped']} skipped."
            )
            self.list.setCurrentRow(state.position)
        else:
            self.summary.setText("No uncertain regions: the specialist heads agree everywhere.")
        self.set_enabled(bool(state.regions))

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.region_clicked.emit(int(item.data(Qt.ItemDataRole.UserRole)))


class ReviewController(QObject):
    """Owns the ReviewState for one image and moves the viewer to the current region."""

    changed = Signal()  # the review state changed (decision, edit, position): autosave needed
    decided = Signal()  # a region accepted or skipped, by button or key: saved at once
    region_shown = Signal(object)  # the Region now in focus

    def __init__(self, viewer: Any, widget: ReviewQueueWidget) -> None:
        super().__init__(widget)
        self.viewer = viewer
        self.widget = widget
        self.state: Any | None = None
        self.component_map: np.ndarray | None = None
        self.image_layer: Any | None = None
        self.body: tuple[slice, ...] | None = None  # the body's box in the image under review
        self.class_names: list[str] = []
        widget.next_requested.connect(self.next)
        widget.previous_requested.connect(self.previous)
        widget.accept_requested.connect(self.accept)
        widget.skip_requested.connect(self.skip)
        widget.region_clicked.connect(self.go_to)
        widget.slice_requested.connect(self.go_to_slice)
        viewer.dims.events.point.connect(self._follow_slice)
        viewer.dims.events.ndisplay.connect(self._follow_slice)  # the outline is 2D-view only

    # ----------------------------------------------------------------- setup
    def start(
        self,
        image_layer: Any,
        state: Any,
        component_map: np.ndarray | None,
        profile: np.ndarray | None,
        class_names: Sequence[str],
    ) -> None:
        self.body = body_of(image_layer)  # a review view never shows more than the body
        self.image_layer, self.state, self.component_map = image_layer, state, component_map
        self.class_names = list(class_names)
        if profile is not None:
            self.widget.profile.set_profile(profile)
        self._refresh()
        if state.current() is not None:
            self.show(state.current())

    def clear(self) -> None:
        self.state = self.component_map = None
        self.widget.show_state(None, [])
        self.widget.profile.set_profile(None)

    def bind_keys(self) -> None:
        for key, action in self._key_actions().items():
            self.viewer.bind_key(key, action, overwrite=True)

    def disconnect_viewer(self) -> None:
        """Unbind the keys and stop following the slider (the panel is closing)."""
        for key in self._key_actions():
            self.viewer.bind_key(key, None, overwrite=True)
        self.viewer.dims.events.point.disconnect(self._follow_slice)
        self.viewer.dims.events.ndisplay.disconnect(self._follow_slice)

    def _key_actions(self) -> dict[str, Any]:
        return {
            KEY_NEXT: lambda viewer: self.next(),
            KEY_PREVIOUS: lambda viewer: self.previous(),
            KEY_ACCEPT: lambda viewer: self.accept(),
            KEY_SKIP: lambda viewer: self.skip(),
        }

    # ----------------------------------------------------------------- actions
    def next(self) -> None:
        if self.state is not None and self.state.next() is not None:
            self._moved()

    def previous(self) -> None:
        if self.state is not None and self.state.previous() is not None:
            self._moved()

    def go_to(self, region_id: int) -> None:
        if self.state is not None:
            self.state.go_to(region_id)
            self._moved()

    def accept(self) -> None:
        region = None if self.state is None else self.state.current()
        if region is None:
            return
        self.state.accept(region.id, self.component_map)
        self._decided()

    def skip(self) -> None:
        region = None if self.state is None else self.state.current()
        if region is None:
            return
        self.state.skip(region.id)
        self._decided()

    def mark_edited(self, parts: Sequence[tuple[tuple, np.ndarray | None]]) -> None:
        if self.state is None:
            return
        for where, values in parts:
            self.state.mark_edited(where, values)
        self.changed.emit()

    def go_to_slice(self, z_index: int) -> None:
        """Show slice ``z_index`` of the image (through the middle of the slice in y and x)."""
        if self.image_layer is None:
            return
        _, height, width = self.image_layer.data.shape
        world = self.image_layer.data_to_world((z_index, (height - 1) / 2, (width - 1) / 2))
        self.viewer.dims.set_point(range(3), world)

    # ----------------------------------------------------------------- display
    def show(self, region: Any) -> None:
        """Move the slider to the region's centroid slice, centre the camera there and outline it."""
        world = np.asarray(self.image_layer.data_to_world(region.centroid), dtype=float)
        self.viewer.dims.set_point(range(3), world)
        zoom_to_box(self.viewer, self.image_layer, region.bbox, self._body_around(region))
        show_focus(self.viewer, self.image_layer, region.bbox)
        self.region_shown.emit(region)

    def show_current(self) -> None:
        """Frame the current region again (the canvas changed size: a dock was added, say)."""
        if self.state is not None and self.state.current() is not None and self.image_layer is not None:
            self.show(self.state.current())

    def _body_around(self, region: Any) -> tuple[slice, ...] | None:
        """The body on the region's middle slice (the neck is narrower than the shoulders below it)."""

        middle = int(round(region.centroid[0]))
        return body_box(np.asarray(self.image_layer.data), slices=[middle]) or self.body

    def _moved(self) -> None:
        self.show(self.state.current())
        self.widget.list.setCurrentRow(self.state.position)
        self.changed.emit()

    def _decided(self) -> None:
        self.state.next_pending()
        self._refresh()
        self.show(self.state.current())
        self.changed.emit()
        self.decided.emit()

    def _refresh(self) -> None:
        self.widget.show_state(self.state, self.class_names)

    def _follow_slice(self, event=None) -> None:
        if self.image_layer is None or self.image_layer not in self.viewer.layers:
            return
        z_index = self.image_layer.world_to_data(self.viewer.dims.point)[0]
        self.widget.profile.set_current(int(round(z_index)))
        follow_focus(self.viewer, self.image_layer)
