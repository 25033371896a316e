"""Per-voxel evidence that a predicted label is wrong, from one prediction (maps and label map).

What the model's real errors look like (bundled model, OpenKBP): nearly all lie on the two voxel
layers at a predicted organ's border, the organ's outer layer (voxels it should not have) and
the background layer just outside it (voxels it missed), and about half are missed voxels
where every head agrees on "background", so the disagreement map alone sees little of them.
So the evidence looks at each voxel through the organ nearest to it:

* where it lies: the organ's inner border layer (``edge_in``), the layer outside it
  (``edge_out``) or elsewhere, its city-block distance outside the organ, how close it is to the
  organ's first or last slice and how large the organ's cross-section is on its slice;
* shape: the organ's mask smoothed with a Gaussian (sigma 1 and 2 voxels, and 1 slice along z)
  at the voxel. Contours drawn by people are smooth; a background voxel in a dent of the
  predicted organ, or an organ voxel on a spike, is likely wrong;
* plausibility: the organ's predicted volume against its typical volume (an organ much smaller
  than usual is likely under-segmented);
* intensity: how far the voxel's intensity lies from the organ's core (median and spread of the
  organ eroded by one voxel), and whether it is closer to the core than to the background ring
  around the organ (a missed voxel usually looks like the organ);
* the network: the generalist's margin (top minus second probability) and its probability of
  the nearest organ, that organ's specialist ("mine"), the strongest other specialist claim,
  the inter-head disagreement, and the disagreement of the generalist with the specialists.

The features are columns over the *candidate* voxels only (organ voxels and background voxels up
to ``REACH`` steps outside an organ), computed inside the organs' bounding box, so a large scan
with small organs costs little. :class:`ErrorEvidence` holds them; ``error_model`` turns them into
one calibrated probability per voxel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cgs_engine.review.regions import unit_scale

REACH = 6  # background voxels up to this many city-block steps outside an organ are candidates
SHAPE_SIGMAS = (1.0, 2.0)  # voxels
SLICE_SIGMA = 1.0  # slices (z only)
DOUBT_SIGMA = 2.0  # voxels: the generalist's doubt smoothed, "is this stretch of border unsure"
Z_CAP = 6.0  # slices from the organ's first or last slice, capped
SIZE_FLOOR_ML = 0.05
# Where a candidate lies: inside an organ (its border layer or deeper), or in the background (the
# layer touching an organ or further out).
ZONES = ("interior", "edge_in", "edge_out", "outside")
# Features taken once per zone (each zone gets its own weight): the same margin means
# something else on the organ's own border layer than one layer outside it.
ZONED = (
    "disagreement",
    "margin",
    "p_near",
    "specialist_near",
    "specialist_other",
    "generalist_vs_specialists",
    "size",
    "distance_out",
    "slices_to_end",
    "cross_section",
    "shape_1",
    "shape_2",
    "shape_z",
    "doubt_nearby",
    "intensity_off",
    "looks_like_organ",
)
INTENSITY_CAP = 10.0  # spreads from the organ's core, capped
# The least spread credited to an organ's core, in the model's intensity units (5 HU in the
# default CT window of 400 HU): a uniform core must not turn every small step into 100 spreads.
INTENSITY_FLOOR = 5.0 / 400.0
RING = (1, 4)  # the background ring around an organ: 2 to 4 voxels (dilation steps) outside it


@dataclass(frozen=True)
class NetworkMaps:
    """What one forward pass leaves per voxel, all on the image grid, uint8 (255 = 1) or float in [0, 1]."""

    labels: np.ndarray  # class ids (the generalist's argmax)
    confidence: np.ndarray  # the generalist's top probability
    background: np.ndarray  # the generalist's probability of background
    margin: np.ndarray  # the generalist's top probability minus its second
    disagreement: np.ndarray  # soft IHED disagreement of the specialist heads
    generalist_vs_specialists: np.ndarray  # half the L1 distance between the generalist and fused heads
    specialist_maps: Mapping[int, np.ndarray]  # class id -> that head's probability of "mine"
    image: np.ndarray  # the scan (raw, or in the model's intensity space when normalize is None)
    normalize: Callable[[np.ndarray], np.ndarray] | None = None  # raw part -> the model's space

    def check(self) -> None:
        shape = self.labels.shape
        if len(shape) != 3:
            raise ValueError(f"labels must be a 3D [z, y, x] array, got shape {shape}")
        named = {
            "confidence": self.confidence,
            "background": self.background,
            "margin": self.margin,
            "disagreement": self.disagreement,
            "generalist_vs_specialists": self.generalist_vs_specialists,
        }
        named.update({f"specialist map {k}": v for k, v in self.specialist_maps.items()})
        if self.image.shape != shape:
            raise ValueError(f"image shape {self.image.shape} differs from labels {shape}")
        for name, array in named.items():
            unit_scale(array, name)
            if array.shape != shape:
                raise ValueError(f"{name} shape {array.shape} differs from labels {shape}")


@dataclass
class ErrorEvidence:
    """Feature columns over the candidate voxels of one prediction."""

    shape: tuple[int, int, int]
    box: tuple[slice, slice, slice]  # the candidates' bounding box in the volume
    candidates: np.ndarray  # bool, box-sized: which voxels of the box have a column entry
    zone: np.ndarray  # int8 per candidate: index into ZONES
    near: np.ndarray  # int per candidate: the nearest organ's class id (its own for organ voxels)
    columns: dict[str, np.ndarray]  # name -> float32 per candidate
    organ_ml: dict[int, float]  # predicted volume of each class id in the label map
    voxel_ml: float

    @property
    def count(self) -> int:
        return int(self.zone.size)

    def to_volume(self, values: np.ndarray, dtype=np.float32) -> np.ndarray:
        """A full-size array holding ``values`` (one per candidate) and 0 elsewhere."""
        volume = np.zeros(self.shape, dtype=dtype)
        volume[self.box][self.candidates] = values
        return volume

    def subset(self, keep: np.ndarray) -> ErrorEvidence:
        """The same evidence for only the candidates where ``keep`` (one bool per candidate) holds."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.count,):
            raise ValueError(f"keep needs one value per candidate ({self.count}), got shape {keep.shape}")
        candidates = np.zeros_like(self.candidates)
        candidates[self.candidates] = keep
        return ErrorEvidence(
            shape=self.shape,
            box=self.box,
            candidates=candidates,
            zone=self.zone[keep],
            near=self.near[keep],
            columns={name: column[keep] for name, column in self.columns.items()},
            organ_ml=self.organ_ml,
            voxel_ml=self.voxel_ml,
        )

    def take(self, volume: np.ndarray) -> np.ndarray:
        """The values of a full-size array at the candidates, in column order."""
        return volume[self.box][self.candidates]


def collect_evidence(
    maps: NetworkMaps,
    spacing_zyx: tuple[float, float, float],
    typical_ml: Mapping[int, float] | None = None,
) -> ErrorEvidence:
    """Feature columns for every candidate voxel; ``typical_ml`` (class id -> mL) enables the size term."""
    maps.check()
    labels = maps.labels
    shape = tuple(int(n) for n in labels.shape)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(maps.specialist_maps) + 1)
    organ_ml = {k: float(counts[k]) * voxel_ml for k in range(1, len(counts))}
    box = _candidate_box(labels)
    if box is None:  # no organ predicted: nothing to doubt
        nothing = (slice(0, 0),) * 3
        empty = np.zeros((0, 0, 0), dtype=bool)
        return ErrorEvidence(
            shape, nothing, empty, np.zeros(0, np.int8), np.zeros(0, np.int64), {}, organ_ml, voxel_ml
        )
    local = labels[box].astype(np.int64)
    near, steps = _nearest_organ(local)
    candidates = near > 0
    inside = local > 0
    edge_in = inside & _touches_other_label(local)
    zone = np.where(inside, ZONES.index("interior"), ZONES.index("outside")).astype(np.int8)
    zone[edge_in] = ZONES.index("edge_in")
    zone[(~inside) & (steps == 1)] = ZONES.index("edge_out")

    def at(volume: np.ndarray) -> np.ndarray:
        return (volume[box][candidates].astype(np.float32)) * np.float32(unit_scale(volume))

    near_c = near[candidates]
    inside_c = inside[candidates]
    columns: dict[str, np.ndarray] = {
        "disagreement": at(maps.disagreement),
        "margin": at(maps.margin),
        # inside an organ its own probability; outside, the generalist's "some organ" (1 - background)
        "p_near": np.where(inside_c, at(maps.confidence), 1.0 - at(maps.background)).astype(np.float32),
        "generalist_vs_specialists": at(maps.generalist_vs_specialists),
        "distance_out": steps[candidates].astype(np.float32),
    }
    columns["specialist_near"], columns["specialist_other"] = _specialist_columns(
        maps.specialist_maps, box, candidates, near_c
    )
    columns["size"] = size_column(near_c, organ_ml, typical_ml or {})
    image = maps.image[box]
    intensity = maps.normalize(image) if maps.normalize is not None else image.astype(np.float32)
    columns.update(_organ_columns(local, near, candidates, intensity))
    doubt = 1.0 - maps.margin[box].astype(np.float32) * np.float32(unit_scale(maps.margin))
    columns["doubt_nearby"] = ndimage.gaussian_filter(doubt, DOUBT_SIGMA, mode="nearest")[candidates]
    return ErrorEvidence(
        shape=shape,
        box=box,
        candidates=candidates,
        zone=zone[candidates],
        near=near_c,
        columns=columns,
        organ_ml=organ_ml,
        voxel_ml=voxel_ml,
    )


def size_column(
    near: np.ndarray, organ_ml: Mapping[int, float], typical_ml: Mapping[int, float]
) -> np.ndarray:
    """log(predicted / typical volume) of each candidate's nearest organ; 0 where the typical is unknown."""
    ratio = np.zeros(max([*organ_ml, 0]) + 1, dtype=np.float32)
    for class_id, ml in organ_ml.items():
        if typical_ml.get(class_id, 0) > 0:
            ratio[class_id] = np.log(max(ml, SIZE_FLOOR_ML) / typical_ml[class_id])
    return ratio[near]


def _grown_box(mask: np.ndarray, grow: int) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` grown by ``grow`` voxels on every side, clipped; None when empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    return tuple(
        slice(max(0, s.start - grow), min(n, s.stop + grow))
        for s, n in zip(found[0], mask.shape, strict=True)
    )  # type: ignore[return-value]


def _candidate_box(labels: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The organs' bounding box grown by REACH + 2 voxels (the smoothing needs a little context)."""
    return _grown_box(labels > 0, REACH + 2)


CROSS = ndimage.generate_binary_structure(3, 1)  # the 6 face neighbours and the voxel itself


def _nearest_organ(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest organ id, city-block steps outside it) within REACH steps; (0, REACH + 1) beyond.

    Grown one face-neighbour step at a time; where two organs reach a voxel in the same step the
    higher class id takes it (rare: organs seldom meet across background).
    """
    near = labels.copy()
    steps = np.where(labels > 0, 0, REACH + 1).astype(np.int8)
    for step in range(1, REACH + 1):
        grown = ndimage.grey_dilation(near, footprint=CROSS, mode="constant", cval=0)
        new = (near == 0) & (grown > 0)
        if not new.any():
            break
        near[new] = grown[new]
        steps[new] = step
    return near, steps


def _touches_other_label(labels: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour of another label (the volume's edge does not count)."""
    touches = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        differs = np.diff(labels, axis=axis) != 0
        low = [slice(None)] * 3
        high = [slice(None)] * 3
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        touches[tuple(low)] |= differs
        touches[tuple(high)] |= differs
    return touches


def _specialist_columns(specialist_maps, box, candidates, near_c):
    """Per candidate: the nearest organ's specialist "mine", and the strongest "mine" of any other head."""
    own = np.zeros(near_c.shape, dtype=np.float32)
    other = np.zeros(near_c.shape, dtype=np.float32)
    for class_id, volume in specialist_maps.items():
        values = volume[box][candidates].astype(np.float32) * np.float32(unit_scale(volume))
        mine = near_c == class_id
        own[mine] = values[mine]
        values[mine] = 0.0
        np.maximum(other, values, out=other)
    return own, other


def _organ_columns(
    labels: np.ndarray, near: np.ndarray, candidates: np.ndarray, intensity: np.ndarray
) -> dict[str, np.ndarray]:
    """Per candidate, from its nearest organ: smoothed masks, z-profile position, cross-section share
    and intensity against the organ's core."""
    names = (
        "shape_1",
        "shape_2",
        "shape_z",
        "slices_to_end",
        "cross_section",
        "intensity_off",
        "looks_like_organ",
    )
    out = {name: np.zeros(int(candidates.sum()), dtype=np.float32) for name in names}
    near_c = near[candidates]
    where = np.nonzero(candidates)
    pad = int(np.ceil(3 * max(SHAPE_SIGMAS))) + 1
    for class_id in np.unique(near_c):
        mine_c = near_c == class_id
        organ = labels == class_id
        # every voxel that has this organ as its nearest lies within REACH steps of it
        window = _grown_box(organ, pad + REACH)
        mask = organ[window].astype(np.float32)
        positions = tuple(index[mine_c] - w.start for index, w in zip(where, window, strict=True))
        for name, sigma in zip(("shape_1", "shape_2"), SHAPE_SIGMAS, strict=True):
            out[name][mine_c] = ndimage.gaussian_filter(mask, sigma, mode="constant")[positions]
        out["shape_z"][mine_c] = ndimage.gaussian_filter1d(mask, SLICE_SIGMA, axis=0, mode="constant")[
            positions
        ]
        area = organ.sum(axis=(1, 2)).astype(np.float32)
        filled = np.flatnonzero(area)
        z = where[0][mine_c]
        out["slices_to_end"][mine_c] = np.minimum(
            np.minimum(np.abs(z - filled[0]), np.abs(z - filled[-1])), Z_CAP
        )
        out["cross_section"][mine_c] = (area / area.max())[z]
        off, looks = _intensity_columns(organ[window], labels[window] == 0, intensity[window], positions)
        out["intensity_off"][mine_c], out["looks_like_organ"][mine_c] = off, looks
    return out


def _intensity_columns(organ, background, intensity, positions):
    """Spreads from the organ core's median, and 1 where closer to the core than to the ring around it."""
    core = ndimage.binary_erosion(organ)
    inside = intensity[core] if core.sum() >= 20 else intensity[organ]  # thin organs: all of it
    centre = float(np.median(inside))
    spread = max(1.4826 * float(np.median(np.abs(inside - centre))), INTENSITY_FLOOR)
    near_ring = ndimage.binary_dilation(organ, iterations=RING[0])
    ring = ndimage.binary_dilation(organ, iterations=RING[1]) & ~near_ring & background
    around = float(np.median(intensity[ring])) if ring.any() else centre
    values = intensity[positions]
    off = np.minimum(np.abs(values - centre) / spread, INTENSITY_CAP).astype(np.float32)
    looks = (np.abs(values - centre) < np.abs(values - around)).astype(np.float32)
    return off, looks
