"""The demo with a display: napari, the sample CT, the CGS panel pre-segmenting it, the review queue open.

Everything on screen is the panel's own doing: once the pre-segmentation finishes it adds the
specialist maps (hidden, stacked right above the CT), the disagreement map and the labels, and
moves the viewer to the first region of the review queue.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import napari

SAMPLE_KEY = ("napari-cgs", "openkbp-ct")
TITLE = "napari-cgs demo: pre-segment, review, export"
WINDOW_SIZE = (1600, 1000)


class DemoModelError(Exception):
    """The panel could not load the demo's model."""


def open_demo_viewer(model: Path, show: bool = True) -> tuple[Any, Any, Any]:
    """A napari viewer with the sample CT and the CGS panel docked on ``model``: (viewer, panel, image)."""

    viewer = napari.Viewer(title=TITLE, show=show)
    viewer.window.resize(*WINDOW_SIZE)
    (image,) = viewer.open_sample(*SAMPLE_KEY)
    _, panel = viewer.window.add_plugin_dock_widget("napari-cgs", "CGS")  # as Plugins > napari-cgs > CGS
    panel.load_checkpoint(model, label=f"Demo model ({model.name})")
    if panel.checkpoint is None:
        viewer.close()
        raise DemoModelError(f"cannot use the model {model}: {panel.model_info.text()}")
    panel.select_image(image)
    return viewer, panel, image


def report(result: Any, panel: Any) -> None:
    """One line in the terminal when the pre-segmentation ends (the panel shows the details)."""
    if result is None:
        print("demo: pre-segmentation cancelled")
        return
    print(
        f"demo: pre-segmentation took {result.prediction.seconds:.2f} s (wall time); "
        f"{len(result.regions)} uncertain regions in the review queue"
    )


def run_viewer_demo(model: Path) -> int:
    """Open the viewer, start the pre-segmentation and hand over to napari's event loop."""

    try:
        viewer, panel, _ = open_demo_viewer(model)
    except DemoModelError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    panel.prediction_finished.connect(lambda result: report(result, panel))
    panel.prediction_failed.connect(
        lambda reason: print(f"demo: pre-segmentation failed: {reason}", file=sys.stderr)
    )
    print(f"demo: napari is open; pre-segmenting the sample CT with {model} …")
    panel.presegment()
    napari.run()
    return 0
