"""Where a user is in the review queue, what they decided, and which voxels they vouched for.

Navigation: ``position`` indexes ``regions``. :meth:`ReviewState.next` and :meth:`ReviewState.previous`
step through *all* regions in rank order (decided ones included, so a user can revisit them) and
do not wrap: at either end they return ``None`` and leave ``position`` on the first/last region,
so :meth:`current` stays valid. :meth:`next_pending` jumps forward to the next undecided region.

``review_mask`` (uint8: 0 unreviewed, 1 = ACCEPTED, 2 = EDITED) is what later tells training which
voxels a human has checked. Accepting a region marks its voxels ACCEPTED (or its bounding box
when no component map is at hand); :meth:`mark_edited` marks voxels EDITED. Skipping a region
that was accepted before keeps its voxels marked, because a person did look at them. (The panel
tracks live edits with ``cgs_engine.review.edits.EditTracker``, which also follows undo.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cgs_engine.review.regions import Region

STATUSES = ("pending", "accepted", "skipped")
# Values of a review mask. Training trusts both marks, and so does the retrain's gate: judged on
# EDITED voxels alone, the active model would be scored only where it was wrong.
UNREVIEWED, ACCEPTED, EDITED = 0, 1, 2


def review_mask_problem(array: np.ndarray) -> str | None:
    """Why ``array`` (read from a file a user gives) is no review mask to learn from, or None.
    One rule for `cgs project add-correction --review` and `cgs edit adapt --reviewed`: a binary
    mask saved as 0/255 has no review state, and an all-0 one nothing to learn from."""
    if not array.any():
        return "review mask is all 0 (no voxel reviewed): nothing to learn from"
    if int(array.max()) > EDITED:
        values = np.unique(array)
        shown = ", ".join(str(int(value)) for value in values[:6]) + (", ..." if len(values) > 6 else "")
        return (
            f"a review mask holds 0 (not reviewed), 1 (accepted) and 2 (drawn by you); this one holds {shown}"
        )
    return None


class ReviewState:
    def __init__(
        self,
        regions: Sequence[Region],
        shape: tuple[int, int, int] | None = None,
        review_mask: np.ndarray | None = None,
        status: dict[int, str] | None = None,
        position: int = 0,
    ) -> None:
        """Give ``shape`` for a fresh all-zero mask, or ``review_mask`` to continue an earlier review."""
        if review_mask is None:
            if shape is None:
                raise ValueError("ReviewState needs the volume shape or a review mask")
            review_mask = np.zeros(tuple(shape), dtype=np.uint8)
        elif shape is not None and tuple(shape) != review_mask.shape:
            raise ValueError(f"review mask shape {review_mask.shape} differs from shape {tuple(shape)}")
        if review_mask.ndim != 3:
            raise ValueError(f"review mask must be 3D [z, y, x], got shape {review_mask.shape}")
        self.regions: list[Region] = list(regions)
        self.review_mask: np.ndarray = review_mask.astype(np.uint8, copy=False)
        self._by_id = {region.id: region for region in self.regions}
        if len(self._by_id) != len(self.regions):
            raise ValueError("region ids must be unique")
        self.status: dict[int, str] = {region.id: "pending" for region in self.regions}
        for region_id, value in (status or {}).items():
            self._set_status(int(region_id), value)
        if self.regions and not 0 <= position < len(self.regions):
            raise ValueError(f"position {position} is outside the {len(self.regions)} regions")
        self.position: int = int(position) if self.regions else 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.review_mask.shape  # type: ignore[return-value]

    def region(self, region_id: int) -> Region:
        try:
            return self._by_id[region_id]
        except KeyError:
            raise KeyError(f"no region with id {region_id}") from None

    def current(self) -> Region | None:
        return self.regions[self.position] if self.regions else None

    def next(self) -> Region | None:
        """The region after the current one, or ``None`` at the end (position unchanged)."""
        if self.position + 1 >= len(self.regions):
            return None
        self.position += 1
        return self.regions[self.position]

    def previous(self) -> Region | None:
        """The region before the current one, or ``None`` at the start (position unchanged)."""
        if self.position == 0 or not self.regions:
            return None
        self.position -= 1
        return self.regions[self.position]

    def next_pending(self) -> Region | None:
        """The first pending region after the current one, or ``None`` when there is none (no wrap)."""
        for index in range(self.position + 1, len(self.regions)):
            if self.status[self.regions[index].id] == "pending":
                self.position = index
                return self.regions[index]
        return None

    def go_to(self, region_id: int) -> Region:
        """Make ``region_id`` current (e.g. the user clicked it in the list)."""
        region = self.region(region_id)
        self.position = self.regions.index(region)
        return region

    def accept(self, region_id: int, component_map: np.ndarray | None = None) -> None:
        """Mark the region accepted and its voxels reviewed (the whole bbox without ``component_map``)."""
        region = self.region(region_id)
        box = self.review_mask[region.bbox]
        if component_map is None:
            np.maximum(box, ACCEPTED, out=box)
        else:
            if component_map.shape != self.shape:
                raise ValueError(f"component map shape {component_map.shape} differs from {self.shape}")
            inside = component_map[region.bbox] == region.id
            box[inside] = np.maximum(box[inside], ACCEPTED)
        self._set_status(region_id, "accepted")

    def skip(self, region_id: int) -> None:
        self.region(region_id)
        self._set_status(region_id, "skipped")

    def mark_edited(self, where: Any, values: np.ndarray | None = None) -> None:
        """Mark edited voxels as reviewed.

        ``where`` is one of: a boolean/0-1 array of the full shape; a tuple of three slices or
        plane indices (then ``values``, shaped like that box, says which voxels in it were edited,
        nonzero = edited, and ``None`` means all of them); or a tuple of three index arrays, as
        napari's paint events report them. Erasing to 0 is an edit too, so label values are not
        what ``values`` means.
        """
        if isinstance(where, np.ndarray):
            if where.shape != self.shape:
                raise ValueError(f"edited mask shape {where.shape} differs from {self.shape}")
            self.review_mask[where != 0] = EDITED
            return
        if not isinstance(where, tuple) or len(where) != 3:
            raise TypeError("mark_edited needs a full-shape mask, 3 slices, or 3 index arrays")
        if all(isinstance(part, (slice, int, np.integer)) for part in where):  # a box; an int is one plane
            if values is None:
                self.review_mask[where] = EDITED
            else:
                self.review_mask[where][np.asarray(values) != 0] = EDITED
            return
        self.review_mask[tuple(np.asarray(part) for part in where)] = EDITED

    def counts(self) -> dict[str, int]:
        """Number of regions per status (every status present, zeros included)."""
        result = dict.fromkeys(STATUSES, 0)
        for value in self.status.values():
            result[value] += 1
        return result

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state without the mask (the session file stores the mask as a dataset)."""
        return {
            "regions": [region.to_dict() for region in self.regions],
            "status": {str(region_id): value for region_id, value in self.status.items()},
            "position": self.position,
            "shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], review_mask: np.ndarray) -> ReviewState:
        shape = tuple(int(n) for n in data["shape"]) if "shape" in data else None
        return cls(
            regions=[Region.from_dict(item) for item in data["regions"]],
            shape=shape,  # type: ignore[arg-type]
            review_mask=review_mask,
            status={int(k): v for k, v in data.get("status", {}).items()},
            position=int(data.get("position", 0)),
        )

    def _set_status(self, region_id: int, value: str) -> None:
        if value not in STATUSES:
            raise ValueError(f"unknown review status {value!r} (expected one of {', '.join(STATUSES)})")
        if region_id not in self._by_id:
            raise KeyError(f"no region with id {region_id}")
        self.status[region_id] = value
