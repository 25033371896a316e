"""Screenshot of the CGS panel at work: the sample CT pre-segmented, the first uncertain region in focus.

Run under a (virtual) display, e.g.::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py \\
        --checkpoint run/best.pt --out panel.png

``--checkpoint`` may be left out once ``napari_cgs/models/default.pt`` ships.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

WINDOW_SIZE = (1600, 1000)
TIMEOUT_S = 600


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from napari_cgs._sample_data import BUNDLED_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help=f"model checkpoint (default: {BUNDLED_MODEL})")
    parser.add_argument("--out", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    if args.checkpoint is None:
        if not BUNDLED_MODEL.is_file():
            parser.error(f"--checkpoint is required until {BUNDLED_MODEL} exists")
        args.checkpoint = BUNDLED_MODEL
    return args


def wait_for(condition, app, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("screenshot: timed out waiting for the pre-segmentation")
        app.processEvents()
        time.sleep(0.02)


def settle(app, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import napari
    from qtpy.QtWidgets import QApplication

    import napari_cgs.panel.session as _session
    from napari_cgs.panel.dock import CGSPanel

    # A picture starts from nothing: no session of the user's (in ~/.napari-cgs) is restored or written.
    _session.SESSION_HOME = Path(tempfile.mkdtemp(prefix="cgs-screenshot-sessions-"))
    viewer = napari.Viewer(title="napari-cgs: pre-segment and review", show=True)
    viewer.window.resize(*WINDOW_SIZE)
    app = QApplication.instance()
    (image,) = viewer.open_sample("napari-cgs", "openkbp-ct")
    panel = CGSPanel(viewer)
    viewer.window.add_dock_widget(panel, name="CGS", area="right")
    panel.device_choice.value = args.device
    panel.load_checkpoint(args.checkpoint)
    if panel.checkpoint is None:
        raise SystemExit(f"screenshot: cannot use {args.checkpoint}: {panel.model_info.text()}")
    panel.select_image(image)
    job = panel.presegment()
    wait_for(lambda: job.finished, app)
    settle(app)
    if panel.review.state is None:
        raise SystemExit(f"screenshot: pre-segmentation gave no result: {panel.status_label.text()}")
    settle(app, 1.0)  # the panel has moved to the first uncertain region by itself
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(path=str(args.out), canvas_only=False, flash=False)
    print(f"screenshot: wrote {args.out} ({panel.status_label.text()})")
    panel.autosave.stop()
    viewer.close()
    shutil.rmtree(_session.SESSION_HOME, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
