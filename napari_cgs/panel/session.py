"""Autosave and restore of review sessions (labels, review mask, queue position).

Where: next to the image file (``cgs_engine.review.session_path_for``) when the image came
from a writable folder; otherwise (no file, a read-only folder, or a sample bundled inside the
plugin) under ``~/.napari-cgs/sessions/<fingerprint>.cgs-session.h5``.

When: at every accept/skip and export, shortly after each paint stroke, when the window closes,
and every :data:`AUTOSAVE_MS` while something changed. Files are written off the GUI thread.
The pre-segmentation's maps and generalist labels go once per run to a second file beside the
session (``cgs_engine.review.prediction_file``), so a restore shows them again.

A session file of other voxels under the usual name (another scan with the same name in the
folder, the image changed on disk since, a damaged file) is never overwritten: the image's
session goes to ``<stem>.<fingerprint>.cgs-session.h5`` beside it and the panel says so.

Two windows on one image (two napari processes): each panel remembers which write of the file it
last read or wrote, and a save finds the file as it left it or does not overwrite it. Its labels
then go to ``<stem>.conflict-<time>.cgs-session.h5`` beside it from then on, and the panel says so:
the other window's work stays where it was, and neither is lost.

Restore: the panel restores automatically when an image with a matching session (same
fingerprint: same voxels and geometry) is selected and it has no labels layer yet, so nothing
the user sees is overwritten; otherwise the "Restore session" button does it on demand.
"""

from __future__ import annotations

import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal

from cgs_engine.review import (
    Session,
    SessionError,
    image_fingerprint,
    load_session,
    save_session,
)
from cgs_engine.review.prediction_file import (
    SavedPrediction,
    load_prediction,
    prediction_path_for,
    save_prediction,
)
from cgs_engine.review.session import (
    SESSION_SUFFIX,
    UNCHECKED,
    SessionConflictError,
    session_path_of_image,
    session_write_id,
)
from napari_cgs._layers import SOURCE_KEY, read_geometry

AUTOSAVE_MS = 60_000
SESSION_HOME = Path.home() / ".napari-cgs" / "sessions"
PLUGIN_FOLDER = Path(__file__).resolve().parents[1]  # napari_cgs/: its bundled samples are read-only


def fingerprint_of(image_layer: Any) -> str:
    return image_fingerprint(image_layer.data, read_geometry(image_layer))


def session_file_for(image_layer: Any, fingerprint: str) -> Path:
    """Beside the image's source file when that folder is ours to write, else in the home folder;
    never a session file of other voxels (see ``session_path_of_image``)."""
    return session_place(image_layer, fingerprint)[0]


def session_place(image_layer: Any, fingerprint: str) -> tuple[Path, str]:
    """The session file of this image, and a one-line note when its usual name was taken."""
    source = (image_layer.metadata or {}).get(SOURCE_KEY)
    if source:
        path = Path(source).resolve()
        folder = path.parent
        if path.exists() and PLUGIN_FOLDER not in path.parents and os.access(folder, os.W_OK):
            return session_path_of_image(path, fingerprint)
    return SESSION_HOME / f"{fingerprint}.cgs-session.h5", ""


def find_session(image_layer: Any) -> Session | None:
    """The saved session of this exact image, or None (missing, corrupt or for other voxels)."""
    fingerprint = fingerprint_of(image_layer)
    path = session_file_for(image_layer, fingerprint)
    if not path.is_file():
        return None
    try:
        return load_session(path, expected_fingerprint=fingerprint)
    except SessionError:
        return None


def saved_prediction_of(session: Session) -> tuple[SavedPrediction | None, str]:
    """The maps and generalist labels saved with this session's labels, or None and why not."""
    if not session.prediction_id:
        return None, "the session was saved without its maps"
    try:
        return load_prediction(
            prediction_path_for(session.path), session.fingerprint, session.prediction_id
        ), ""
    except SessionError as error:
        return None, str(error)


class SessionAutosave(QObject):
    """Saves the session of the image under review when asked, and on a timer when it changed.

    The snapshot (copies of the labels and masks) is taken on the GUI thread, so it is consistent;
    the file is written on a background thread (h5py lets go of the GIL while it compresses), so a
    save never stalls the viewer. Writes happen one at a time, in order. ``flush()`` waits for them
    (the window is closing, a test reads the file).
    """

    saved = Signal(str)  # path written
    failed = Signal(str)  # one-line reason
    diverted = Signal(str)  # path of the conflict file: another window saved the usual one meanwhile

    def __init__(self, snapshot, parent: QObject | None = None, interval_ms: int = AUTOSAVE_MS) -> None:
        """``snapshot()`` returns the save_session keyword arguments (without path), or None."""
        super().__init__(parent)
        self.snapshot = snapshot
        self.dirty = False
        self.path: Path | None = None
        self.note = ""
        # per session file, its write_id as this panel last read or wrote it (the writer thread
        # may still finish a save of the image followed before)
        self.seen: dict[Path, str | None] = {}
        self.layer_of: dict[Path, Any] = {}  # per session file, the image layer it was last written for
        self.conflict_files: dict[Path, Path] = {}  # usual session file -> this panel's conflict file for it
        self._layer_id: Any = None  # that of the image followed
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cgs-session-save")
        self._pending: Future | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.save_if_changed)
        self.timer.start()

    def follow(self, image_layer: Any) -> str:
        """Save to this image's session file from now on; returns the image fingerprint.
        ``note`` says when the usual file name belongs to other voxels (kept, not overwritten)."""
        fingerprint = fingerprint_of(image_layer)
        self.path, self.note = session_place(image_layer, fingerprint)
        self.path = self.conflict_files.get(
            self.path, self.path
        )  # once diverted, this panel's work goes on there
        self._layer_id = getattr(image_layer, "unique_id", None)
        if self.path not in self.seen:  # chosen again: still the write this panel knew
            self.seen[self.path] = session_write_id(self.path)
        return fingerprint

    def read(self, session: Session) -> None:
        """The panel took ``session`` (restored it): later saves replace that write of the file."""
        self.seen[Path(session.path)] = session.write_id

    def last_written_for(self, session: Session, image_layer: Any) -> bool:
        """Whether this panel last wrote ``session``'s file for this image layer (or never wrote it):
        only then are labels on screen that differ from it this image's newer work, not a twin
        layer's of the same file. (Where another window wrote the file since, the next save finds
        that out and goes to a conflict file.)"""
        return self.layer_of.get(Path(session.path)) in (None, getattr(image_layer, "unique_id", None))

    def mark_changed(self) -> None:
        self.dirty = True

    def save_if_changed(self, wait: bool = False) -> Path | None:
        return self.save_now(wait) if self.dirty else None

    def save_now(self, wait: bool = False) -> Path | None:
        """Start writing the session; returns the path it goes to (None: nothing to save).

        ``wait=True`` returns once written, with None if writing failed.
        """
        contents = self.snapshot()
        if contents is None or self.path is None:
            return None
        path = self.path
        self.dirty = False
        self._pending = self._writer.submit(self._write, path, contents, self._layer_id)
        return self._pending.result() if wait else path

    def save_prediction(self, contents: dict[str, Any]) -> Path | None:
        """Start writing a pre-segmentation's maps (``save_prediction`` keywords without path) beside
        the session; queued before the session writes that follow, so they refer to a finished file."""
        if self.path is None:
            return None
        path = prediction_path_for(self.path)
        self._pending = self._writer.submit(self._write_prediction, path, contents)
        return path

    def _write(self, path: Path, contents: dict[str, Any], layer_id: Any = None) -> Path | None:
        write_id = uuid.uuid4().hex
        expected = self.seen.get(path, UNCHECKED)
        if expected is not UNCHECKED and not path.exists():
            expected = None  # deleted since (by the user): nobody else's work is there to keep
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                written = save_session(path, **contents, write_id=write_id, replaces=expected)
            except SessionConflictError:
                # another window saved this image's session meanwhile: both works are kept
                written = save_session(conflict_path(path), **contents, write_id=write_id, replaces=None)
                if self.path == path:
                    self.path = written
                self.seen[written] = write_id
                self.layer_of[written] = layer_id
                self.conflict_files[path] = written
                self.diverted.emit(str(written))
                return written
        except (SessionError, OSError) as error:
            self.dirty = True  # try again at the next change or tick
            self.failed.emit(str(error))
            return None
        self.seen[path] = write_id
        self.layer_of[path] = layer_id
        self.saved.emit(str(written))
        return written

    def _write_prediction(self, path: Path, contents: dict[str, Any]) -> Path | None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return save_prediction(path, **contents)
        except (SessionError, OSError) as error:
            self.failed.emit(f"the maps were not saved: {error}")
            return None

    def flush(self, timeout_s: float = 60) -> None:
        """Wait until every write started so far has finished."""
        pending = self._pending
        if pending is not None:
            pending.result(timeout=timeout_s)

    def stop(self) -> None:
        self.timer.stop()
        self.flush()


def conflict_path(path: Path) -> Path:
    """A new session file beside ``path`` for the labels that must not overwrite it."""
    stem = path.name[: -len(SESSION_SUFFIX)] if path.name.endswith(SESSION_SUFFIX) else path.stem
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{stem}.conflict-{stamp}{SESSION_SUFFIX}")
    number = 2
    while candidate.exists():
        candidate = path.with_name(f"{stem}.conflict-{stamp}-{number}{SESSION_SUFFIX}")
        number += 1
    return candidate


def is_conflict_file(path: str | os.PathLike) -> bool:
    return ".conflict-" in Path(path).name
