"""The review queue of a prediction: its uncertain regions, their component map and the profile."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from cgs_engine.orientation import Reorientation
from cgs_engine.review.error_features import NetworkMaps
from cgs_engine.review.regions import find_regions_with_map, slice_profile


def specialist_maps_by_id(prediction: Any) -> dict[int, np.ndarray]:
    """Each specialist head's own-class map, keyed by its class id."""
    names = list(prediction.class_names)
    return {names.index(name): volume.array for name, volume in prediction.specialist_maps.items()}


def network_maps(prediction: Any, image: np.ndarray, normalize=None) -> NetworkMaps:
    """What the error model reads from a prediction made with maps (``Predictor.predict(maps=True)``).

    ``image`` is the scan predicted (raw, with the predictor's ``normalize``; or already normalised).
    """
    evidence = prediction.evidence
    return NetworkMaps(
        labels=prediction.labels.array,
        confidence=prediction.confidence.array,
        background=evidence["background"].array,
        margin=evidence["margin"].array,
        disagreement=prediction.disagreement.array,
        generalist_vs_specialists=evidence["generalist_vs_specialists"].array,
        specialist_maps=specialist_maps_by_id(prediction),
        image=image,
        normalize=normalize,
    )


def canonical_network_maps(
    prediction: Any, image: np.ndarray, normalize=None
) -> tuple[NetworkMaps, tuple[float, float, float], Reorientation]:
    """:func:`network_maps` in the canonical layout (axis 0 from the feet to the head), its voxel
    spacing (z, y, x) there, and the reorientation that takes results back to the file's layout.

    The error model reads axis 0 as the axial slice axis (an organ's extent along it, its cross
    sections), as in the stores it is fitted on: on a sagittally stored scan it read sagittal
    slices, and the likely-wrong map, its figures and the review queue changed with the storage."""
    geometry = prediction.labels.geometry
    turn = Reorientation.of(geometry)
    maps = network_maps(prediction, image, normalize)
    spacing = turn.canonical_geometry(geometry, prediction.labels.array.shape).spacing[::-1]
    if turn.is_identity:
        return maps, spacing, turn

    def canonical(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(turn.to_canonical(array))

    turned = {
        name: canonical(getattr(maps, name))
        for name in ("labels", "confidence", "background", "margin", "disagreement")
    }
    turned["generalist_vs_specialists"] = canonical(maps.generalist_vs_specialists)
    turned["image"] = canonical(maps.image)
    specialists = {class_id: canonical(array) for class_id, array in maps.specialist_maps.items()}
    return replace(maps, **turned, specialist_maps=specialists), spacing, turn


def analyse_prediction(prediction: Any) -> tuple[list[Any], np.ndarray | None, np.ndarray | None]:
    """Uncertain regions, their component map and the per-slice profile (empty without maps).

    With a calibrated error estimate the regions are where the labels are likely wrong, ranked by
    the expected wrong volume; without one, where the heads disagree or the generalist is unsure.
    """
    if prediction.disagreement is None:
        return [], None, None
    errors = getattr(prediction, "errors", None)
    likely_wrong = errors.map if errors is not None and errors.calibrated else None
    regions, component_map = find_regions_with_map(
        prediction.disagreement.array,
        labels=prediction.labels.array,
        specialist_maps=specialist_maps_by_id(prediction),
        confidence=None if prediction.confidence is None else prediction.confidence.array,
        spacing_zyx=tuple(prediction.labels.geometry.spacing[::-1]),
        likely_wrong=likely_wrong,
    )
    return regions, component_map, slice_profile(prediction.disagreement.array)
