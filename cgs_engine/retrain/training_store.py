"""The training store of a retrain: corrections, prior data and unlabeled scans, held-out parts set aside."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.errors import CGSError
from cgs_engine.io import read_volume
from cgs_engine.orientation import Reorientation, canonical_volume
from cgs_engine.project.corrections import correction_content
from cgs_engine.project.project import Project
from cgs_engine.project.versions import ProjectError
from cgs_engine.retrain.heldout import choose_heldout_volumes, heldout_slices, judging_weights
from cgs_engine.review.session import image_fingerprint
from cgs_engine.store import SliceStore

NOTHING_TO_TRAIN = "no corrected volumes with reviewed voxels to train on"


class CancelledWhilePreparing(Exception):
    pass


def build_store(project: Project, store_path: Path, stop_requested, warn) -> dict[str, Any]:
    """Write the run's training store; returns the plan (what went in, what is held out)."""
    usable = _with_fingerprints(project, _usable_corrections(project, warn))
    fraction = float(project.settings["heldout_fraction"])
    scans = [c.image_fingerprint for c in usable]
    heldout_volumes = set(choose_heldout_volumes([c.name for c in usable], fraction, scans))
    with SliceStore.create(
        store_path, project.class_names, project.normalization, project.class_colors
    ) as store:
        corrected = _scans_of_corrections(project, usable, heldout_volumes)
        builder = _StoreBuilder(project, store, heldout_volumes, fraction, stop_requested, warn, corrected)
        if not heldout_volumes:
            builder.shared_heldout = _shared_heldout_slices(project, usable, fraction)
        prior = _add_prior_training(project, store, corrected, warn)
        weight = correction_weight(
            prior["slices"],
            _correction_slices(project, usable, heldout_volumes, fraction, builder.shared_heldout),
            float(project.settings["correction_share"]),
        )
        for info in usable:
            builder.add_correction(info, weight)
        builder.add_prior_validation()
        builder.add_unlabeled_scans()
        builder.fill_empty_unlabeled_pool()
    heldout = builder.heldout
    return {
        "heldout": heldout,
        "heldout_mode": "volumes" if heldout_volumes else ("slices" if heldout else "none"),
        "training": [name for name, *_ in builder.training_images],
        "prior_training": prior["train"],
        "correction_weight": weight,
        "corrections_used": {c.name: builder.revisions.get(c.name, c.revision) for c in usable},
        "corrections_content": builder.contents,
        "unlabeled_used": builder.unlabeled_used,
    }


def _usable_corrections(project: Project, warn) -> list:
    corrections = project.corrections()
    for problem in project.problems:
        if problem.startswith(str(project.corrections_dir)):
            warn(f"skipped damaged correction: {problem}")
    usable = [c for c in corrections if c.reviewed_voxels > 0]
    for c in corrections:
        if c.reviewed_voxels == 0:
            warn(f"correction {c.name!r} has no reviewed voxels; not used")
    if not usable:
        raise ProjectError(f"{project.corrections_dir}: {NOTHING_TO_TRAIN}")
    return usable


class _StoreBuilder:
    """Adds the corrections and unlabeled scans to the store, recording what went where."""

    def __init__(
        self, project, store, heldout_volumes: set[str], fraction: float, stop_requested, warn, corrected
    ):
        self.project, self.store, self.warn = project, store, warn
        self.heldout_volumes, self.fraction = heldout_volumes, fraction
        self.stop_requested = stop_requested
        self.normalize = project.normalization.apply
        self.heldout: list[str] = []
        self.training_images: list[tuple[str, np.ndarray, tuple[float, float]]] = []
        self.unlabeled_used: list[str] = []
        self.revisions: dict[str, str] = {}  # correction name -> the revision its data came from
        self.contents: dict[str, str] = {}  # correction name -> correction_content of that data
        self.shared_heldout: dict[str, np.ndarray] = {}  # slice hold-out of copies of one scan
        self.corrected: dict[str, CorrectedScan] = corrected  # see _scans_of_corrections
        # store_digest of every scan already in the store whose slices judge the new model (held-out
        # corrections and prior validation cases) or are the corrections' own -> what it is
        self.judged_scans: dict[str, str] = {
            digest: f"the scan of correction {scan.name!r}" for digest, scan in corrected.items()
        }

    def add_correction(self, info, weight: float) -> None:
        if self.stop_requested():
            raise CancelledWhilePreparing
        store, warn = self.store, self.warn
        correction = self.project.read_correction(info.name)
        # the file as read now: saved again since the corrections were listed (the panel re-saves a
        # scan while a retrain prepares), it is these labels that train, so this revision is recorded
        info = correction.info
        self.revisions[info.name] = info.revision
        self.contents[info.name] = correction_content(correction)
        # slices are cut along the canonical axial axis, as the network reads them (cgs_engine.orientation)
        turn = Reorientation.of(info.geometry)
        geometry = turn.canonical_geometry(info.geometry, correction.labels.shape)
        image, labels, review = turn.canonical_copies(
            self.normalize(correction.image.array), correction.labels, correction.review
        )
        source = info.source or info.name
        if info.name in self.heldout_volumes:
            if _add_judging_volume(store, info.name, image, labels, review, geometry, source, warn):
                self.heldout.append(info.name)
            return
        shared = None if self.heldout_volumes else self.shared_heldout.get(info.name)
        # slices cut out keep no 3D geometry, but their pixel spacing: read at the field of view
        # prediction reads the scan at (cgs_engine.infer.field)
        in_plane = (geometry.spacing[1], geometry.spacing[0])
        held, reviewed = slices_of_correction(
            labels, review, self.fraction, shared, bool(self.heldout_volumes)
        )
        unreviewed = np.flatnonzero(~review.reshape(len(review), -1).any(axis=1))
        if not self.heldout_volumes:
            if held.size:
                name = f"{info.name}~heldout"
                if _add_judging_volume(
                    store, name, image[held], labels[held], review[held], None, source, warn, in_plane
                ):
                    self.heldout.append(name)
            # no unreviewed slice from within or next to the held-out block (for a copy of another
            # correction's scan, the copies' block: held out there, it was trained on here unlabeled)
            if shared is None:
                if held.size:
                    unreviewed = unreviewed[(unreviewed < held[0] - 1) | (unreviewed > held[-1] + 1)]
            else:  # the copies' blocks may be apart: each with its neighbours, not all between them
                unreviewed = unreviewed[
                    ~np.isin(unreviewed, np.union1d(shared, np.union1d(shared - 1, shared + 1)))
                ]
        if reviewed.size:  # a copy of a scan may hold out every slice it has reviewed
            store.add_volume(
                info.name,
                image[reviewed],
                labels[reviewed],
                review[reviewed] > 0,
                split="labeled",
                source=source,
                sampling_weight=weight,
                in_plane_mm=in_plane,
            )
            self.training_images.append((info.name, image[reviewed], in_plane))
        if unreviewed.size:
            store.add_volume(
                f"{info.name}~unreviewed",
                image[unreviewed],
                split="unlabeled",
                source=source,
                in_plane_mm=in_plane,
            )
            self.unlabeled_used.append(f"{source} (unreviewed slices)")

    def add_prior_validation(self) -> None:
        """The prior's validation cases judge the new model, but not one whose scan a correction trains
        on (the user corrected a validation case): the gate would judge on an image the new model
        was taught, in the user's own labels. That case is left out, with a warning."""
        prior_store = self.project.prior_store
        if prior_store is None:
            return
        with SliceStore.open(prior_store) as prior:
            for name in prior.volume_names("val"):
                stored = prior.read_volume(name)
                # a volume stored without its spacing stays so (see _add_prior_training)
                geometry = stored.geometry if prior.volume_info(name).spacing_known else None
                digest = store_digest(stored.image, geometry)
                corrected = self.corrected.get(digest)
                if corrected is not None and corrected.trained:
                    self.warn(
                        f"prior validation case {name!r} is the scan of correction {corrected.name!r}, "
                        "which trains the new model: it does not judge it"
                    )
                    continue
                review = None if stored.review is None else stored.review > 0
                self.store.add_volume(
                    f"prior~{name}", stored.image, stored.label, review, geometry, "val", "prior data"
                )
                self.heldout.append(f"prior~{name}")
                self.judged_scans[digest] = f"prior validation case {name!r}"

    def add_unlabeled_scans(self) -> None:
        for index, scan in enumerate(self.project.unlabeled()):
            if self.stop_requested():
                raise CancelledWhilePreparing
            volume = _read_unlabeled(scan, self.warn, self.normalize)
            known = None
            if volume is not None:  # a prior case stored without its spacing: by its voxels alone
                known = self.judged_scans.get(store_digest(volume.array, volume.geometry))
                known = known or self.judged_scans.get(store_digest(volume.array, None))
            if known is not None:
                # a scan corrected from the worklist stays in the unlabeled list: added again, its
                # held-out slices were trained on (unlabeled) and the gate judged on seen images
                self.warn(f"{scan.path}: {known}, in the store already; not added again as unlabeled")
                continue
            if volume is not None:
                self.store.add_volume(
                    f"scan-{index:04d}", volume.array, geometry=volume.geometry, source=str(scan.path)
                )
                self.unlabeled_used.append(str(scan.path))

    def fill_empty_unlabeled_pool(self) -> None:
        if self.unlabeled_used:
            return
        self.warn("no unlabeled images; the training corrections' images serve as the unlabeled pool")
        for name, image, in_plane in self.training_images:
            self.store.add_volume(
                f"{name}~images", image, split="unlabeled", source=name, in_plane_mm=in_plane
            )


def _with_fingerprints(project: Project, usable: list) -> list:
    """Corrections saved before their image's fingerprint was recorded get it now (from the image
    they hold), so that copies of one scan are held out or trained on together."""
    filled = []
    for info in usable:
        if not info.image_fingerprint:
            image = project.read_correction(info.name).image
            info = replace(info, image_fingerprint=image_fingerprint(np.asarray(image.array), image.geometry))
        filled.append(info)
    return filled


def _apart_from(reviewed: np.ndarray, held: np.ndarray) -> np.ndarray:
    """The reviewed slices to train on: none right next to a held-out slice. On a fully corrected
    CT (1-3 mm slices) the neighbour is nearly the same image in nearly the same labels, so the
    gate judged the new model partly on what it was taught. Where that would leave the correction
    nothing to teach (two reviewed slices side by side), its neighbours train all the same."""
    apart = reviewed[~np.isin(reviewed, np.union1d(held - 1, held + 1))]
    return apart if apart.size else reviewed


def _shared_heldout_slices(project: Project, usable: list, fraction: float) -> dict[str, np.ndarray]:
    """Slice hold-out (too few scans for whole volumes): the copies of one scan saved under several
    names each held out their own block, and trained on the slices another copy held out. Each
    copy now holds out the union of the copies' blocks (canonical slice indices, one image)."""
    groups: dict[str, list] = {}
    for info in usable:
        groups.setdefault(info.image_fingerprint, []).append(info)
    shared: dict[str, np.ndarray] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        blocks = []
        for info in members:
            correction = project.read_correction(info.name)
            labels, review = Reorientation.of(info.geometry).canonical_copies(
                correction.labels, correction.review
            )
            reviewed = np.flatnonzero(review.reshape(len(review), -1).any(axis=1))
            blocks.append(heldout_slices(reviewed, fraction, judging_weights(labels, review, reviewed)))
        union = np.unique(np.concatenate(blocks))
        shared.update({info.name: union for info in members})
    return shared


def correction_weight(prior_slices: int, correction_slices: int, share: float) -> float:
    """Sampling weight of correction slices so they make up ``share`` of the labeled draws.

    Never below 1: corrections are never drawn less often than a prior slice.
    """
    if prior_slices <= 0 or correction_slices <= 0 or share <= 0:
        return 1.0
    return max(1.0, share / (1.0 - share) * prior_slices / correction_slices)


def slices_of_correction(
    labels: np.ndarray, review: np.ndarray, fraction: float, shared: np.ndarray | None, whole_volumes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(held out, trained): the canonical reviewed slices of a correction that judge the new model
    and those that train it. With whole volumes held out, a training correction holds none out;
    else its block (``shared``: the slices all copies of its scan hold out), and the reviewed
    slices next to it do not train (see :func:`_apart_from`)."""
    reviewed = np.flatnonzero(review.reshape(len(review), -1).any(axis=1))
    if whole_volumes:
        return reviewed[:0], reviewed
    if shared is not None:  # a copy of another correction's scan: the same slices held out
        held = np.intersect1d(reviewed, shared)
    else:
        held = heldout_slices(reviewed, fraction, judging_weights(labels, review, reviewed))
    # the rest train, apart from the held-out slices (a copy's: from those all copies hold out)
    return held, _apart_from(np.setdiff1d(reviewed, held), held if shared is None else shared)


def _correction_slices(
    project: Project, usable, heldout_volumes: set[str], fraction: float, shared: dict[str, np.ndarray]
) -> int:
    """How many reviewed slices the corrections contribute to training: those
    :func:`slices_of_correction` gives, as :meth:`_StoreBuilder.add_correction` stores them (the
    count set the corrections' sampling weight; counting the held-out block's neighbours, which do
    not train, gave them 0.40 of the draws instead of the 0.5 asked)."""
    total = 0
    for info in usable:
        if info.name in heldout_volumes:
            continue
        correction = project.read_correction(info.name)
        labels, review = Reorientation.of(info.geometry).canonical_copies(
            correction.labels, correction.review
        )
        trained = slices_of_correction(
            labels, review, fraction, shared.get(info.name), bool(heldout_volumes)
        )[1]
        total += len(trained)
    return total


def store_digest(image: np.ndarray, geometry) -> str:
    """sha256 of a canonical, normalised image as a store holds it (float16) and its grid (None: a
    grid the store does not know): one scan read from different files (another value type, a copy
    under another name) gives one digest."""
    digest = hashlib.sha256()
    grid = (  # + 0.0: -0.0 and 0.0 are one value (a direction read by two readers)
        None
        if geometry is None
        else {key: [round(float(v), 3) + 0.0 for v in values] for key, values in geometry.to_dict().items()}
    )
    digest.update(json.dumps({"shape": list(image.shape), "grid": grid}, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(image, dtype=np.float16).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CorrectedScan:
    """A scan the user corrected: the correction (the first of its copies), the canonical slices its
    corrections reviewed, and whether any of them trains the new model (not held out whole)."""

    name: str
    reviewed: np.ndarray
    trained: bool


def _scans_of_corrections(
    project: Project, usable: list, heldout_volumes: set[str]
) -> dict[str, CorrectedScan]:
    """store_digest (with the grid and without it) of each correction's scan, as the store would
    hold it -> what the corrections of that scan are (read once, before the prior data goes in)."""
    scans: dict[str, CorrectedScan] = {}
    for info in usable:
        correction = project.read_correction(info.name)
        turn = Reorientation.of(info.geometry)
        geometry = turn.canonical_geometry(info.geometry, correction.labels.shape)
        canonical, review = turn.canonical_copies(
            project.normalization.apply(correction.image.array), correction.review
        )
        reviewed = np.flatnonzero(review.reshape(len(review), -1).any(axis=1))
        trained = info.name not in heldout_volumes
        for grid in (geometry, None):
            key = store_digest(canonical, grid)
            earlier = scans.get(key, CorrectedScan(info.name, reviewed, trained))
            scans[key] = CorrectedScan(
                earlier.name, np.union1d(earlier.reviewed, reviewed), earlier.trained or trained
            )
    return scans


def _add_prior_training(
    project: Project, store: SliceStore, corrected: dict[str, CorrectedScan], warn
) -> dict[str, Any]:
    """The project's prior data: its training volumes as labeled data (its validation cases are
    added after the corrections, :meth:`_StoreBuilder.add_prior_validation`). On a training
    volume whose scan the user corrected, the slices the user reviewed are left out: their prior
    labels are the ones the user corrected away, and they were taught beside the correction (and
    on the gate's held-out slices of it); its other slices keep their prior labels."""
    added: dict[str, Any] = {"slices": 0, "train": []}
    if project.prior_store is None:
        return added
    with SliceStore.open(project.prior_store) as prior:
        for name in prior.volume_names("labeled"):
            stored = prior.read_volume(name)
            # a volume stored without its spacing stays so (its 1 mm are placeholders: the
            # refitted error model must not measure millilitres on them)
            geometry = stored.geometry if prior.volume_info(name).spacing_known else None
            in_plane = prior.volume_info(name).in_plane_mm  # kept when only some slices stay
            kept = np.arange(stored.image.shape[0])
            found = corrected.get(store_digest(stored.image, geometry))
            if found is not None:
                kept = np.setdiff1d(kept, found.reviewed)
                warn(
                    f"prior training volume {name!r} is the scan of correction {found.name!r}: its "
                    f"{len(found.reviewed)} slice(s) the user reviewed are taught from the correction only"
                )
                if not kept.size:
                    continue
                geometry = None  # some slices of it: no longer one grid
            review = None if stored.review is None else stored.review[kept] > 0
            store.add_volume(
                f"prior~{name}",
                stored.image[kept],
                stored.label[kept],
                review,
                geometry,
                "labeled",
                "prior data",
                in_plane_mm=in_plane,
            )
            added["slices"] += len(kept)
            added["train"].append(name)
    return added


def _add_judging_volume(store, name, image, labels, review, geometry, source, warn, in_plane=None) -> bool:
    """A held-out correction, judged on every voxel the user reviewed (drew, corrected or accepted)."""
    judged = review > 0
    if not judged.any():
        warn(f"held-out {name!r} has no reviewed voxels; it cannot judge the new model")
        return False
    store.add_volume(name, image, labels, judged, geometry, split="val", source=source, in_plane_mm=in_plane)
    return True


def _read_unlabeled(scan, warn, normalize):
    """The scan read and normalised, or None (with a warning) when it cannot be used any more."""
    problem = scan.problem()
    if problem == "missing" or (problem and problem.startswith("unreadable")):
        warn(f"{scan.path}: unlabeled scan {problem}; skipped")
        return None
    if problem:
        warn(f"{scan.path}: unlabeled scan {problem}; used as it is now")
    try:
        volume, _ = canonical_volume(read_volume(scan.path))
        return volume.like(normalize(volume.array), "image")
    except (CGSError, ValueError) as error:
        warn(f"skipped unlabeled scan: {error}")
        return None
