"""The pieces of fitting a checkpoint's error model on the labeled data it was trained on.

The training patients are the data a model may be calibrated on without grading itself on its
own exam: the patients it is judged on (validation, new scans) take no part. Its prior data
(``cgs_engine.project.prior``: the ``<model>.prior/`` folder beside the checkpoint, or its run's
slice store) hold exactly those, split "train". Each is predicted once with the maps, the
evidence (``error_features``) of the voxels within ``BAND`` voxels of a predicted or reference
organ becomes the rows, and "wrong" is the prediction differing from the reference label there.
``cgs_engine.project.calibration.fit_from_prior`` runs them on a checkpoint's prior data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgs_engine.errors import CGSError
from cgs_engine.evaluate.ranking import average_precision, error_band
from cgs_engine.review.error_features import ErrorEvidence, collect_evidence
from cgs_engine.review.error_model import fit_error_model
from cgs_engine.review.prediction import network_maps

BAND = 3.0  # voxels: the rows are the voxels a contour reviewer looks at (as the benchmark scores)
# L2 penalties tried by "auto": each scored by leave-one-case-out average precision on the cases
L2_CHOICES = (1e-4, 1e-3, 1e-2)


@dataclass
class CalibrationCase:
    name: str
    evidence: ErrorEvidence  # the candidates within the band only
    wrong: np.ndarray  # bool per row
    reference_ml: dict[int, float]  # volume of each organ in the reference labels


def typical_volumes(cases: list[CalibrationCase]) -> dict[int, float]:
    """Median volume (mL) of each organ over the cases' reference labels (organs present only)."""
    ids = sorted({k for case in cases for k in case.reference_ml})
    typical = {}
    for class_id in ids:
        present = [case.reference_ml[class_id] for case in cases if case.reference_ml.get(class_id, 0) > 0]
        if present:
            typical[class_id] = float(np.median(present))
    return typical


def calibration_case(
    predictor, name: str, volume, reference: np.ndarray, normalized: bool
) -> CalibrationCase:
    """Predict one labeled volume with its maps and keep the evidence rows within the band."""
    prediction = predictor.predict(volume, maps=True, normalized=normalized)
    if prediction.disagreement is None:
        raise CGSError("the model has no specialist heads: it has no disagreement to calibrate")
    labels = prediction.labels.array
    normalize = None if normalized else predictor.normalization.slab_normalizer(volume.array)
    spacing = tuple(volume.geometry.spacing[::-1])
    evidence = collect_evidence(network_maps(prediction, volume.array, normalize), spacing)
    in_band = evidence.take(error_band(labels, reference, BAND))
    wrong = evidence.take(labels != reference)[in_band]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    counts = np.bincount(reference.ravel().astype(np.int64), minlength=len(predictor.class_names))
    reference_ml = {k: float(counts[k]) * voxel_ml for k in range(1, len(predictor.class_names))}
    return CalibrationCase(name, evidence.subset(in_band), wrong, reference_ml)


def choose_l2(
    cases: list[CalibrationCase], class_names, typical, report=None
) -> tuple[float, dict[str, float]]:
    """The L2 penalty with the best leave-one-case-out average precision (pooled), and every score."""
    scores = {}
    for l2 in L2_CHOICES:
        held_out, wrong = [], []
        for index, case in enumerate(cases):
            rest = [c for i, c in enumerate(cases) if i != index]
            model = fit_error_model(
                [c.evidence for c in rest], [c.wrong for c in rest], class_names, typical, l2
            )
            held_out.append(model.probabilities(case.evidence))
            wrong.append(case.wrong)
        scores[f"{l2:g}"] = average_precision(np.concatenate(held_out), np.concatenate(wrong))
        if report is not None:
            report(f"L2 {l2:g}: leave-one-case-out average precision {scores[f'{l2:g}']:.3f}")
    best = max(L2_CHOICES, key=lambda l2: scores[f"{l2:g}"])
    return best, scores
