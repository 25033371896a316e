"""Keeping the panel inside its dock: texts that can wrap anywhere, fields that may shrink, and the check.

Qt wraps a label only at spaces, so one long word (a path, a 64-hex session file name) sets the
label's minimum width, and with it the whole panel's: the content then grows wider than the dock,
is cut off at the right edge and slides sideways when the keyboard focus moves. ``breakable``
gives such words break opportunities; ``fit_to_dock`` lets spin and combo boxes shrink below the
width of their longest value; ``layout_problems`` lists what a person would see cut off.
"""

from __future__ import annotations

import re
from typing import Any

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QLabel,
    QListWidget,
    QScrollArea,
    QWidget,
)

ZERO_WIDTH_SPACE = "\u200b"
LONG_WORD = 16  # characters: longer runs without a space get a break opportunity this often
FIELD_MIN_WIDTH = 84  # px: spin and combo boxes may shrink to this (they elide or scroll their text)
CONTROLS = (QAbstractButton, QComboBox, QAbstractSpinBox, QLabel, QListWidget)
_AFTER_SEPARATOR = re.compile(r"([/\\_.\-·:])")
_TAG = re.compile(r"<[^>]*>")


def breakable(text: str) -> str:
    """``text`` with zero-width spaces after separators and inside long words, so Qt can wrap it."""
    words = []
    for word in text.split(" "):
        if len(word) > LONG_WORD and not _TAG.search(word):
            word = _AFTER_SEPARATOR.sub(rf"\1{ZERO_WIDTH_SPACE}", word)
            pieces = [
                piece[i : i + LONG_WORD]
                for piece in word.split(ZERO_WIDTH_SPACE)
                for i in range(0, len(piece), LONG_WORD)
            ]
            word = ZERO_WIDTH_SPACE.join(pieces)
        words.append(word)
    return " ".join(words)


def plain(text: str) -> str:
    """What a person reads: the text without the zero-width spaces ``breakable`` added."""
    return text.replace(ZERO_WIDTH_SPACE, "")


def fit_to_dock(root: QWidget) -> None:
    """Let every spin and combo box under ``root`` shrink to FIELD_MIN_WIDTH when the dock is narrow."""
    for field in root.findChildren(QAbstractSpinBox) + root.findChildren(QComboBox):
        field.setMinimumWidth(min(FIELD_MIN_WIDTH, field.minimumSizeHint().width()))


def layout_problems(panel: QWidget) -> list[str]:
    """Controls and texts a person cannot fully see in the panel's scroll area, as readable lines.

    Checked: the content is not wider than the visible viewport; every visible control lies
    within the viewport's width; no label, button or list row has text cut off at the right.
    """
    scroll = panel.findChild(QScrollArea)
    if scroll is None:
        return ["the panel has no scroll area"]
    viewport, content = scroll.viewport(), scroll.widget()
    width = viewport.width()
    problems = []
    if content.width() > width:
        problems.append(f"content {content.width()} px wide in a {width} px view")
    for widget in content.findChildren(QWidget):
        if not widget.isVisibleTo(content) or widget.width() <= 0:
            continue
        right = widget.mapTo(viewport, widget.rect().topRight()).x()
        name = _describe(widget)
        left = widget.mapTo(viewport, widget.rect().topLeft()).x()
        if isinstance(widget, CONTROLS) and (right >= width or left < 0):
            problems.append(f"{name} reaches x = {right + 1} of a {width} px view")
        problems.extend(f"{name}: {issue}" for issue in _cut_text(widget))
    return problems


def _cut_text(widget: QWidget) -> list[str]:
    metrics = widget.fontMetrics()
    if isinstance(widget, QLabel) and widget.text() and not _TAG.search(widget.text()):
        room = widget.contentsRect().width() - 2 * widget.margin() - widget.indent() * (widget.indent() > 0)
        text = plain(widget.text())
        pieces = re.split(r"[\s\u200b]+", widget.text()) if widget.wordWrap() else text.splitlines()
        widest = max((metrics.horizontalAdvance(piece) for piece in pieces), default=0)
        if widest > room:
            return [f"text needs {widest} px, has {room}"]
    if isinstance(widget, QAbstractButton) and widget.text():
        needed = widget.minimumSizeHint().width()  # text, icon and margins (a radio's indicator too)
        if needed > widget.width():
            return [f"needs {needed} px, has {widget.width()}"]
    if isinstance(widget, QAbstractSpinBox) and widget.text():
        room = widget.lineEdit().width()
        needed = metrics.horizontalAdvance(widget.text()) + 4  # the line edit's own margins
        if needed > room:
            return [f"value {widget.text()!r} needs {needed} px, has {room}"]
    if isinstance(widget, QListWidget) and widget.wordWrap():
        room = widget.viewport().width()
        for row in range(widget.count()):
            for line in widget.item(row).text().splitlines():
                for word in line.split():
                    if metrics.horizontalAdvance(word) > room:
                        return [f"row {row + 1}: {word!r} wider than the list"]
    return []


def _describe(widget: Any) -> str:
    text = plain(widget.text()) if hasattr(widget, "text") and callable(widget.text) else ""
    text = text if isinstance(text, str) else ""
    short = (text[:40] + "…") if len(text) > 40 else text
    return f"{type(widget).__name__} {short!r}" if short else type(widget).__name__
