"""What the panel's sections that run engine calls in a thread worker have in common."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QGroupBox

from cgs_engine.errors import CGSError
from napari_cgs.panel.workers import qt_object_deleted


class WorkerSection(QGroupBox):
    """A section with a ``status`` label and at most one napari thread worker at a time.

    Subclasses set ``status`` (a QLabel), ``BUSY`` (what to say while a worker runs) and
    ``refresh()`` (enable or disable their controls). Signal: ``failed(str)``, the one-line reason.
    """

    failed = Signal(str)
    BUSY = "Busy with the previous task; wait for it to finish."

    def __init__(self, title: str, parent: Any | None = None) -> None:
        super().__init__(title, parent)
        self.worker: Any | None = None

    def refresh(self) -> None:
        raise NotImplementedError

    def _start(self, function: Callable, arguments: tuple, message: str, on_done: Callable[[Any], None]):
        if self.worker is not None:
            return self._report(self.BUSY)
        # Handlers given to create_worker itself: an "errored" connected afterwards would not stop
        # superqt from also re-raising the error in the Qt event loop.
        connections = {
            name: self._while_alive(handler)
            for name, handler in (
                ("returned", on_done),
                ("errored", self._errored),
                ("finished", self._finished),
            )
        }
        self.worker = create_worker(function, *arguments, _start_thread=False, _connect=connections)
        self.status.setText(message)
        self.refresh()
        self.worker.start()
        return self.worker

    def _while_alive(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """``handler``, skipped once napari closed the panel: a worker that ends after the window
        closed answered into deleted widgets ("wrapped C/C++ object … has been deleted")."""

        def guarded(*arguments: Any) -> Any:
            if qt_object_deleted(self):
                return None
            return handler(*arguments)

        return guarded

    def _errored(self, error: Exception) -> None:
        reason = str(error) if isinstance(error, CGSError) else f"{type(error).__name__}: {error}"
        self.status.setText(f"Failed: {reason}")
        self.failed.emit(reason)

    def _finished(self) -> None:
        self.worker = None
        self.refresh()

    def _report(self, text: str) -> None:
        self.status.setText(text)
        return None
