"""The calibrated "likely wrong" probability of every voxel: a logistic regression on the error evidence.

Fitted on the labeled data the model was trained on (never on the patients it is judged on),
and stored as a small JSON file beside the checkpoint: ``default.pt`` -> ``default.review.json``.
The predictor's callers find it with :func:`error_model_for`. A model without one gets
:data:`UNCALIBRATED`: a fixed, parameter-free score (how far the voxel's label goes against
the smoothed shape of its nearest organ, raised where the heads disagree), good for ranking
but not a probability, so no "likely wrong: N mL" is claimed from it.

Design of the regression: every evidence column is taken once per zone (see
``error_features.ZONES``), plus an intercept per zone and per (organ, zone); columns are
standardised with the training mean and spread, and the weights carry an L2 penalty.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from cgs_engine.durable import write_json_atomically
from cgs_engine.errors import CGSError
from cgs_engine.review.error_features import ZONED, ZONES, ErrorEvidence

FORMAT = "napari-cgs-error-model"
# 2: ``reference_spacing_mm``, the voxel its evidence's widths are counted in (1: the scan's own
# voxels, read as before). An engine of version 1 would ignore it and read widths on another grid.
FORMAT_VERSION = 2
SIDECAR_SUFFIX = ".review.json"
DEFAULT_L2 = 1e-3

logger = logging.getLogger(__name__)


class ErrorModelError(CGSError):
    """An error model file that cannot be read or does not fit the checkpoint; one line."""


def design_names(num_classes: int) -> list[str]:
    """The regression's column names, in order."""
    names = [f"{feature}@{zone}" for zone in ZONES for feature in ZONED]
    names += [f"zone@{zone}" for zone in ZONES]
    names += [f"organ{k}@{zone}" for k in range(1, num_classes) for zone in ZONES]
    return names


def _design_column(evidence: ErrorEvidence, name: str) -> np.ndarray:
    what, zone = name.split("@")
    in_zone = evidence.zone == ZONES.index(zone)
    if what == "zone":
        return in_zone.astype(np.float32)
    if what.startswith("organ") and what[5:].isdigit():
        return (in_zone & (evidence.near == int(what[5:]))).astype(np.float32)
    return np.where(in_zone, evidence.columns[what], np.float32(0.0)).astype(np.float32)


def design_matrix(evidence: ErrorEvidence, names: Sequence[str]) -> np.ndarray:
    """[candidates, columns] float32 (for fitting; applying never builds it)."""
    if evidence.count == 0:  # no organ predicted: no candidates, and no feature columns either
        return np.zeros((0, len(names)), np.float32)
    return np.stack([_design_column(evidence, name) for name in names], axis=1)


@dataclass
class ErrorModel:
    class_names: list[str]
    columns: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    typical_ml: dict[int, float]  # class id -> the organ's median volume in the training labels
    fitted_on: dict[str, Any] = field(default_factory=dict)  # patients, checkpoint digest, date, scores
    # (z, y, x) mm: the evidence's widths are counted in voxels of this size (error_features);
    # None: in each scan's own voxels (fitted on volumes of unknown spacing, or a version 1 file)
    reference_spacing_zyx: tuple[float, float, float] | None = None

    calibrated = True

    def describes(self, weights_sha256: str) -> bool:
        """Whether this error model belongs to the checkpoint with these weights: the one it was
        fitted on, or one it was handed to on purpose (a retrained version inheriting its parent's,
        see :func:`assign_to`). A file from before digests were recorded cannot tell: accepted."""
        fitted = self.fitted_on.get("weights_sha256")
        assigned = self.fitted_on.get("assigned_to_weights_sha256")
        return fitted is None or weights_sha256 in (fitted, assigned)

    def probabilities(self, evidence: ErrorEvidence) -> np.ndarray:
        """P(the label is wrong) per candidate, float32; a column at a time, no full matrix."""
        if evidence.count == 0:  # no organ predicted: no candidates (and no feature columns)
            return np.zeros(0, np.float32)
        logit = np.full(evidence.count, self.bias, dtype=np.float64)
        for name, mean, scale, weight in zip(self.columns, self.mean, self.scale, self.weights, strict=True):
            if weight:
                logit += (weight / scale) * (_design_column(evidence, name) - mean)
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        reference = self.reference_spacing_zyx
        return {
            "format": FORMAT,
            # a file without a reference reads the same in a version 1 engine: keep it readable there
            "format_version": FORMAT_VERSION if reference is not None else 1,
            "class_names": list(self.class_names),
            "columns": list(self.columns),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "weights": [float(v) for v in self.weights],
            "bias": float(self.bias),
            "typical_ml": {str(k): float(v) for k, v in self.typical_ml.items()},
            "reference_spacing_mm": None if reference is None else [float(v) for v in reference],
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "error model") -> ErrorModel:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ErrorModelError(f"{source}: not a napari-cgs error model")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ErrorModelError(
                f"{source}: format {data['format_version']} is newer than this engine reads"
            )
        try:
            model = cls(
                class_names=[str(n) for n in data["class_names"]],
                columns=[str(c) for c in data["columns"]],
                mean=[float(v) for v in data["mean"]],
                scale=[float(v) for v in data["scale"]],
                weights=[float(v) for v in data["weights"]],
                bias=float(data["bias"]),
                typical_ml={int(k): float(v) for k, v in data["typical_ml"].items()},
                fitted_on=dict(data.get("fitted_on") or {}),
                reference_spacing_zyx=_reference(data.get("reference_spacing_mm")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ErrorModelError(
                f"{source}: damaged error model ({type(error).__name__}: {error})"
            ) from None
        expected = design_names(len(model.class_names))
        lengths = {len(model.mean), len(model.scale), len(model.weights)}
        if model.columns != expected or lengths != {len(expected)}:
            raise ErrorModelError(f"{source}: its columns do not match this engine's evidence; fit it again")
        if (
            not all(np.isfinite(model.weights + model.mean + model.scale + [model.bias]))
            or min(model.scale) <= 0
        ):
            raise ErrorModelError(f"{source}: holds non-finite weights or non-positive scales")
        return model


def _reference(value) -> tuple[float, float, float] | None:
    if value is None:
        return None
    reference = tuple(float(v) for v in value)
    if len(reference) != 3 or not all(np.isfinite(v) and v > 0 for v in reference):
        raise ValueError(f"reference_spacing_mm must be 3 positive mm values, got {value}")
    return reference  # type: ignore[return-value]


class UncalibratedScore:
    """The fallback without a fitted model: a fixed ranking score in [0, 1], not a probability.

    Organ voxels score how far the smoothed organ falls below them (a spike), background voxels
    how far it reaches over them (a dent); the inter-head disagreement raises either.
    """

    calibrated = False
    class_names: list[str] = []
    typical_ml: dict[int, float] = {}
    reference_spacing_zyx = None  # widths in each scan's own voxels

    def probabilities(self, evidence: ErrorEvidence) -> np.ndarray:
        if evidence.count == 0:
            return np.zeros(0, np.float32)
        inside = (evidence.zone == ZONES.index("interior")) | (evidence.zone == ZONES.index("edge_in"))
        smooth = evidence.columns["shape_1"]
        against_shape = np.where(inside, 1.0 - smooth, smooth)
        disagreement = evidence.columns["disagreement"]
        return (1.0 - (1.0 - against_shape) * (1.0 - disagreement)).astype(np.float32)


UNCALIBRATED = UncalibratedScore()


def sidecar_path(checkpoint_path: str | os.PathLike) -> Path:
    """``model.pt`` -> ``model.review.json`` in the same folder."""
    path = Path(checkpoint_path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def load_error_model(path: str | os.PathLike) -> ErrorModel:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ErrorModelError(f"{path}: no such error model file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ErrorModelError(f"{path}: not a readable error model ({type(error).__name__})") from None
    return ErrorModel.from_dict(data, str(path))


def save_error_model(model: ErrorModel, path: str | os.PathLike, overwrite: bool = False) -> Path:
    write_json_atomically(path, model.to_dict(), overwrite=overwrite)
    return Path(path)


def assign_to(model: ErrorModel, weights_sha256: str, why: str) -> ErrorModel:
    """A copy of ``model`` that :func:`error_model_for` accepts for the checkpoint with these
    weights although it was fitted on others (a retrained version inheriting its parent's)."""
    fitted_on = {**model.fitted_on, "assigned_to_weights_sha256": weights_sha256, "assigned_because": why}
    return replace(model, fitted_on=fitted_on)


def error_model_for(
    checkpoint_path: str | os.PathLike | None,
    class_names: Sequence[str],
    weights_sha256: str | None = None,
) -> ErrorModel | UncalibratedScore:
    """The fitted model beside a checkpoint when it exists and belongs to it, else UNCALIBRATED.

    It belongs when its classes are the checkpoint's and, given the checkpoint's
    ``weights_sha256``, it was fitted on (or assigned to) those weights: a ``model.pt``
    overwritten by another training (a resumed ``cgs train``, a copy over an old model) keeps the
    old ``model.review.json`` beside it, whose "likely wrong: N mL" would describe another
    model's errors. A damaged, mismatched or stale file is not an error here (the review still
    works, uncalibrated) but is logged in one line; ``cgs review --fit-error-model`` writes a new one.
    """
    if checkpoint_path is None:
        return UNCALIBRATED
    path = sidecar_path(checkpoint_path)
    if not path.is_file():
        return UNCALIBRATED
    try:
        model = load_error_model(path)
    except ErrorModelError as error:
        logger.warning("%s; the review runs uncalibrated", error)
        return UNCALIBRATED
    if list(model.class_names) != list(class_names):
        problem = "its classes are not the model's"
    elif weights_sha256 is not None and not model.describes(weights_sha256):
        problem = f"it was fitted on other weights than {Path(checkpoint_path).name} (stale)"
    else:
        return model
    logger.warning(
        "%s: %s; the review runs uncalibrated (`cgs review --fit-error-model %s --overwrite` fits it again)",
        path,
        problem,
        checkpoint_path,
    )
    return UNCALIBRATED


def fit_error_model(
    evidences: Sequence[ErrorEvidence],
    wrong: Sequence[np.ndarray],
    class_names: Sequence[str],
    typical_ml: dict[int, float],
    l2: float = DEFAULT_L2,
    fitted_on: dict[str, Any] | None = None,
    reference_zyx: tuple[float, float, float] | None = None,
) -> ErrorModel:
    """Fit on the candidates of several predictions; ``wrong[i]`` is a bool per candidate of ``evidences[i]``.

    Rows may be a subset of the candidates (e.g. those within the error band): pass the evidence
    already restricted (see ``ErrorEvidence.subset``). ``reference_zyx``: the voxel (mm) the
    evidence's widths were counted in (``collect_evidence``), recorded for every later prediction.
    """
    import torch  # lazy: torch costs 1.4 s; the panel loads this module to apply a fitted model (numpy)

    names = design_names(len(class_names))
    matrix = np.concatenate([design_matrix(e, names) for e in evidences], axis=0)
    target = np.concatenate([np.asarray(w, dtype=np.float32) for w in wrong])
    if len(matrix) != len(target):
        raise ValueError(f"{len(matrix)} rows of evidence but {len(target)} labels")
    if len(target) == 0:
        raise ErrorModelError("the model predicted no organ on any case: no voxels to learn its errors from")
    if target.min(initial=1.0) == target.max(initial=0.0):
        raise ErrorModelError("the training data hold no errors (or only errors): nothing to learn from")
    mean = matrix.mean(axis=0)
    scale = matrix.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a column constant in the training data gets no weight to speak of
    x = torch.from_numpy((matrix - mean) / scale)
    y = torch.from_numpy(target)
    weights = torch.zeros(x.shape[1], dtype=torch.float32, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss_value():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weights + bias, y)
        loss = loss + l2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_value)
    record = {"rows": int(len(target)), "error_rate": float(target.mean()), "l2": l2}
    record["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ErrorModel(
        class_names=list(class_names),
        columns=names,
        mean=mean.astype(float).tolist(),
        scale=scale.astype(float).tolist(),
        weights=weights.detach().numpy().astype(float).tolist(),
        bias=float(bias.detach()[0]),
        typical_ml={int(k): float(v) for k, v in typical_ml.items()},
        fitted_on={**record, **(fitted_on or {})},
        reference_spacing_zyx=_reference(reference_zyx),
    )
