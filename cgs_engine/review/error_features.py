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

Every width and reach above is counted in *reference voxels*: voxels of the grid the error model
was fitted on (``reference_zyx``, the median spacing of its calibration cases), converted to mm,
so the same anatomy scores the same on any voxel grid. Counted in the scan's own voxels, a 2x finer
reconstruction of one prediction had a border layer half as thick and 26 % fewer "likely wrong" mL
(8 grids of one OpenKBP patient: -33 % to +27 %). Without a reference (an error model fitted on
volumes of unknown spacing, the uncalibrated score) the scan's own voxels are the unit, as before.

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

# Widths below are in reference voxels (see the module's docstring); "city-block" distances weigh a
# step along each axis by its length in reference voxels.
REACH = 6  # background voxels up to this city-block distance outside an organ are candidates
SHAPE_SIGMAS = (1.0, 2.0)  # voxels
SLICE_SIGMA = 1.0  # slices (z only)
DOUBT_SIGMA = 2.0  # voxels: the generalist's doubt smoothed, "is this stretch of border unsure"
Z_CAP = 6.0  # slices from the organ's first or last slice, capped
FAR = 1e9  # reference voxels: "no organ" (finite, so that FAR - FAR is no NaN)
TIE = 1e-6  # distances closer than this are equal (sums of the same steps in another order)
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
RING = (1, 4)  # the background ring around an organ: more than 1, up to 4 voxels outside it


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
    reference_zyx: tuple[float, float, float] | None = None,
) -> ErrorEvidence:
    """Feature columns for every candidate voxel; ``typical_ml`` (class id -> mL) enables the size
    term; ``reference_zyx`` (mm) is the voxel the widths are counted in (None: the scan's own)."""
    maps.check()
    labels = maps.labels
    shape = tuple(int(n) for n in labels.shape)
    units = grid_units(spacing_zyx, reference_zyx)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(maps.specialist_maps) + 1)
    organ_ml = {k: float(counts[k]) * voxel_ml for k in range(1, len(counts))}
    box = _grown_box(labels > 0, _voxels(REACH + 2, units))  # the smoothing needs a little context
    if box is None:  # no organ predicted: nothing to doubt
        nothing = (slice(0, 0),) * 3
        empty = np.zeros((0, 0, 0), dtype=bool)
        return ErrorEvidence(
            shape, nothing, empty, np.zeros(0, np.int8), np.zeros(0, np.int64), {}, organ_ml, voxel_ml
        )
    local = labels[box].astype(np.int64)
    near, steps = _nearest_organ(local, units)
    candidates = near > 0
    inside = local > 0
    # the layer touching an organ is its edge on any grid, however coarse (a step there may be
    # longer than one reference voxel); on a finer grid the edge is one reference voxel thick
    touching = (~inside) & _touches_other_label(inside.astype(np.int8))
    steps = np.where(touching, np.minimum(steps, 1.0), steps)
    # within one reference voxel of the background, or touching another organ
    from_background = _centre_distance(_distance_to(~inside, units), units)
    edge_in = inside & ((from_background <= 1.0 + TIE) | _touches_other_label(local))
    zone = np.where(inside, ZONES.index("interior"), ZONES.index("outside")).astype(np.int8)
    zone[edge_in] = ZONES.index("edge_in")
    zone[(~inside) & (steps <= 1.0 + TIE)] = ZONES.index("edge_out")

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
    columns.update(_organ_columns(local, near, candidates, intensity, units))
    doubt = 1.0 - maps.margin[box].astype(np.float32) * np.float32(unit_scale(maps.margin))
    columns["doubt_nearby"] = ndimage.gaussian_filter(doubt, DOUBT_SIGMA / units, mode="nearest")[candidates]
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


def grid_units(
    spacing_zyx: tuple[float, float, float], reference_zyx: tuple[float, float, float] | None
) -> np.ndarray:
    """The length of one voxel step along (z, y, x) in reference voxels: 1 on the reference grid,
    0.5 along an axis sampled twice as finely; 1 everywhere without a reference."""
    if reference_zyx is None:
        return np.ones(3)
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    reference = np.asarray(reference_zyx, dtype=np.float64)
    if spacing.shape != (3,) or reference.shape != (3,):
        raise ValueError(f"spacing {spacing_zyx} and reference {reference_zyx} need 3 values (z, y, x)")
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        raise ValueError(f"voxel spacing {spacing_zyx} mm must be positive")
    if not (np.all(np.isfinite(reference)) and np.all(reference > 0)):
        raise ValueError(f"reference spacing {reference_zyx} mm must be positive")
    return spacing / reference


def reference_spacing(spacings_zyx) -> tuple[float, float, float]:
    """The reference voxel of an error model: the per-axis median spacing (mm) of its cases."""
    spacings = np.asarray(list(spacings_zyx), dtype=np.float64)
    if spacings.ndim != 2 or spacings.shape[1] != 3 or len(spacings) == 0:
        raise ValueError("reference_spacing needs one (z, y, x) spacing per case")
    # unrounded: 0.9765625 mm rounded to 0.976562 made every step 1.0000005 reference voxels, and
    # whole layers (rounded up) moved out by one
    return tuple(float(v) for v in np.median(spacings, axis=0))  # type: ignore[return-value]


def _voxels(width: float, units: np.ndarray) -> np.ndarray:
    """A width in reference voxels as whole voxels of this grid along each axis (rounded up)."""
    return np.ceil(width / units - TIE).astype(int)


def _grown_box(mask: np.ndarray, grow) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` grown by ``grow`` voxels (one number, or one per axis), clipped;
    None when empty."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return None
    grow = np.broadcast_to(np.asarray(grow, dtype=int), (3,))
    return tuple(
        slice(max(0, s.start - int(g)), min(n, s.stop + int(g)))
        for s, n, g in zip(found[0], mask.shape, grow, strict=True)
    )  # type: ignore[return-value]


def _nearest_organ(labels: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest organ id, city-block distance outside it in whole reference voxels) within REACH;
    (0, REACH + 1) beyond. Where two organs are equally near the higher class id takes the voxel
    (rare: organs seldom meet across background)."""
    distance, near = _city_block_transform(labels, units)
    centre = _centre_distance(distance, units)
    within = centre <= REACH + TIE
    # the reference layer the voxel's centre lies in: on a grid twice as fine the voxels 0.5 and 1
    # reference voxels out (centres at 0.25 and 0.75) both lie in the first layer the error model
    # was fitted on (distance 1); on one 5 % coarser, the second step (2.1) still in the second
    layers = np.maximum(np.ceil(centre - TIE), 0.0)  # organ voxels: 0
    return np.where(within, near, 0), np.where(within, layers, REACH + 1.0)


def _centre_distance(distance: np.ndarray, units: np.ndarray) -> np.ndarray:
    """How far (reference voxels) a voxel's centre lies from the surface of what ``distance`` was
    measured to (city-block, centre to centre): half the grid's smallest step less. A width of n
    whole reference voxels holds the voxels whose centre lies within n: on the reference grid the
    voxels up to n steps out, as before; on a grid twice as fine, up to 2n; on one 5 % coarser,
    the second step (2.1 reference voxels, its centre at 1.6) still in the second layer."""
    return distance - float(np.min(units)) / 2


def _city_block_transform(labels: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per voxel, the city-block distance (a step along axis i costs ``units[i]``) to the nearest
    voxel with a label > 0, and that label (the highest one among equally near ones).

    Exact: the city-block distance separates into one pass forward and one back along each axis
    in turn. On a grid of unit steps it is the number of face-neighbour steps, as growing the
    organs one step at a time counts them."""
    distance = np.where(labels > 0, 0.0, FAR)
    near = labels.copy()
    for axis in range(3):
        d = np.moveaxis(distance, axis, 0)  # views: writing them writes distance and near
        k = np.moveaxis(near, axis, 0)
        step = float(units[axis])
        length = d.shape[0]
        for order in (range(1, length), range(length - 2, -1, -1)):
            for i in order:
                j = i - 1 if order.step == 1 else i + 1
                offered = d[j] + step
                # ties exactly equal: on the reference grid every distance is a whole number
                better = (offered < d[i]) | ((offered == d[i]) & (k[j] > k[i]))
                np.copyto(d[i], offered, where=better)
                np.copyto(k[i], k[j], where=better)
    return distance, near


def _distance_to(mask: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Per voxel, the city-block distance (in reference voxels) to the nearest voxel of ``mask``."""
    distance = np.where(mask, 0.0, FAR)
    for axis in range(3):
        d = np.moveaxis(distance, axis, 0)
        step = float(units[axis])
        for i in range(1, d.shape[0]):
            np.minimum(d[i], d[i - 1] + step, out=d[i])
        for i in range(d.shape[0] - 2, -1, -1):
            np.minimum(d[i], d[i + 1] + step, out=d[i])
    return distance


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
    labels: np.ndarray,
    near: np.ndarray,
    candidates: np.ndarray,
    intensity: np.ndarray,
    units: np.ndarray,
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
    # every voxel that has this organ as its nearest lies within REACH of it; the smoothing reads
    # 3 sigmas further
    pad = _voxels(3 * max(SHAPE_SIGMAS) + 1 + REACH, units)
    for class_id in np.unique(near_c):
        mine_c = near_c == class_id
        organ = labels == class_id
        window = _grown_box(organ, pad)
        mask = organ[window].astype(np.float32)
        positions = tuple(index[mine_c] - w.start for index, w in zip(where, window, strict=True))
        for name, sigma in zip(("shape_1", "shape_2"), SHAPE_SIGMAS, strict=True):
            out[name][mine_c] = ndimage.gaussian_filter(mask, sigma / units, mode="constant")[positions]
        out["shape_z"][mine_c] = ndimage.gaussian_filter1d(
            mask, SLICE_SIGMA / units[0], axis=0, mode="constant"
        )[positions]
        area = organ.sum(axis=(1, 2)).astype(np.float32)
        filled = np.flatnonzero(area)
        z = where[0][mine_c]
        to_end = np.minimum(np.abs(z - filled[0]), np.abs(z - filled[-1])) * units[0]
        # whole reference slices: the first reference slice's worth of thin slices all count 0
        out["slices_to_end"][mine_c] = np.minimum(np.floor(to_end + TIE), Z_CAP)
        out["cross_section"][mine_c] = (area / area.max())[z]
        off, looks = _intensity_columns(
            organ[window], labels[window] == 0, intensity[window], positions, units
        )
        out["intensity_off"][mine_c], out["looks_like_organ"][mine_c] = off, looks
    return out


def _intensity_columns(organ, background, intensity, positions, units):
    """Spreads from the organ core's median, and 1 where closer to the core than to the ring around it.

    The core is the organ less its voxels within one reference voxel of the outside (the window's
    edge is outside); the ring the background more than RING[0], at most RING[1] reference voxels
    from the organ. A face neighbour always counts as within one (a coarse grid's step may be
    longer). City-block distances, as growing the organ by face-neighbour steps counts them."""
    outside = ~np.pad(organ, 1)  # the window's edge counts as outside, as in an erosion
    near_outside = _centre_distance(_distance_to(outside, units), units)[1:-1, 1:-1, 1:-1] <= 1.0 + TIE
    core = organ & ~near_outside & ~_touches_other_label(np.pad(organ, 1).astype(np.int8))[1:-1, 1:-1, 1:-1]
    thin = core.sum() < 20 / float(np.prod(units))  # thin organs (under 20 reference voxels): all of it
    inside = intensity[organ] if thin else intensity[core]
    centre = float(np.median(inside))
    spread = max(1.4826 * float(np.median(np.abs(inside - centre))), INTENSITY_FLOOR)
    from_organ = _centre_distance(_distance_to(organ, units), units)
    near_ring = (from_organ <= RING[0] + TIE) | _touches_other_label(organ.astype(np.int8))
    ring = (from_organ <= RING[1] + TIE) & ~near_ring & background
    around = float(np.median(intensity[ring])) if ring.any() else centre
    values = intensity[positions]
    off = np.minimum(np.abs(values - centre) / spread, INTENSITY_CAP).astype(np.float32)
    looks = (np.abs(values - centre) < np.abs(values - around)).astype(np.float32)
    return off, looks
