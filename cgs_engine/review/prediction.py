"""The review queue of a prediction: its uncertain regions, their component map and the profile."""

from __future__ import annotations

from typing import Any

import numpy as np

from cgs_engine.review.regions import find_regions_with_map, slice_profile


def specialist_maps_by_id(prediction: Any) -> dict[int, np.ndarray]:
    """Each specialist head's own-class map, keyed by its class id."""
    names = list(prediction.class_names)
    return {names.index(name): volume.array for name, volume in prediction.specialist_maps.items()}


def analyse_prediction(prediction: Any) -> tuple[list[Any], np.ndarray | None, np.ndarray | None]:
    """Uncertain regions, their component map and the per-slice profile (empty without maps)."""
    if prediction.disagreement is None:
        return [], None, None
    regions, component_map = find_regions_with_map(
        prediction.disagreement.array,
        labels=prediction.labels.array,
        specialist_maps=specialist_maps_by_id(prediction),
        confidence=None if prediction.confidence is None else prediction.confidence.array,
        spacing_zyx=tuple(prediction.labels.geometry.spacing[::-1]),
    )
    return regions, component_map, slice_profile(prediction.disagreement.array)
