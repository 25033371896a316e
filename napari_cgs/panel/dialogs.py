"""Questions the panel asks in a dialog. Callers look them up on this module at the moment of use,
so that tests can answer them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QMessageBox


def confirm_replace(parent: Any, path: Path) -> bool:
    """Whether the user agrees to replace the file at ``path`` (No is the default)."""
    answer = QMessageBox.question(
        parent,
        "Replace existing file?",
        f"{path}\nalready exists. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
