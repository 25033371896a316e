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
from cgs_engine.review.calibrate import BAND, calibration_case, case_spacing, fit_on_cases, reference_voxel
from cgs_engine.review.error_model import ErrorModel, save_error_model, sidecar_path
from cgs_engine.volume import Geometry, Volume

CASES_FROM = ("all", "train")  # which labeled cases of the prior data calibrate the error model


def fit_from_prior(
    checkpoint_path: str | os.PathLike,
    prior: str | os.PathLike | None = None,
    l2: float | str = "auto",
    device: str = "auto",
    report: Callable[[str], None] | None = None,
    cases_from: str = "all",
) -> ErrorModel:
    """Fit the error model of a checkpoint on the labeled cases of its prior data (found beside it).

    ``cases_from="all"``: the training cases and the validation cases; ``"train"``: the training
    cases only. A model trained on few patients has nearly learnt them by heart, so on its own
    training cases it errs less, and differently, than on a new patient, and an error model fitted
    there alone can rank worse than the uncalibrated score (ACDC, 3 training patients: average
    precision 0.346 against the fallback's 0.359 on held-out patients). Adding validation cases,
    which the model was at most picked on, never trained on, gave 0.401 there (see README).
    """
    if cases_from not in CASES_FROM:
        raise CGSError(f"cases_from must be one of {CASES_FROM}, got {cases_from!r}")
    predictor = Predictor(checkpoint_path, device=device)
    source = prior if prior is not None else find_model_prior(checkpoint_path)
    if source is None:
        raise CGSError(
            f"{checkpoint_path}: no prior data found (a {Path(checkpoint_path).stem}.prior folder beside "
            "it or its training run's store); give the labeled data it was trained on (--prior-data)"
        )
    summary, volumes = read_prior(source, predictor.class_names, predictor.normalization)
    wanted = ("labeled", "val") if cases_from == "all" else ("labeled",)  # the store's split names
    # The evidence's widths are counted in one voxel for every case and every later scan: the
    # cases' median spacing, so a first pass reads their geometry (slices cut out of a scan count
    # with their pixel spacing). Volumes of unknown spacing alone leave each scan's own voxels.
    spacings, in_planes = [], []
    for _name, split, image, _label, review, geometry, in_plane in volumes:
        if split in wanted and _fully_reviewed(review):
            if geometry is not None:
                spacings.append(case_spacing(Volume(image, geometry)))
            elif in_plane is not None:
                in_planes.append(in_plane)
    reference = reference_voxel(spacings, in_planes)
    _summary, volumes = read_prior(source, predictor.class_names, predictor.normalization)
    cases, validation = [], []
    for name, split, image, label, review, geometry, in_plane in volumes:
        if split not in wanted:
            continue
        if not _fully_reviewed(review):
            # A partly reviewed volume (a project's corrections) holds unreviewed voxels labeled
            # background: as a reference they would teach "the model is wrong" wherever it found
            # an organ nobody looked at, and understate every organ's volume.
            if report is not None:
                report(f"{name}: skipped (only partly reviewed: its labels are not a full reference)")
            continue
        known = geometry is not None
        volume = Volume(image, geometry if known else Geometry())
        cases.append(
            calibration_case(
                predictor,
                name,
                volume,
                np.asarray(label),
                True,
                spacing_known=known,
                reference_zyx=reference,
                in_plane_mm=in_plane,
            )
        )
        if split != "labeled":
            validation.append(name)
        if report is not None:
            role = "" if split == "labeled" else " (validation)"
            case = cases[-1]
            sample = f" (a sample of {case.wrong.size})" if case.wrong.size < case.band_voxels else ""
            report(
                f"{name}{role}: {case.band_voxels} voxels near the organs{sample}, "
                f"{int(case.wrong.sum())} wrong"
            )
    if len(cases) < 2:
        raise CGSError(f"{source}: {len(cases)} labeled case(s); calibrating needs at least 2")
    record = {
        "checkpoint": Path(checkpoint_path).name,
        "weights_sha256": weights_digest(predictor.checkpoint.state_dict),
        "prior_data": Path(summary.source).name,
        "cases": [case.name for case in cases],
        "validation_cases": validation,
        "band_voxels": BAND,
    }
    return fit_on_cases(cases, predictor.class_names, l2, record, report, reference_zyx=reference)


def _fully_reviewed(review) -> bool:
    return review is None or bool(np.all(np.asarray(review) > 0))


def write_error_model(
    checkpoint_path: str | os.PathLike, overwrite: bool = False, **fit_options
) -> tuple[ErrorModel, Path]:
    """Fit a checkpoint's error model on its prior data (``fit_from_prior``) and write it beside
    the checkpoint (``model.pt`` -> ``model.review.json``), where every prediction with it finds it."""
    model = fit_from_prior(checkpoint_path, **fit_options)
    return model, save_error_model(model, sidecar_path(checkpoint_path), overwrite=overwrite)
