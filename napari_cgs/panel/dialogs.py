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


def confirm_discard_review(parent: Any, image_name: str, edited: int, accepted: int) -> bool:
    """Whether the user agrees that "Replace everything" discards their review of the image: its
    edited and accepted voxels become the model's again, and Ctrl+Z cannot bring the marks back
    (No is the default)."""
    answer = QMessageBox.question(
        parent,
        "Replace your review?",
        f"Replacing everything discards your review of {image_name}: {edited} voxels you edited and "
        f"{accepted} you accepted become the new prediction's, and Ctrl+Z cannot bring your review "
        "back. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
