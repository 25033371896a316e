"""Where a prediction is likely wrong, and how wrong each organ likely is, from one forward pass.

:func:`estimate_errors` runs the error model (``error_model``) over the evidence of a
prediction (``error_features``) and returns an :class:`ErrorEstimate`: the map (uint8, 255 =
1) the review queue ranks by, and per organ the expected wrong volume and the Dice the organ
would likely score against a careful correction. The expected numbers come from the
probabilities: a voxel labelled with the organ counts towards its false positives, a
background voxel next to it towards its false negatives, each with its probability of being
wrong. Without a calibrated model they are computed the same way from the fallback score: they
still order scans and organs, but are no volumes to quote (``ErrorEstimate.calibrated``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from cgs_engine.review.error_features import ZONES, NetworkMaps, collect_evidence
from cgs_engine.review.error_model import ErrorModel, UncalibratedScore


@dataclass(frozen=True)
class OrganErrors:
    predicted_ml: float
    likely_wrong_ml: float  # expected volume of wrongly labelled voxels at this organ (both sides)
    likely_missed_ml: float  # of which background that should be the organ
    estimated_dice: float  # expected Dice of the prediction against a corrected label (NaN: unknown)


@dataclass
class ErrorEstimate:
    map: np.ndarray  # uint8, 255 = 1: P(wrong) when calibrated, else a ranking score
    calibrated: bool
    organs: dict[int, OrganErrors] = field(default_factory=dict)  # class id -> figures

    def scan_score(self) -> float:
        """How wrong the scan likely is: 1 - the mean estimated Dice over its organs (NaN: no organ)."""
        dice = [o.estimated_dice for o in self.organs.values() if not math.isnan(o.estimated_dice)]
        return 1.0 - float(np.mean(dice)) if dice else float("nan")

    def likely_wrong_ml(self) -> float:
        return float(sum(o.likely_wrong_ml for o in self.organs.values()))

    def organ_table(self, class_names: list[str]) -> dict[str, dict[str, float]]:
        """Organ name -> its figures (predicted, likely wrong and missed mL, estimated Dice)."""
        return {class_names[class_id]: asdict(figures) for class_id, figures in self.organs.items()}

    def summary(self, class_names: list[str]) -> dict:
        """What `cgs predict --maps` writes beside the map (``<stem>_likely_wrong.json``)."""
        score = self.scan_score()
        return {
            "calibrated": self.calibrated,
            "scan_score": None if math.isnan(score) else score,
            "likely_wrong_ml": self.likely_wrong_ml(),
            "organs": {
                name: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                for name, row in self.organ_table(class_names).items()
            },
        }


def estimate_errors(
    maps: NetworkMaps,
    spacing_zyx: tuple[float, float, float],
    model: ErrorModel | UncalibratedScore,
) -> ErrorEstimate:
    """The likely-wrong map of a prediction and, for a calibrated model, the per-organ figures."""
    evidence = collect_evidence(maps, spacing_zyx, model.typical_ml or None, model.reference_spacing_zyx)
    probabilities = model.probabilities(evidence) if evidence.count else np.zeros(0, np.float32)
    as_uint8 = np.round(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
    return ErrorEstimate(
        map=evidence.to_volume(as_uint8, dtype=np.uint8),
        calibrated=model.calibrated,
        organs=_organ_figures(evidence, probabilities, len(maps.specialist_maps)),
    )


def _organ_figures(evidence, probabilities: np.ndarray, num_organs: int) -> dict[int, OrganErrors]:
    inside = (evidence.zone == ZONES.index("interior")) | (evidence.zone == ZONES.index("edge_in"))
    weights = probabilities.astype(np.float64)
    length = num_organs + 1
    false_positive = np.bincount(evidence.near[inside], weights=weights[inside], minlength=length)
    false_negative = np.bincount(evidence.near[~inside], weights=weights[~inside], minlength=length)
    figures = {}
    for class_id in range(1, length):
        predicted = evidence.organ_ml.get(class_id, 0.0) / evidence.voxel_ml
        fp, fn = float(false_positive[class_id]), float(false_negative[class_id])
        true_positive = max(predicted - fp, 0.0)
        denominator = 2 * true_positive + fp + fn
        figures[class_id] = OrganErrors(
            predicted_ml=predicted * evidence.voxel_ml,
            likely_wrong_ml=(fp + fn) * evidence.voxel_ml,
            likely_missed_ml=fn * evidence.voxel_ml,
            # nothing predicted and nothing likely missed: the organ may be absent from the scan
            estimated_dice=2 * true_positive / denominator if denominator > 0 else float("nan"),
        )
    return figures


def organ_lines(estimate: ErrorEstimate, class_names: Mapping[int, str] | list[str]) -> list[str]:
    """ "LeftParotid: likely wrong 3.2 mL of 24.0 mL (est. Dice 0.78)", worst organ first."""
    if not estimate.calibrated:
        return []
    names = dict(enumerate(class_names)) if isinstance(class_names, list) else dict(class_names)
    order = sorted(estimate.organs.items(), key=lambda item: -item[1].likely_wrong_ml)
    lines = []
    for class_id, organ in order:
        dice = "" if math.isnan(organ.estimated_dice) else f" (est. Dice {organ.estimated_dice:.2f})"
        lines.append(
            f"{names.get(class_id, f'class {class_id}')}: likely wrong {organ.likely_wrong_ml:.1f} mL "
            f"of {organ.predicted_ml:.1f} mL{dice}"
        )
    return lines
