"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# tests/conftest.py -> parents[1] is the repository root; the data sits beside it in ../shared/data.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORKER_GRACE_MS = 120_000  # a pre-segmentation asked to quit stops within seconds


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (``CGS_SHARED_DATA`` overrides); the test is skipped when it is absent."""
    folder = Path(os.environ.get("CGS_SHARED_DATA") or DEFAULT_SHARED_DATA)
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder}")
    return folder


@pytest.fixture(autouse=True)
def _no_worker_thread_outlives_its_test():
    """Every napari/superqt thread worker a test started has ended before the next test begins
    (this runs after the test's viewer was closed; a late result is kept from closed widgets by the
    panel itself). Tests that never import superqt pay nothing."""
    yield
    qthreading = sys.modules.get("superqt.utils._qthreading")
    if qthreading is None or not qthreading.WorkerBase._worker_set:
        return
    qthreading.WorkerBase.await_workers(msecs=WORKER_GRACE_MS)
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()


_ENDED_CLEANLY = {"sessionfinish": False, "unconfigure": False}
_SESSION = {}


def pytest_sessionstart(session) -> None:
    _SESSION["session"] = session


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session, exitstatus):
    outcome = yield
    _ENDED_CLEANLY["sessionfinish"] = outcome.excinfo is None  # reports (junit XML) written


@pytest.hookimpl(hookwrapper=True)
def pytest_unconfigure(config):
    outcome = yield
    _ENDED_CLEANLY["unconfigure"] = outcome.excinfo is None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config) -> None:
    """End the test process as soon as pytest has reported, without Python's finalisation.

    CI once printed "1369 passed" and then died in glibc's heap check
    ("malloc_consolidate(): unaligned fastbin chunk detected", exit 2) while the interpreter
    tore down Qt, VisPy and torch in no set order; the same suite, run again here (once with
    glibc's malloc debugging, MALLOC_CHECK_=3, checking every free), passed and exited cleanly.
    Only when the session's end and every unconfigure hook ran without an exception (so that
    pytest's verdict, its summary and its reports are final) is the process ended with pytest's
    exit status, after Xvfb was stopped (pytest-xvfb stops it only at exit). Anything else takes
    the normal exit, which prints the error and fails the run. CGS_TEST_NORMAL_EXIT=1 always does.
    """

    def exit_now() -> None:
        session = _SESSION.get("session")
        if session is None or not all(_ENDED_CLEANLY.values()) or os.environ.get("CGS_TEST_NORMAL_EXIT"):
            return
        xvfb = sys.modules.get("pytest_xvfb")
        if xvfb is not None:
            xvfb.shutdown_xvfb()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(session.exitstatus))

    config.add_cleanup(exit_now)
