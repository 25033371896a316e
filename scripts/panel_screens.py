"""Pictures of the CGS panel in each state a user meets, docked from the Plugins menu, at two window sizes.

States: ``fresh`` (the bundled CT open, nothing run), ``presegmented`` (the whole slice with
labels and the disagreement outline), ``reviewing`` (a region of the queue in focus, two
decided), ``export`` (the Save section after an export name it cannot write was refused),
``restored`` (napari reopened on the same CT: the session comes back), ``worklist``
(a folder of two scans ranked: the CT and an MR-like copy the model was not trained on, ranked
last with the reason), ``renumbered`` (the CT saved as a corrected volume into a project whose
classes are numbered otherwise: stored organ by organ, and said so), ``retraining``
(a retrain of the bundled model running in its worker process) and ``outcome`` (after Cancel:
the version kept or not, and why). Each picture is the whole napari window; the panel is
scrolled to the section that state is about. For every state the layout is checked
(``napari_cgs.panel.fit.layout_problems``: nothing cut off at the dock's right edge) and the script
exits with 1 if anything is.

    .venv/bin/python scripts/panel_screens.py [--out docs/screens] [--sizes 1280x800 1920x1080]

Without a display it starts its own Xvfb. Sessions and the retraining project go to a
temporary folder; the bundled CT is copied there so its session sits beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

STATES = (
    "fresh",
    "presegmented",
    "reviewing",
    "export",
    "closed",
    "restored",
    "worklist",
    "retraining",
    "outcome",
    "switched",
    "renumbered",
)
WAIT_S = 900


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screens"), help="folder for the PNG files")
    parser.add_argument("--sizes", nargs="+", default=["1280x800", "1920x1080"], help="window sizes, WxH")
    parser.add_argument(
        "--states", nargs="+", default=list(STATES), choices=STATES, help="which states to render"
    )
    parser.add_argument("--retrain-minutes", type=float, default=10.0, help="the retrain's time budget")
    return parser.parse_args(argv)


def process_events(seconds: float, until=None) -> bool:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.02)
    return until is None


class Shooter:
    """One window size: a napari viewer with the panel docked, and the pictures taken of it."""

    def __init__(self, size: tuple[int, int], out: Path, work: Path) -> None:
        self.size, self.out, self.work = size, out, work
        self.problems: list[str] = []
        self.viewer = self.panel = self.image = None

    def open(self, ct: Path, dock_first: bool = True) -> None:
        import napari

        viewer = napari.Viewer(title="napari-cgs", show=True)
        viewer.window._qt_window.resize(*self.size)
        process_events(0.5)
        if dock_first:
            _, self.panel = viewer.window.add_plugin_dock_widget("napari-cgs", "CGS")
        layers = viewer.open(str(ct), plugin="napari-cgs")
        self.image = layers[0]
        if not dock_first:
            _, self.panel = viewer.window.add_plugin_dock_widget("napari-cgs", "CGS")
        self.viewer = viewer
        process_events(1.5)

    def close(self) -> None:
        self.panel.autosave.save_if_changed(wait=True)
        self.panel.autosave.stop()
        self.viewer.close()
        self.viewer = self.panel = None
        process_events(0.5)

    def scroll_to(self, widget) -> None:
        from qtpy.QtWidgets import QScrollArea

        scroll = self.panel.findChild(QScrollArea)
        scroll.verticalScrollBar().setValue(widget.mapTo(scroll.widget(), widget.rect().topLeft()).y() - 4)
        process_events(0.3)

    def shoot(self, state: str) -> Path:
        from napari_cgs.panel.fit import layout_problems

        process_events(0.8)
        width, height = self.size
        path = self.out / f"panel-{state}-{width}x{height}.png"
        self.viewer.screenshot(path=str(path), canvas_only=False, flash=False)
        found = layout_problems(self.panel)
        self.problems += [f"{path.name}: {problem}" for problem in found]
        print(f"wrote {path}" + (f" ({len(found)} layout problems)" if found else ""), flush=True)
        return path

    def presegment(self) -> None:
        job = self.panel.presegment()
        if job is None or not process_events(WAIT_S, until=lambda: job.finished):
            raise SystemExit(
                f"panel_screens: pre-segmentation did not finish: {self.panel.status_label.text()}"
            )
        process_events(1.0)


def render(size: tuple[int, int], states: list[str], args: argparse.Namespace, work: Path) -> list[str]:
    from napari_cgs._sample_data import SAMPLE_CT

    ct = work / "openkbp_pt_222.nii.gz"
    if not ct.exists():
        shutil.copy(SAMPLE_CT, ct)
    for stale in work.glob("openkbp_pt_222.cgs-*"):
        stale.unlink()  # every size starts without a session
    shooter = Shooter(size, args.out, work)
    shooter.open(ct)
    panel = shooter.panel
    if "fresh" in states:
        shooter.shoot("fresh")
    shooter.presegment()
    panel.display.whole_slice()
    if "presegmented" in states:
        shooter.scroll_to(panel.status_label)
        shooter.shoot("presegmented")
    panel.review.accept()
    panel.review.skip()
    panel.display.labels_style.setCurrentText("Outlines")  # the radiotherapy way of reading them
    if "reviewing" in states:
        shooter.scroll_to(panel.queue)
        shooter.shoot("reviewing")
    if "export" in states:
        panel.export(work / "PT222_LABELS.NII.GZ")  # refused by name, before any question
        shooter.scroll_to(panel.export_status)
        shooter.shoot("export")
    if "closed" in states:  # the CT closed: its layers go with it, its review is saved
        shooter.viewer.layers.remove(shooter.image)
        shooter.scroll_to(panel.status_label)
        shooter.shoot("closed")
    shooter.close()
    shooter.open(ct, dock_first=False)  # napari reopened: the CT first, then the panel
    panel = shooter.panel
    if "restored" in states:
        shooter.shoot("restored")
    if "worklist" in states:
        worklist_state(shooter, ct, work)
    if "retraining" in states or "outcome" in states:
        retrain_states(shooter, states, args, work)
    if "switched" in states:
        switched_state(shooter, ct, work)
    if "renumbered" in states:
        renumbered_state(shooter, work)
    shooter.close()
    return shooter.problems


def renumbered_state(shooter: Shooter, work: Path) -> None:
    """The restored CT added to a project created from a model that numbers the organs otherwise."""
    from cgs_engine.normalize import Normalization
    from cgs_engine.project import Project

    panel = shooter.panel
    normalization = Normalization.from_dict(panel.checkpoint.normalization)
    section = panel.retrain_section
    names = list(panel.class_names)
    folder = work / f"renumbered-{shooter.size[0]}"
    shutil.rmtree(folder, ignore_errors=True)
    Project.create(folder, [names[0], *reversed(names[1:])], normalization)
    saved = []
    section.correction_added.connect(saved.append)
    if section.open_project(folder) is None or not section.add_correction():
        raise SystemExit(f"panel_screens: not added: {section.status_label.text()}")
    if not process_events(WAIT_S, until=lambda: bool(saved) or not section._busy):
        raise SystemExit("panel_screens: the correction was not saved in time")
    process_events(0.5)
    shooter.scroll_to(section.status_label)
    shooter.shoot("renumbered")


def switched_state(shooter: Shooter, ct: Path, work: Path) -> None:
    """Another scan chosen while the CT is pre-segmented: the correction tools wait, and say why."""
    panel = shooter.panel
    other = work / "openkbp_pt_222_second_read.nii.gz"
    shutil.copy(ct, other)
    second = shooter.viewer.open(str(other), plugin="napari-cgs")[0]
    panel.select_image(shooter.image)
    process_events(1.0)
    job = panel.presegment()
    panel.select_image(second)
    panel.correct_section.apply_tool("grow")
    shooter.scroll_to(panel.correct_section.tool_buttons["grow"])
    shooter.shoot("switched")
    panel.cancel()
    process_events(WAIT_S, until=lambda: job is None or job.finished)
    process_events(1.0)


def worklist_state(shooter: Shooter, ct: Path, work: Path) -> None:
    """The worklist of a folder holding the CT and an MR-like copy of it (no air below 0, so the
    modality guess says MR): the copy is ranked last, and its item says why."""
    import numpy as np
    import SimpleITK as sitk

    folder = work / "worklist"
    if not folder.exists():
        folder.mkdir()
        shutil.copy(ct, folder / ct.name)
        image = sitk.ReadImage(str(ct))
        mr_like = sitk.GetImageFromArray(np.clip(sitk.GetArrayFromImage(image) + 1024, 0, None))
        mr_like.CopyInformation(image)
        sitk.WriteImage(mr_like, str(folder / "mr_like.nii.gz"))
    section = shooter.panel.worklist_section
    done = []
    section.finished.connect(done.append)
    if section.score_folder(folder) is None or not process_events(WAIT_S, until=lambda: bool(done)):
        raise SystemExit(f"panel_screens: the worklist did not finish: {section.status.text()}")
    shooter.scroll_to(section)
    shooter.shoot("worklist")


def retrain_states(shooter: Shooter, states: list[str], args: argparse.Namespace, work: Path) -> None:
    panel = shooter.panel
    section = panel.retrain_section
    project_folder = work / f"project-{shooter.size[0]}"
    shutil.rmtree(project_folder, ignore_errors=True)
    if section.create_project(project_folder) is None or not section.add_correction():
        raise SystemExit(f"panel_screens: no project: {section.status_label.text()}")
    process_events(WAIT_S, until=lambda: not section._busy)
    steps = []
    section.retrain_message.connect(
        lambda message: steps.append(message) if message["kind"] == "step" else None
    )
    if section.start_retrain(minutes=args.retrain_minutes) is None:
        raise SystemExit(f"panel_screens: the retrain did not start: {section.status_label.text()}")
    if not process_events(WAIT_S, until=lambda: bool(steps) or not section.retraining):
        raise SystemExit("panel_screens: the retrain logged no step in time")
    if "retraining" in states:
        shooter.scroll_to(section)
        shooter.shoot("retraining")
    ended = []
    section.retrain_ended.connect(ended.append)
    section.cancel_retrain()
    if not process_events(WAIT_S, until=lambda: bool(ended)):
        raise SystemExit("panel_screens: the retrain did not end after Cancel")
    if "outcome" in states:
        shooter.scroll_to(section)
        shooter.shoot("outcome")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [tuple(int(n) for n in size.split("x")) for size in args.sizes]
    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay.display import Display

        width = max(w for w, _ in sizes) + 80
        height = max(h for _, h in sizes) + 80
        display = Display(backend="xvfb", size=(width, height), color_depth=24)
        display.start()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cgs-panel-screens-"))
    import napari_cgs.panel.session as _session

    _session.SESSION_HOME = work / "sessions"
    problems = []
    try:
        for size in sizes:
            problems += render(size, list(args.states), args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if display is not None:
            display.stop()
    for problem in problems:
        print(f"layout: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
