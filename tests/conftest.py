"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/conftest.py -> parents[1] is the repository root; the data sits beside it in ../shared/data.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (``CGS_SHARED_DATA`` overrides); the test is skipped when it is absent."""
    folder = Path(os.environ.get("CGS_SHARED_DATA") or DEFAULT_SHARED_DATA)
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder}")
    return folder
