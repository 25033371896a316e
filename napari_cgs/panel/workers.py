"""Pre-segmentation in a napari thread worker: progress in the activity dock, a cancel that really stops.

The engine reports progress through a callback on the worker thread; ``ensure_main_thread``
hands each report to the Qt main thread, where the napari progress bar lives. Cancel sets an
event that the engine's cancel callback reads between slice batches (the engine then raises
``Cancelled``); napari's own task-status "cancel" (``worker.quit``) is honoured as well.
A cancelled run *returns* ``None`` instead of raising, so napari shows no error for it, and
``on_done(None)`` is called exactly once (superqt emits no ``returned`` after ``quit()``), and
never once the ``owner`` widget is gone: a viewer closed during a run deletes the panel's widgets,
and a result shown then raised "wrapped C/C++ object … has been deleted".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from superqt.utils import ensure_main_thread

from cgs_engine.infer.predictor import Cancelled, Prediction, Predictor
from cgs_engine.review.prediction import analyse_prediction
from cgs_engine.scope import check_scope
from cgs_engine.volume import Volume


@dataclass
class PredictionResult:
    """What the worker hands back: the prediction and the review queue found in it."""

    prediction: Prediction
    regions: list[Any]
    component_map: np.ndarray | None
    profile: np.ndarray | None
    scope_warnings: list[str] = field(default_factory=list)  # the scan is far from the training data


def run_prediction(
    get_predictor: Callable[[], Predictor],
    volume: Volume,
    report: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PredictionResult | None:
    """Predict and analyse ``volume``; ``None`` when cancelled. Runs on the worker thread."""
    try:
        predictor = get_predictor()
        if cancel is not None and cancel():
            return None
        prediction = predictor.predict(volume, maps=True, progress=report, cancel=cancel)
    except Cancelled:
        return None

    regions, component_map, profile = analyse_prediction(prediction)
    warnings = check_scope(volume, predictor.checkpoint.scope)
    return PredictionResult(prediction, regions, component_map, profile, warnings)


class PredictionJob:
    """One running pre-segmentation: the napari worker, its progress bar and its cancel switch."""

    def __init__(
        self,
        get_predictor: Callable[[], Predictor],
        volume: Volume,
        description: str,
        on_done: Callable[[PredictionResult | None], None],
        on_error: Callable[[Exception], None],
        owner: Any = None,
    ) -> None:
        self.owner = owner
        self.cancel_requested = threading.Event()
        self.finished = False
        self.progress_bar = progress(total=volume.shape[0], desc=description)

        @ensure_main_thread
        def show_progress(done: int, total: int) -> None:
            if self.finished:  # a late report queued behind the end of the run
                return
            if self.progress_bar.total != total:
                self.progress_bar.total = total
            self.progress_bar.update(done - self.progress_bar.n)

        self.worker = create_worker(
            run_prediction,
            get_predictor,
            volume,
            report=show_progress,
            cancel=self.should_stop,
            _start_thread=False,
        )
        self.on_done, self.on_error = on_done, on_error
        self._answered = False
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)

    def should_stop(self) -> bool:
        return self.cancel_requested.is_set() or self.worker.abort_requested

    def start(self) -> None:
        self.worker.start()

    def cancel(self) -> None:
        self.cancel_requested.set()
        self.worker.quit()

    def _returned(self, result: PredictionResult | None) -> None:
        self._answered = True
        if not self._owner_gone():
            self.on_done(result)

    def _errored(self, error: Exception) -> None:
        self._answered = True
        if not self._owner_gone():
            self.on_error(error)

    def _owner_gone(self) -> bool:
        return self.owner is not None and qt_object_deleted(self.owner)

    def _finished(self) -> None:
        # A worker that was asked to quit does not emit `returned`: report the cancel here.
        self.progress_bar.close()
        self.finished = True
        if not self._answered:
            self._answered = True
            if not self._owner_gone():
                self.on_done(None)


def qt_object_deleted(widget: Any) -> bool:
    """Whether the C++ side of a Qt object is gone (its window was closed), in any Qt binding."""
    try:
        widget.objectName()
    except RuntimeError:
        return True
    return False
