"""Class names and colours: their limits, the checks every store, project and table applies, and
the default colours."""

from __future__ import annotations

from collections.abc import Sequence

from cgs_engine.errors import CGSError

MAX_CLASSES = 256  # labels are stored as uint8

# Background black, then well-separated hues; extended by a golden-angle walk when a data set
# has more classes than listed here.
BASE_COLORS = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (170, 110, 40),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (0, 0, 128),
)


class ClassTableError(CGSError, ValueError):
    """Class names, colours or a class table that cannot be used; one line naming the file or
    the value. A ValueError, as the readers of stores and projects treat bad settings."""


def check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str):
        raise ClassTableError("class names must be a list of strings, not a single string")
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ClassTableError(f"need background plus at least one class, got {names}")
    if len(names) > MAX_CLASSES:
        raise ClassTableError(f"at most {MAX_CLASSES} classes fit in uint8 labels, got {len(names)}")
    if any(not name.strip() for name in names):
        raise ClassTableError(f"class names must not be empty: {names}")
    if len(set(names)) != len(names):
        raise ClassTableError(f"class names must be unique: {names}")
    return names


def default_colors(count: int) -> list[list[int]]:
    colors = [list(color) for color in BASE_COLORS[:count]]
    for index in range(len(colors), count):
        hue = (index * 0.618033988749895) % 1.0
        colors.append(_hsv_to_rgb(hue, 0.75, 0.95))
    return colors


def check_colors(colors: Sequence[Sequence[int]] | None, count: int) -> list[list[int]]:
    if colors is None:
        return default_colors(count)
    checked = [[int(channel) for channel in color] for color in colors]
    if len(checked) != count:
        raise ClassTableError(f"need one colour per class ({count}), got {len(checked)}")
    for color in checked:
        if len(color) != 3 or not all(0 <= channel <= 255 for channel in color):
            raise ClassTableError(f"colours must be RGB triples in 0..255, got {color}")
    return checked


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> list[int]:
    sector = int(hue * 6.0) % 6
    fraction = hue * 6.0 - int(hue * 6.0)
    p = value * (1 - saturation)
    q = value * (1 - saturation * fraction)
    t = value * (1 - saturation * (1 - fraction))
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][sector]
    return [round(channel * 255) for channel in rgb]
