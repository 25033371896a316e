"""The pieces of fitting a checkpoint's error model on labeled data it was not graded on.

A model may be calibrated on its prior data (``cgs_engine.project.prior``: the ``<model>.prior/``
folder beside the checkpoint, or its run's slice store): the patients it was trained on and the
validation patients it was at most picked on; the patients it is judged on (new scans, a
benchmark's reported split) take no part. Each case is predicted once with the maps, the
evidence (``error_features``) of the voxels within ``BAND`` voxels of a predicted or reference
organ becomes the rows, and "wrong" is the prediction differing from the reference label there.
``cgs_engine.project.calibration.fit_from_prior`` runs them on a checkpoint's prior data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from cgs_engine.errors import CGSError
from cgs_engine.evaluate.ranking import average_precision, error_band
from cgs_engine.orientation import Reorientation
from cgs_engine.review.error_features import ErrorEvidence, collect_evidence, reference_spacing, size_column
from cgs_engine.review.error_model import ErrorModel, fit_error_model
from cgs_engine.review.prediction import canonical_network_maps

BAND = 3.0  # voxels: the rows are the voxels a contour reviewer looks at (as the benchmark scores)
# L2 penalties tried by "auto": each scored by leave-one-case-out average precision on the cases
L2_CHOICES = (1e-4, 1e-3, 1e-2)
# More cases than this are held out in this many blocks instead of one by one: each fold is a full
# fit. 26 ACDC volumes one by one: 20 s to predict them, 11 minutes to choose the L2 (2-core CPU
# beside two training runs), too long for the end of every `cgs train`.
MAX_L2_FOLDS = 6
# Rows kept per case. A model that finds "organ" nearly everywhere (a few iterations of `cgs train`,
# a scan of another modality) makes every voxel a row: 2,097,152 rows per 128^3 case took a 4-
# iteration run's calibration 13 minutes and 8 GB. A uniform sample of the rows fits the same
# logistic regression in expectation; a trained model's band is far smaller (OpenKBP 25,500 rows
# per patient, ACDC 40,300 per volume), so its calibration does not change.
MAX_ROWS_PER_CASE = 200_000


@dataclass
class CalibrationCase:
    name: str
    evidence: ErrorEvidence  # the candidates within the band only
    wrong: np.ndarray  # bool per row
    reference_ml: dict[int, float]  # volume of each organ in the reference labels
    band_voxels: int = 0  # voxels within the band, of which the rows are a sample when there are more
    spacing_known: bool = True  # False: the volume's spacing is a placeholder, its mL mean nothing


def typical_volumes(cases: list[CalibrationCase]) -> dict[int, float]:
    """Median volume (mL) of each organ over the cases' reference labels (organs present only).

    None when a case's spacing is unknown (a store imported without it, such as ``cgs import
    acdc``: 1 mm placeholder voxels): its "mL" are voxel counts, and an ACDC left ventricle of 8,000
    voxels read 2.9 log-units too small against its true-spacing prediction (1.37 x 1.37 x 10 mm).
    The size term is then left out, at the fit and at every prediction with the model.
    """
    if not all(case.spacing_known for case in cases):
        return {}
    ids = sorted({k for case in cases for k in case.reference_ml})
    typical = {}
    for class_id in ids:
        present = [case.reference_ml[class_id] for case in cases if case.reference_ml.get(class_id, 0) > 0]
        if present:
            typical[class_id] = float(np.median(present))
    return typical


def calibration_case(
    predictor,
    name: str,
    volume,
    reference: np.ndarray,
    normalized: bool,
    spacing_known: bool = True,
    reference_zyx: tuple[float, float, float] | None = None,
    in_plane_mm: tuple[float, float] | None = None,
) -> CalibrationCase:
    """Predict one labeled volume with its maps and keep the evidence rows within the band
    (``spacing_known=False``: the volume's spacing is a placeholder; see :func:`typical_volumes`;
    ``reference_zyx``: the voxel the evidence's widths are counted in, see :func:`reference_voxel`;
    ``in_plane_mm``: the pixel spacing of a placeholder volume's slices where it is known, slices
    cut out of a scan: read padded as training and the retrain's gate read them)."""
    # a placeholder spacing says nothing of the field of view: read as training read it, unpadded
    # (slices with a known pixel spacing: padded by it, as training padded them)
    prediction = predictor.predict(
        volume,
        maps=True,
        normalized=normalized,
        field_padding=spacing_known,
        in_plane_mm=None if spacing_known else in_plane_mm,
    )
    if prediction.disagreement is None:
        raise CGSError("the model has no specialist heads: it has no disagreement to calibrate")
    normalize = None if normalized else predictor.normalization.slab_normalizer(volume.array)
    maps, spacing, turn = canonical_network_maps(prediction, volume.array, normalize)
    if not spacing_known:
        spacing = placeholder_spacing(in_plane_mm, reference_zyx) or spacing
    # read as Predictor.predict reads it: canonical
    evidence = collect_evidence(maps, spacing, reference_zyx=reference_zyx)
    labels, reference = maps.labels, np.ascontiguousarray(turn.to_canonical(reference))
    band = evidence.take(error_band(labels, reference, BAND))
    in_band = sampled_rows(band, name)
    wrong = evidence.take(labels != reference)[in_band]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(reference.ravel().astype(np.int64), minlength=len(predictor.class_names))
    reference_ml = {k: float(counts[k]) * voxel_ml for k in range(1, len(predictor.class_names))}
    return CalibrationCase(
        name, evidence.subset(in_band), wrong, reference_ml, int(band.sum()), spacing_known
    )


def reference_voxel(spacings_zyx, in_planes_mm) -> tuple[float, float, float] | None:
    """The voxel an error model counts its widths in: the per-axis median spacing of its cases.

    ``spacings_zyx``: the canonical spacing of each case with a 3D grid; ``in_planes_mm``: the pixel
    spacing (row, column) of each case of slices cut out of a scan (a retrain's corrections), which
    count in-plane only. None when no case has a 3D grid (a store imported without spacing, with
    or without corrections): each scan's own voxels then, as nothing tells the slice thickness a
    later scan's slices would be measured against."""
    spacings, in_planes = list(spacings_zyx), list(in_planes_mm)
    if not spacings:
        return None
    z = reference_spacing(spacings)[0]
    rows = [s[1] for s in spacings] + [p[0] for p in in_planes]
    columns = [s[2] for s in spacings] + [p[1] for p in in_planes]
    return (z, *reference_spacing([(z, r, c) for r, c in zip(rows, columns, strict=True)])[1:])


def placeholder_spacing(in_plane_mm, reference_zyx) -> tuple[float, float, float] | None:
    """The spacing the evidence of a volume without a 3D grid is read at: its pixel spacing where
    known and the reference's slice (its slices may not even be neighbours), else the reference
    voxel itself (its own voxels); None without a reference."""
    if reference_zyx is None:
        return None
    if in_plane_mm is None:
        return tuple(reference_zyx)  # type: ignore[return-value]
    return (float(reference_zyx[0]), float(in_plane_mm[0]), float(in_plane_mm[1]))


def case_spacing(volume) -> tuple[float, float, float]:
    """A volume's (z, y, x) voxel spacing in the canonical layout the evidence is read in."""
    turn = Reorientation.of(volume.geometry)
    return tuple(turn.canonical_geometry(volume.geometry, volume.array.shape).spacing[::-1])


def sampled_rows(in_band: np.ndarray, name: str, most: int | None = None) -> np.ndarray:
    """``in_band`` (bool per candidate) with at most ``most`` (default ``MAX_ROWS_PER_CASE``) rows
    kept, drawn uniformly and the same each time for the same case name."""
    most = MAX_ROWS_PER_CASE if most is None else most
    rows = np.flatnonzero(in_band)
    if rows.size <= most:
        return in_band
    kept = np.random.default_rng(zlib.crc32(name.encode("utf-8"))).choice(rows, most, replace=False)
    sampled = np.zeros_like(in_band, dtype=bool)
    sampled[kept] = True
    return sampled


def held_out_groups(count: int, most: int = MAX_L2_FOLDS) -> list[range]:
    """Consecutive blocks of case indices, one per fold: each case alone while there are at most
    ``most`` cases (leave one case out), else ``most`` blocks of neighbours (the frames or phases of
    one patient are stored next to each other, so a patient tends to stay in one block)."""
    folds = min(count, most)
    return [range(f * count // folds, (f + 1) * count // folds) for f in range(folds)]


def choose_l2(
    cases: list[CalibrationCase], class_names, typical, report=None
) -> tuple[float, dict[str, float]]:
    """The L2 penalty with the best held-out average precision (pooled over the folds of
    ``held_out_groups``), and every score."""
    scores = {}
    groups = held_out_groups(len(cases))
    for l2 in L2_CHOICES:
        held_out, wrong = [], []
        for group in groups:
            rest = [c for i, c in enumerate(cases) if i not in group]
            model = fit_error_model(
                [c.evidence for c in rest], [c.wrong for c in rest], class_names, typical, l2
            )
            for index in group:
                held_out.append(model.probabilities(cases[index].evidence))
                wrong.append(cases[index].wrong)
        scores[f"{l2:g}"] = average_precision(np.concatenate(held_out), np.concatenate(wrong))
        if report is not None:
            how = "leave-one-case-out" if len(groups) == len(cases) else f"{len(groups)}-fold"
            report(f"L2 {l2:g}: {how} average precision {scores[f'{l2:g}']:.3f}")
    best = max(L2_CHOICES, key=lambda l2: scores[f"{l2:g}"])
    return best, scores


def fit_on_cases(
    cases: list[CalibrationCase],
    class_names,
    l2: float | str = "auto",
    fitted_on=None,
    report=None,
    reference_zyx: tuple[float, float, float] | None = None,
) -> ErrorModel:
    """The error model of these cases: typical organ volumes and the size column from them, the L2
    penalty by held-out average precision when ``l2`` is "auto" (leave one case out, or 6 blocks
    of cases when there are more; the scores are recorded in ``fitted_on``). ``reference_zyx``:
    the voxel the cases' evidence was counted in (:func:`calibration_case`), recorded in the model."""
    typical = typical_volumes(cases)
    for case in cases:  # the size term needs the typical volumes, known once every case is read
        case.evidence.columns["size"] = size_column(case.evidence.near, case.evidence.organ_ml, typical)
    record = dict(fitted_on or {})
    if l2 == "auto":
        l2, record["l2_leave_one_out_ap"] = choose_l2(cases, class_names, typical, report)
    elif isinstance(l2, str):
        l2 = float(l2)
    return fit_error_model(
        [case.evidence for case in cases],
        [case.wrong for case in cases],
        class_names,
        typical,
        l2=l2,
        fitted_on=record,
        reference_zyx=reference_zyx,
    )
