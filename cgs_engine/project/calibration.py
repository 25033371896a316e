"""Fit a checkpoint's error model on its prior data: the labeled training cases found beside it.

It predicts each case (``cgs_engine.infer``) and reads the cases from the prior data
(``cgs_engine.project.prior``), so it lives above both; the fitting itself is
``cgs_engine.review.calibrate`` and ``cgs_engine.review.error_model``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cgs_engine.checkpoint import weights_digest
from cgs_engine.errors import CGSError
from cgs_engine.infer import Predictor
from cgs_engine.project.prior import find_model_prior, read_prior
from cgs_engine.review.calibrate import BAND, calibration_case, choose_l2, typical_volumes
from cgs_engine.review.error_features import size_column
from cgs_engine.review.error_model import ErrorModel, fit_error_model
from cgs_engine.volume import Volume


def fit_from_prior(
    checkpoint_path: str | os.PathLike,
    prior: str | os.PathLike | None = None,
    l2: float | str = "auto",
    device: str = "auto",
    report: Callable[[str], None] | None = None,
) -> ErrorModel:
    """Fit the error model of a checkpoint on the "train" cases of its prior data (found beside it)."""
    predictor = Predictor(checkpoint_path, device=device)
    source = prior if prior is not None else find_model_prior(checkpoint_path)
    if source is None:
        raise CGSError(
            f"{checkpoint_path}: no prior data found (a {Path(checkpoint_path).stem}.prior folder beside "
            "it or its training run's store); give the labeled data it was trained on"
        )
    summary, volumes = read_prior(source, predictor.class_names, predictor.normalization)
    cases = []
    for name, split, image, label, _review, geometry in volumes:
        if split != "labeled":  # the prior's validation cases stay out: models are picked on them
            continue
        cases.append(calibration_case(predictor, name, Volume(image, geometry), np.asarray(label), True))
        if report is not None:
            report(
                f"{name}: {cases[-1].wrong.size} voxels near the organs, {int(cases[-1].wrong.sum())} wrong"
            )
    typical = typical_volumes(cases)
    for case in cases:  # the size term needs the typical volumes, known once every case is read
        case.evidence.columns["size"] = size_column(case.evidence.near, case.evidence.organ_ml, typical)
    if len(cases) < 2:
        raise CGSError(f"{source}: {len(cases)} training case(s); calibrating needs at least 2")
    record = {
        "checkpoint": Path(checkpoint_path).name,
        "weights_sha256": weights_digest(predictor.checkpoint.state_dict),
        "prior_data": Path(summary.source).name,
        "cases": [case.name for case in cases],
        "band_voxels": BAND,
    }
    if l2 == "auto":
        l2, record["l2_leave_one_out_ap"] = choose_l2(cases, predictor.class_names, typical, report)
    elif isinstance(l2, str):
        l2 = float(l2)
    return fit_error_model(
        [case.evidence for case in cases],
        [case.wrong for case in cases],
        predictor.class_names,
        typical,
        l2=l2,
        fitted_on=record,
    )
