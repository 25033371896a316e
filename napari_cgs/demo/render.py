"""A PNG of the demo's result: the real napari viewer under Xvfb, or a picture composed without a display.

Under Xvfb a child process (``_demo_screenshot``) opens napari with the CGS panel docked and
replays the prediction already made, so the picture shows exactly what ``make demo`` shows on a
screen. Without ``xvfb-run`` (or when that child fails) the picture is composed here from numpy
arrays and written by Qt's QImage on the offscreen platform: the middle axial slice of the CT with
the labels on the left and with the disagreement on the right.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QGuiApplication, QImage, QPainter

from napari_cgs._layers import CT_SOFT_TISSUE_WINDOW

SCREEN = "1600x1000x24"
CHILD_MODULE = "napari_cgs.demo.screenshot"
CHILD_TIMEOUT_S = 300
PANEL_PIXELS = 512  # the longer side of each composed panel
CAPTION_PIXELS = 28
LABELS_ALPHA = 0.55  # as the panel's labels layer
DISAGREEMENT_FLOOR = 0.2  # as the panel's disagreement layer: lower values stay black
DISAGREEMENT_OPACITY = 0.5


def xvfb_run() -> str | None:
    """Path of ``xvfb-run``, or None where it is not installed."""
    return shutil.which("xvfb-run")


def render_picture(run: Any, model: Path, out: Path) -> str:
    """Write ``out``; returns how it was made, for the demo's report."""
    command = xvfb_run()
    if command is not None:
        failure = screenshot_under_xvfb(command, run, model, out)
        if failure is None:
            return f"rendered by napari under Xvfb (CT, labels, disagreement, CGS panel): {out}"
        print(f"demo: the napari screenshot under Xvfb failed ({failure}); composing the picture instead")
    compose_picture(run, out)
    return f"composed without a display (middle slice: labels | disagreement): {out}"


def screenshot_under_xvfb(command: str, run: Any, model: Path, out: Path) -> str | None:
    """Run ``_demo_screenshot`` under a virtual display; None on success, else why it failed."""
    with tempfile.TemporaryDirectory(prefix="cgs-demo-") as folder:
        replay = Path(folder) / "prediction.pickle"
        with replay.open("wb") as handle:
            pickle.dump({"prediction": run.prediction, "runtime": run.runtime}, handle)
        args = [command, "-a", "-s", f"-screen 0 {SCREEN}", sys.executable, "-m", CHILD_MODULE]
        args += ["--replay", str(replay), "--model", str(model), "--out", str(out.resolve())]
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
        child = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        try:
            log, _ = child.communicate(timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # xvfb-run, its Xvfb and napari: the whole session
            child.communicate()
            return f"no picture after {CHILD_TIMEOUT_S} s"
    if child.returncode != 0 or not out.is_file():
        last = [line for line in log.splitlines() if line.strip()][-1:] or ["no output"]
        return f"exit code {child.returncode}: {last[0]}"
    return None


# ------------------------------------------------------------------------------ composed picture
def grey(ct_slice: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    values = np.clip((ct_slice.astype(np.float32) - low) / (high - low), 0.0, 1.0)
    return np.repeat(values[..., None], 3, axis=2)


def class_colours(class_colors: list[list[int]], count: int) -> np.ndarray:
    """RGB floats per class id; ids without a checkpoint colour get a fixed spread of hues."""
    colours = np.zeros((max(count, 1), 3), dtype=np.float32)
    for class_id in range(1, count):
        if class_id < len(class_colors) and len(class_colors[class_id]) >= 3:
            colours[class_id] = np.asarray(class_colors[class_id][:3], dtype=np.float32) / 255.0
        else:
            hue = class_id / max(count - 1, 1)
            colours[class_id] = [abs(hue * 6 - 3) - 1, 2 - abs(hue * 6 - 2), 2 - abs(hue * 6 - 4)]
    return np.clip(colours, 0.0, 1.0)


def with_labels(base: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    ids = np.clip(labels.astype(np.intp), 0, len(colours) - 1)
    alpha = np.where(ids > 0, LABELS_ALPHA, 0.0)[..., None]
    return base * (1 - alpha) + colours[ids] * alpha


def with_disagreement(base: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
    """Additive black-red-yellow-white ramp from the floor to 1, as the viewer blends its map."""
    value = np.clip((disagreement / 255.0 - DISAGREEMENT_FLOOR) / (1 - DISAGREEMENT_FLOOR), 0.0, 1.0)
    ramp = np.stack([np.clip(3 * value - step, 0.0, 1.0) for step in (0, 1, 2)], axis=-1)
    return np.clip(base + DISAGREEMENT_OPACITY * ramp, 0.0, 1.0)


def resample_in_plane(image: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Nearest-neighbour enlargement to PANEL_PIXELS on the longer side, square millimetres."""
    height_mm, width_mm = image.shape[0] * spacing_yx[0], image.shape[1] * spacing_yx[1]
    per_mm = PANEL_PIXELS / max(height_mm, width_mm)
    rows = max(1, round(height_mm * per_mm))
    columns = max(1, round(width_mm * per_mm))
    row_index = np.minimum((np.arange(rows) * image.shape[0]) // rows, image.shape[0] - 1)
    column_index = np.minimum((np.arange(columns) * image.shape[1]) // columns, image.shape[1] - 1)
    return image[row_index][:, column_index]


def compose_rgb(run: Any) -> tuple[np.ndarray, int]:
    """The two panels side by side (uint8 RGB) and the slice index they show."""

    prediction = run.prediction
    z = run.ct.shape[0] // 2
    base = grey(run.ct.array[z], CT_SOFT_TISSUE_WINDOW)
    colours = class_colours(run.checkpoint.class_colors, len(prediction.class_names))
    left = with_labels(base, prediction.labels.array[z], colours)
    disagreement = prediction.disagreement
    right = base if disagreement is None else with_disagreement(base, disagreement.array[z])
    spacing_x, spacing_y = run.ct.geometry.spacing[:2]
    panels = [resample_in_plane(panel, (spacing_y, spacing_x)) for panel in (left, right)]
    gap = np.ones((panels[0].shape[0], 8, 3), dtype=np.float32) * 0.12
    picture = np.concatenate([panels[0], gap, panels[1]], axis=1)
    return (np.clip(picture, 0, 1) * 255 + 0.5).astype(np.uint8), z


_APPLICATION: list[Any] = []  # the QGuiApplication this module made, kept alive


def gui_application() -> Any:
    """Qt's application object (text drawing needs one), on the offscreen platform if we make it."""

    if QGuiApplication.instance() is None:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        _APPLICATION.append(QGuiApplication(["cgs-demo"]))
    return QGuiApplication.instance()


def compose_picture(run: Any, out: Path) -> Path:
    """Write the composed PNG through Qt's QImage and QPainter (no display needed)."""

    gui_application()
    rgb, z = compose_rgb(run)
    height, width = rgb.shape[:2]
    rgb = np.ascontiguousarray(rgb)
    slice_image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    canvas = QImage(width, height + CAPTION_PIXELS, QImage.Format.Format_RGB888)
    canvas.fill(QColor("#262930"))
    painter = QPainter(canvas)
    painter.drawImage(0, CAPTION_PIXELS, slice_image)
    painter.setPen(QColor("#e0e0e0"))
    half = (width - 8) // 2
    for left, text in ((0, f"CT + labels, slice z={z}"), (half + 8, f"CT + disagreement, slice z={z}")):
        painter.drawText(left + 8, 0, half - 16, CAPTION_PIXELS, int(Qt.AlignmentFlag.AlignVCenter), text)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not canvas.save(str(out), "PNG"):
        raise OSError(f"{out}: Qt could not write the PNG")
    return out
