"""The segment-editor tools by name: what `cgs edit TOOL` and the panel's Correct buttons run.

Each tool names its engine function, the one amount it takes (if any) and the keywords it passes on;
the CLI checks its options against this table and the panel picks its spin box from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cgs_engine.edit.holes import fill_holes
from cgs_engine.edit.interpolate import fill_between_slices
from cgs_engine.edit.islands import keep_largest_island, remove_small_islands
from cgs_engine.edit.margins import grow, shrink
from cgs_engine.edit.result import EditResult
from cgs_engine.edit.smoothing import smooth
from cgs_engine.edit.target import region_mask
from cgs_engine.orientation import Reorientation


@dataclass(frozen=True)
class Amount:
    """The number a tool needs: passed before the spacing, in ``unit`` (``mm`` or ``ml``)."""

    name: str
    unit: str
    meaning: str  # as the CLI asks for it: "the sigma in millimetres"


@dataclass(frozen=True)
class Choice:
    """A keyword chosen from a few written values (``--axis z`` passes ``axis=0``)."""

    name: str
    values: Mapping[str, Any]  # as written -> as passed to the function
    default: str

    def spoken(self) -> str:
        """The written values as a sentence ends them: "z, y or x"."""
        *first, last = self.values
        return f"{', '.join(first)} or {last}"


SIGMA = Amount("sigma", "mm", "the sigma in millimetres")
MARGIN = Amount("margin", "mm", "the margin in millimetres")
SMALLEST_ISLAND = Amount("smallest island", "ml", "the smallest island to keep, in millilitres")
AXIS = Choice("axis", {"z": 0, "y": 1, "x": 2}, "z")
MODE = Choice("mode", {"slice": "slice", "3d": "3d"}, "slice")


@dataclass(frozen=True)
class EditTool:
    name: str
    function: Callable[..., EditResult]
    description: str
    amount: Amount | None = None
    choices: tuple[Choice, ...] = ()
    keywords: tuple[str, ...] = ()  # further keywords the function takes besides region (and the choices)

    def run(
        self, labels, class_id: int, spacing_zyx, region=None, amount=None, geometry=None, **settings
    ) -> EditResult:
        """The tool on ``class_id``; ``settings`` it does not take are left out (a caller may pass
        ``interpolate`` or ``axis`` to every tool).

        ``geometry`` (the scan's): the tool works on the patient's axes (``axis`` 0 is the patient's
        z, "each axial slice" the patient's axial slices) whatever order the file stores them in;
        without it the arrays are taken as stored axially. A sagittally stored scan was filled on
        its sagittal slices, and contour interpolation filled a feet-first scan otherwise than the
        same scan stored head-first (26 of 120 voxels)."""
        turn = None if geometry is None else Reorientation.of(geometry)
        if turn is not None and not turn.is_identity:
            labels = np.asarray(labels)
            # a box of stored indices, checked, as a mask to turn with the labels
            canonical_labels, canonical_region = turn.canonical_copies(
                labels, region_mask(region, labels.shape)
            )
            spacing = turn.canonical_geometry(geometry, labels.shape).spacing[::-1]
            result = self.run(canonical_labels, class_id, spacing, canonical_region, amount, **settings)
            return EditResult(
                np.ascontiguousarray(turn.from_canonical(result.labels)),
                np.ascontiguousarray(turn.from_canonical(result.changed)),
            )
        taken = {c.name for c in self.choices} | set(self.keywords)
        kwargs = {key: value for key, value in settings.items() if key in taken}
        if self.amount is None:
            return self.function(labels, class_id, region=region, **kwargs)
        return self.function(labels, class_id, amount, spacing_zyx, region=region, **kwargs)


EDIT_TOOLS: dict[str, EditTool] = {
    tool.name: tool
    for tool in (
        EditTool(
            "fill-between-slices",
            fill_between_slices,
            "fill the slices between drawn ones by contour interpolation",
            choices=(AXIS,),
            keywords=("interpolate",),
        ),
        EditTool("keep-largest", keep_largest_island, "keep only the organ's largest connected piece"),
        EditTool(
            "remove-islands",
            remove_small_islands,
            "remove the organ's pieces smaller than a volume",
            amount=SMALLEST_ISLAND,
        ),
        EditTool("fill-holes", fill_holes, "fill holes inside the organ", choices=(MODE, AXIS)),
        EditTool("smooth", smooth, "smooth the organ's surface (Gaussian)", amount=SIGMA),
        EditTool("grow", grow, "add a margin around the organ, never over another organ", amount=MARGIN),
        EditTool("shrink", shrink, "take a margin off the organ", amount=MARGIN),
    )
}
