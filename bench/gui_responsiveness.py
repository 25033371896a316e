"""Does napari stay responsive while a retrain runs? Probe the Qt event loop every 10 ms.

Opens napari with the CGS panel, builds a small retraining project from the bundled OpenKBP
sample (plus a few OpenKBP cases and unlabeled scans from ../shared/data when present), starts
a real retrain from the panel's retrain section (a separate, low-priority process that leaves
one core to the GUI) and, while training runs, records how late each tick of a 10 ms QTimer
fires. A second timer scrolls through the CT's slices every 50 ms, as a user would, so the
canvas keeps redrawing (``--no-scroll`` leaves the viewer alone). A stall is a tick's lateness:
the gap to the previous tick minus 10 ms. The same probe first runs without a retrain.
``--load`` runs a second CPU-heavy process (a busy loop at napari's own priority) for the whole
measurement, as on a machine where something else is working too; ``--paint`` pre-segments the
CT and paints a stroke every second, as a user correcting labels. The figures are printed and
saved to ``bench/results/gui_responsiveness-*.json``.

    xvfb-run -a python bench/gui_responsiveness.py [--seconds 60] [--idle-seconds 10] [--no-scroll]
        [--paint] [--load [N]]

Without a display it starts its own Xvfb (pyvirtualdisplay, as pytest-xvfb does). The base
model is napari_cgs/models/default.pt when it exists, else an untrained CGS network of the
default model's architecture (widths 16-256, 128 px), which costs the same per step.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import save_results  # noqa: E402

PROBE_MS = 10
SCROLL_MS = 50


def shared_openkbp() -> Path | None:
    folder = Path(os.environ.get("CGS_SHARED_DATA") or ROOT.parent / "shared" / "data") / "openkbp"
    return folder if (folder / "split.json").is_file() else None


def base_model(work: Path) -> tuple[Path, str]:
    from napari_cgs._sample_data import BUNDLED_MODEL

    if BUNDLED_MODEL.is_file():
        return BUNDLED_MODEL, f"bundled {BUNDLED_MODEL.name}"
    import torch

    from cgs_engine.checkpoint import ModelCheckpoint, save_checkpoint
    from cgs_engine.model import ModelConfig, build_model
    from cgs_engine.normalize import Normalization
    from napari_cgs._sample_data import SAMPLE_CLASS_NAMES

    torch.manual_seed(0)
    config = ModelConfig(num_classes=len(SAMPLE_CLASS_NAMES))  # the default widths 16-256
    checkpoint = ModelCheckpoint(
        config, build_model(config).state_dict(), list(SAMPLE_CLASS_NAMES), 128, Normalization().to_dict()
    )
    return save_checkpoint(checkpoint, work / "base.pt"), "untrained CGS net, widths 16-256, 128 px"


def make_project(work: Path, model: Path, cases: int, unlabeled: int):
    """The bundled CT and its contours, plus OpenKBP training cases and unlabeled scans if present."""
    from cgs_engine.checkpoint import load_checkpoint
    from cgs_engine.io import read_volume
    from cgs_engine.normalize import Normalization
    from cgs_engine.project import Project
    from napari_cgs._sample_data import SAMPLE_CT, SAMPLE_LABELS

    checkpoint = load_checkpoint(model)
    normalization = Normalization.from_dict(checkpoint.normalization)
    project = Project.create(work / "project", checkpoint.class_names, normalization, base_model=model)
    pairs = [("pt_222", SAMPLE_CT, SAMPLE_LABELS)]
    scans: list[Path] = []
    data = shared_openkbp()
    if data is not None:
        split = json.loads((data / "split.json").read_text())
        for case in split["labeled_train"][:cases]:
            pairs.append((case, data / "images" / f"{case}.nii.gz", data / "labels" / f"{case}.nii.gz"))
        scans = [data / "unlabeled" / f"{case}.nii.gz" for case in split["unlabeled"][:unlabeled]]
    for name, image, labels in pairs:
        project.add_correction(name, read_volume(image), read_volume(labels, kind="labels").array)
    if scans:
        project.add_unlabeled([scan for scan in scans if scan.exists()])
    return project


class Probe:
    """Timestamps of a 10 ms QTimer; lateness of each tick is the stall the user would feel."""

    def __init__(self) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.cpu_share = 0.0
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def run(self, seconds: float) -> np.ndarray:
        """Stalls in ms; ``self.cpu_share``: the GUI thread's own CPU time per second meanwhile."""
        self.ticks = []
        cpu, wall = time.thread_time(), time.perf_counter()
        self.timer.start()
        run_event_loop(seconds)
        self.timer.stop()
        # CPU the GUI thread itself used (redraws, slicing, the panel): what a busy machine must find
        # for it, whatever else runs; unlike stalls, it hardly depends on the load
        self.cpu_share = (time.thread_time() - cpu) / (time.perf_counter() - wall)
        gaps_ms = np.diff(np.asarray(self.ticks)) * 1000
        return np.clip(gaps_ms - PROBE_MS, 0, None)


def run_event_loop(seconds: float, until=None) -> None:
    """Run Qt's own event loop for ``seconds`` (or until ``until`` connects its quit)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    if until is not None:
        until(loop.quit)
    loop.exec()


BUSY_LOOP = "while True:\n    pass"  # one core, all the time, at the priority it was started with


def start_load(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def figures(stalls: np.ndarray) -> dict:
    if stalls.size == 0:
        return {"ticks": 0}
    p50, p99 = np.percentile(stalls, [50, 99])
    return {
        "ticks": int(stalls.size),
        "p50_ms": float(p50),
        "p99_ms": float(p99),
        "max_ms": float(stalls.max()),
    }


def describe(stalls: np.ndarray) -> str:
    if stalls.size == 0:
        return "no ticks"
    p50, p99 = np.percentile(stalls, [50, 99])
    return f"stall p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {stalls.max():.1f} ms ({stalls.size} ticks)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="probe this long while training runs")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="probe this long before, idle")
    parser.add_argument("--cases", type=int, default=3, help="OpenKBP training cases added as corrections")
    parser.add_argument("--unlabeled", type=int, default=4, help="OpenKBP unlabeled scans referenced")
    parser.add_argument("--no-scroll", action="store_true", help="leave the slider alone (no redraws)")
    parser.add_argument(
        "--paint",
        action="store_true",
        help="the panel flow: pre-segment the CT first, then paint a brush stroke every second "
        "(each stroke is tracked and autosaved 2 s later, as for a user correcting labels)",
    )
    parser.add_argument(
        "--load",
        type=int,
        nargs="?",
        const=1,
        default=0,
        help="run N (default 1) CPU-heavy processes at napari's priority during the whole measurement",
    )
    args = parser.parse_args()

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay.display import Display

        display = Display(backend="xvfb", size=(1400, 900), color_depth=24)
        display.start()
    work = Path(tempfile.mkdtemp(prefix="cgs-gui-bench-"))
    load = start_load(args.load)
    try:
        return bench(args, work)
    finally:
        for process in load:
            process.kill()
            process.wait()
        shutil.rmtree(work, ignore_errors=True)
        if display is not None:
            display.stop()


def bench(args: argparse.Namespace, work: Path) -> int:
    import napari

    import napari_cgs.panel.session as _session
    from cgs_engine.retrain.worker import worker_threads
    from napari_cgs.panel.dock import CGSPanel

    _session.SESSION_HOME = work / "sessions"  # the bench's painting must not land in the user's sessions
    started = time.perf_counter()
    model, model_text = base_model(work)
    project = make_project(work, model, args.cases, args.unlabeled)
    corrected, unlabeled = len(project.corrections()), len(project.unlabeled())
    print(f"project: {corrected} corrected volumes, {unlabeled} unlabeled scans")
    print(f"base model: {model_text}; set up in {time.perf_counter() - started:.0f} s")

    viewer = napari.Viewer(show=True)
    panel = CGSPanel(viewer)
    viewer.window.add_dock_widget(panel, name="CGS", area="right")
    viewer.open_sample("napari-cgs", "openkbp-ct")
    section = panel.retrain_section
    section.open_project(project.folder)
    depth = viewer.dims.nsteps[0]
    painter = start_painting(viewer, panel) if args.paint else None

    def scroll() -> None:
        viewer.dims.set_current_step(0, (viewer.dims.current_step[0] + 1) % depth)

    from qtpy.QtCore import QTimer

    scroller = QTimer()
    scroller.setInterval(SCROLL_MS)
    scroller.timeout.connect(scroll)
    if not args.no_scroll:
        scroller.start()
    activity = ("idle" if args.no_scroll else "scrolling") + (", painting" if painter else "")
    activity += f", {args.load} busy process(es) beside" if args.load else ""
    probe = Probe()
    run_event_loop(2.0)  # first paint, layer loading
    idle = probe.run(args.idle_seconds)
    idle_cpu = probe.cpu_share
    print(
        f"no retrain, {activity} ({args.idle_seconds:.0f} s): {describe(idle)}; GUI thread CPU {idle_cpu:.0%}"
    )

    seen: list[dict] = []
    section.retrain_message.connect(seen.append)
    process = section.start_retrain(minutes=(args.seconds + 120) / 60)
    if process is None:
        print(f"retrain did not start: {section.status_label.text()}")
        return 1

    def when_training(quit_loop) -> None:
        section.retrain_message.connect(lambda m: quit_loop() if m["kind"] in ("start", "failed") else None)

    run_event_loop(300, until=when_training)
    if not seen or seen[-1]["kind"] == "failed":
        print(f"retrain did not reach training: {section.status_label.text()}")
        return 1
    print(f"worker: pid {process.pid}, {worker_threads()} thread(s), nice 10; {seen[-1].get('runtime')}")
    busy = probe.run(args.seconds)
    steps = max([m["step"] for m in seen if m["kind"] == "step"], default=0)
    busy_cpu = probe.cpu_share
    print(f"retraining, {activity} ({args.seconds:.0f} s): {describe(busy)}; GUI thread CPU {busy_cpu:.0%}")
    print(f"retrain steps done while probing: {steps} (logged every 10 steps)")
    saved = save_results(
        "gui_responsiveness",
        {
            "command": " ".join(sys.argv),
            "activity": activity,
            "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            "no_retrain": {**figures(idle), "gui_thread_cpu_share": idle_cpu},
            "retraining": {**figures(busy), "gui_thread_cpu_share": busy_cpu},
            "retrain_steps_while_probing": steps,
        },
    )
    print(f"saved {saved}")

    section.cancel_retrain()
    ended: list[dict] = []
    section.retrain_ended.connect(ended.append)
    run_event_loop(600, until=lambda quit_loop: section.retrain_ended.connect(lambda m: quit_loop()))
    if ended:
        print(f"outcome: {section.status_label.text()}")
    else:
        process.kill()
        print("outcome: the worker did not end within 10 minutes of the cancel; killed")
    scroller.stop()
    if painter is not None:
        painter.stop()
    viewer.close()
    return 0


def start_painting(viewer, panel):
    """Pre-segment the open CT with the panel, then paint a stroke on its labels every second."""
    from qtpy.QtCore import QTimer

    from napari_cgs.panel.prediction_layers import labels_layer_name

    image = panel.image_layer
    done: list = []
    panel.prediction_finished.connect(done.append)
    panel.presegment()
    run_event_loop(600, until=lambda quit_loop: panel.prediction_finished.connect(lambda r: quit_loop()))
    if not done or done[0] is None:
        raise SystemExit(f"pre-segmentation failed: {panel.status_label.text()}")
    labels = viewer.layers[labels_layer_name(image)]
    labels.brush_size = 9
    rng = np.random.default_rng(0)
    _, height, width = image.data.shape

    def stroke() -> None:
        z = int(viewer.dims.current_step[0])
        labels.paint(
            (
                z,
                int(rng.integers(height // 4, 3 * height // 4)),
                int(rng.integers(width // 4, 3 * width // 4)),
            ),
            int(rng.integers(1, len(panel.class_names))),
        )

    timer = QTimer()
    timer.setInterval(1000)
    timer.timeout.connect(stroke)
    timer.start()
    print(f"painting: a stroke every second on {labels.name} ({image.data.shape}), autosave 2 s after each")
    return timer


if __name__ == "__main__":
    raise SystemExit(main())
