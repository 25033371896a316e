"""ITK's contour interpolation in a helper process, loaded before it is first needed.

Loading ITK's Python wrapping costs about 10 s of CPU (3 min on a 2-core machine shared by
several busy processes), nearly all of it holding Python's GIL: in the GUI's process, even on
a worker thread, the viewer then stalls for seconds at a time (measured: up to 71 s without a
tick of a 10 ms timer). Here it loads in a child process at low priority, as soon as a GUI
expects to need it; the first *Fill between slices* then takes milliseconds, and the GUI
process never imports ITK at all. The filter runs one call at a time in that process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from typing import Any

import numpy as np

from cgs_engine.edit.checks import EditError

HELPER_NICE = 10
READY = "ready"


def _serve(connection: Any) -> None:
    """The helper: lower its priority, load ITK, say so, then interpolate what it is sent until closed."""
    from cgs_engine.edit.interpolate import interpolate_in_process

    with contextlib.suppress(OSError):
        os.nice(HELPER_NICE)
    with contextlib.suppress(ImportError, AttributeError):  # a missing package is reported per call
        import itk

        itk.MorphologicalContourInterpolator  # noqa: B018 (the lazy wrapping loads on first access)
    connection.send(READY)
    while True:
        try:
            mask, axis, drawn_slices = connection.recv()
        except (EOFError, OSError):
            return
        try:
            connection.send(("ok", interpolate_in_process(mask, axis, drawn_slices)))
        except EditError as error:
            connection.send(("error", str(error)))


class InterpolationProcess:
    """Callable like ``interpolate_in_process``; the work happens in one helper process.

    The helper is a daemon: it never keeps the GUI from exiting (a ProcessPoolExecutor would
    wait at exit for ITK's slow teardown), and it is ended when the GUI process ends.
    """

    def __init__(self) -> None:
        self._process: Any | None = None
        self._connection: Any | None = None
        self._ready = False
        self._lock = threading.Lock()  # one call at a time on the pipe

    def start(self) -> None:
        """Start the helper and load ITK in it (returns at once; idempotent)."""
        with self._lock:
            if self._process is None or not self._process.is_alive():
                context = multiprocessing.get_context("spawn")
                self._connection, child = context.Pipe()
                self._process = context.Process(
                    target=_serve, args=(child,), daemon=True, name="cgs-contour-interpolation"
                )
                self._ready = False
                self._process.start()
                child.close()

    @property
    def ready(self) -> bool:
        """Whether ITK is loaded in the helper: the next call answers without the loading wait."""
        if not self._ready and self._connection is not None and self._lock.acquire(blocking=False):
            try:
                if self._connection.poll():
                    self._ready = self._connection.recv() == READY
            except (EOFError, OSError):
                pass
            finally:
                self._lock.release()
        return self._ready

    def __call__(self, mask: np.ndarray, axis: int, drawn_slices: np.ndarray) -> np.ndarray:
        self.start()
        with self._lock:
            try:
                if not self._ready:
                    self._ready = self._connection.recv() == READY  # waits for ITK to load
                self._connection.send((np.ascontiguousarray(mask), int(axis), np.asarray(drawn_slices)))
                kind, value = self._connection.recv()
            except (EOFError, OSError) as error:  # the helper died (out of memory, killed)
                self._stop_locked()
                raise EditError(
                    f"contour interpolation failed: its helper process ended ({type(error).__name__})"
                ) from None
        if kind == "error":
            raise EditError(value)
        return value

    def shutdown(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        self._ready = False
        if connection is not None:
            connection.close()
        if process is not None and process.is_alive():
            process.terminate()


_shared: InterpolationProcess | None = None


def shared_interpolation() -> InterpolationProcess:
    """The one helper of this process (a GUI needs one, however many panels it has)."""
    global _shared
    if _shared is None:
        _shared = InterpolationProcess()
    return _shared
