"""ITK's contour interpolation in a helper process, loaded before it is first needed.

Loading ITK's Python wrapping costs about 10 s of CPU (3 min on a 2-core machine shared by
several busy processes), nearly all of it holding Python's GIL: in the GUI's process, even on
a worker thread, the viewer then stalls for seconds at a time (measured: up to 71 s without a
tick of a 10 ms timer). Here it loads in a child process at low priority, as soon as a GUI
expects to need it; the first *Fill between slices* then takes milliseconds, and the GUI
process never imports ITK at all. The filter runs one call at a time in that process.

The helper is ``python -m cgs_engine.edit.interpolate_process``, talking pickles over its
stdin and stdout. (multiprocessing's "spawn" would run the GUI's main script again in the
child, and a script without an ``if __name__ == "__main__"`` guard would open a second
viewer.) It ends when its stdin closes, so it never outlives the GUI.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.edit.checks import EditError
from cgs_engine.edit.interpolate import interpolate_in_process

HELPER_NICE = 10
READY = "ready"


def serve(requests: Any, answers: Any) -> None:
    """The helper's loop: load ITK, say so, then interpolate each request until stdin closes."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(HELPER_NICE)
    with contextlib.suppress(ImportError, AttributeError):  # a missing package is reported per call
        import itk  # lazy: loaded here after os.nice, so the helper pays it at low priority

        itk.MorphologicalContourInterpolator  # noqa: B018 (the lazy wrapping loads on first access)
    _send(answers, READY)
    while True:
        try:
            mask, axis, drawn_slices = pickle.load(requests)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        try:
            _send(answers, ("ok", interpolate_in_process(mask, axis, drawn_slices)))
        except EditError as error:
            _send(answers, ("error", str(error)))


def _send(stream: Any, message: Any) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


class InterpolationProcess:
    """Callable like ``interpolate_in_process``; the work happens in one helper process."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._answers: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one call at a time
        atexit.register(self.shutdown)

    def start(self) -> None:
        """Start the helper and load ITK in it (returns at once; idempotent)."""
        with self._lock:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        package_root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        }
        self._ready.clear()
        self._answers = queue.Queue()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "cgs_engine.edit.interpolate_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        reader = threading.Thread(
            target=self._read,
            args=(self._process.stdout, self._answers),
            daemon=True,
            name="itk-helper-reader",
        )
        reader.start()

    def _read(self, stream: Any, answers: queue.Queue) -> None:
        """Reader thread: the helper's answers, in order; None once it has ended."""
        while True:
            try:
                message = pickle.load(stream)
            except (EOFError, OSError, pickle.UnpicklingError):
                answers.put(None)
                return
            if message == READY:
                self._ready.set()
            else:
                answers.put(message)

    @property
    def ready(self) -> bool:
        """Whether ITK is loaded in the helper: the next call answers without the loading wait."""
        return self._ready.is_set()

    def __call__(self, mask: np.ndarray, axis: int, drawn_slices: np.ndarray) -> np.ndarray:
        with self._lock:
            self._start_locked()
            try:
                _send(self._process.stdin, (np.ascontiguousarray(mask), int(axis), np.asarray(drawn_slices)))
                answer = self._answers.get()  # waits for ITK to load the first time
            except OSError:
                answer = None
            if answer is None:  # the helper died (out of memory, killed)
                self._stop_locked()
                raise EditError("contour interpolation failed: its helper process ended; try again")
        kind, value = answer
        if kind == "error":
            raise EditError(value)
        return value

    def shutdown(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        process, self._process = self._process, None
        self._ready.clear()
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the helper ends at the end of its input ...
            if process.poll() is None:
                process.terminate()  # ... or now, if it is still loading ITK
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


_shared: InterpolationProcess | None = None


def shared_interpolation() -> InterpolationProcess:
    """The one helper of this process (a GUI needs one, however many panels it has)."""
    global _shared
    if _shared is None:
        _shared = InterpolationProcess()
    return _shared


if __name__ == "__main__":
    # The answers keep the real stdout; anything a library prints goes to stderr instead.
    answers_stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, answers_stream)
