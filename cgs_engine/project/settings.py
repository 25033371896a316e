"""A project's settings (``project.json`` "settings"): their defaults and their checks."""

from __future__ import annotations

from typing import Any

RETRAIN_KEEP = ("final", "best")
RETRAIN_ERROR_MODEL = ("refit", "inherit")
DEFAULT_SETTINGS: dict[str, Any] = {
    "retrain_after_n": None,  # opt-in: suggest a retrain after this many new corrected volumes
    "heldout_fraction": 0.25,  # share of corrected volumes set aside to compare models
    "activation_tolerance": 0.0,  # activate when new held-out Dice >= active - tolerance (0..1)
    "retrain_minutes": 10.0,  # default budget when neither minutes nor iterations are given
    "thorough_minutes": 240.0,  # the same for the thorough mode (cgs retrain --thorough)
    # with prior data: the share of labeled training slices drawn from corrections (at least
    # their natural share), so a few corrected volumes are not drowned by the prior data
    "correction_share": 0.5,
    # the model a retrain keeps: "final" (the EMA teacher at the end) or "best" (the training
    # loop's best on the held-out data, which then also judges it: an optimistic comparison)
    "retrain_keep": "final",
    # a version about to be activated gets its own likely-wrong calibration, fitted on the run's
    # labeled volumes ("refit"), or keeps its parent's ("inherit": faster, the parent's errors)
    "retrain_error_model": "refit",
    "train": {},  # TrainConfig overrides for retraining (e.g. batch sizes, device)
}


def checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    after = settings["retrain_after_n"]
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 1):
        raise ValueError(f"retrain_after_n must be null or a positive integer, got {after!r}")
    share = settings["correction_share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        # (1.0 divided by zero in the retrain, "abc" failed there with a traceback, 1.5 and -1
        # were kept and ignored in silence)
        raise ValueError(
            f"correction_share must be a number in [0, 1) (0: the corrections' natural share), got {share!r}"
        )
    if not 0 < float(settings["heldout_fraction"]) <= 0.5:
        raise ValueError("heldout_fraction must be in (0, 0.5]")
    if not 0 <= float(settings["activation_tolerance"]) < 1:
        raise ValueError("activation_tolerance must be in [0, 1) (a Dice difference)")
    for key in ("retrain_minutes", "thorough_minutes"):
        if not float(settings[key]) > 0:
            raise ValueError(f"{key} must be positive")
    if settings["retrain_keep"] not in RETRAIN_KEEP:
        keep = settings["retrain_keep"]
        raise ValueError(f"retrain_keep must be one of {', '.join(RETRAIN_KEEP)}, got {keep!r}")
    if settings["retrain_error_model"] not in RETRAIN_ERROR_MODEL:
        given = settings["retrain_error_model"]
        raise ValueError(
            f"retrain_error_model must be one of {', '.join(RETRAIN_ERROR_MODEL)}, got {given!r}"
        )
    if not isinstance(settings["train"], dict):
        raise ValueError("train must be an object of training settings")
    return settings
