"""Segment-editor tools: correct one organ of a label map, in millimetres and millilitres.

Every tool works on one class id, moves voxels only between that class and background (0), never
touches another organ's voxels, and returns the new label map with a mask of exactly the voxels it
changed (:class:`EditResult`). ``region`` (3 slices in [z, y, x] order, or a boolean mask of the
volume's shape) limits where voxels may change; islands, holes and distances are still measured on
the whole organ, so a box never cuts an island in two nor passes its own walls off as the organ's edge.
"""

from cgs_engine.edit.checks import EditError
from cgs_engine.edit.holes import fill_holes
from cgs_engine.edit.interpolate import fill_between_slices
from cgs_engine.edit.islands import keep_largest_island, remove_small_islands
from cgs_engine.edit.margins import grow, shrink
from cgs_engine.edit.prompts import box_from_drawing, box_prompt, click, why_click_does_nothing
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.smoothing import smooth

__all__ = [
    "EditError",
    "EditResult",
    "box_from_drawing",
    "box_prompt",
    "click",
    "why_click_does_nothing",
    "fill_between_slices",
    "fill_holes",
    "grow",
    "keep_largest_island",
    "remove_small_islands",
    "shrink",
    "smooth",
]
