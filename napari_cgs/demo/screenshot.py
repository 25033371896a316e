"""Child process of the headless demo: the demo viewer under Xvfb, screenshot to a PNG.

It replays the prediction the demo already made (a pickle from ``_demo_render``) through the
panel's own worker, so the layers, the review queue and the focus on the first region are
exactly what the display demo shows, without running the model a second time. Sessions go to a
folder beside the pickle, never to the user's home.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QApplication

import napari_cgs.panel.session as _session
from napari_cgs.demo.viewer import open_demo_viewer

WAIT_S = 240


class ReplayPredictor:
    """Stands in for ``Predictor``: hands back a prediction made earlier, with its runtime."""

    def __init__(self, prediction: Any, checkpoint: Any, runtime: Any) -> None:
        self.prediction, self.checkpoint, self.runtime = prediction, checkpoint, runtime

    def predict(self, volume: Any, maps: bool = True, progress=None, cancel=None) -> Any:
        if progress is not None:
            progress(volume.shape[0], volume.shape[0])
        return self.prediction

    def swap(self, checkpoint: Any) -> None:
        self.checkpoint = checkpoint


def process_events_for(app: Any, seconds: float, until=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until is not None and until()):
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", type=Path, required=True, help="pickle: prediction and runtime")
    parser.add_argument("--model", type=Path, required=True, help="the checkpoint the prediction came from")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)

    _session.SESSION_HOME = args.replay.parent / "sessions"
    with args.replay.open("rb") as handle:
        replay = pickle.load(handle)  # written by our own parent process a moment ago
    viewer, panel, _ = open_demo_viewer(args.model, show=True)
    app = QApplication.instance()
    panel.set_predictor(ReplayPredictor(replay["prediction"], panel.checkpoint, replay["runtime"]))
    job = panel.presegment()
    if job is None:
        raise SystemExit(f"screenshot: the panel did not start: {panel.status_label.text()}")
    process_events_for(app, WAIT_S, until=lambda: job.finished)
    process_events_for(app, 1.0)  # the panel moves to the first review region by itself
    if panel.review.state is None:
        raise SystemExit(f"screenshot: no result in the panel: {panel.status_label.text()}")
    viewer.screenshot(path=str(args.out), canvas_only=False, flash=False)
    panel.autosave.stop()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
