"""A long-lived predictor: checkpoint -> label map, specialist maps and disagreement on the input grid."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cgs_engine.checkpoint import ModelCheckpoint, build_network, load_checkpoint, weights_digest
from cgs_engine.infer.field import FieldPadding, padding_for_volume, trained_field_mm
from cgs_engine.infer.field import field_padding as pad_to_field  # `field_padding` names predict's switch
from cgs_engine.infer.slices import EVIDENCE, Cancelled, iterate_slice_probs, to_uint8
from cgs_engine.model.fold import fold_batch_norm
from cgs_engine.normalize import Normalization
from cgs_engine.orientation import Reorientation
from cgs_engine.review.error_model import error_model_for
from cgs_engine.review.likely_wrong import ErrorEstimate, estimate_errors
from cgs_engine.review.prediction import canonical_network_maps
from cgs_engine.runtime import resolve_runtime
from cgs_engine.volume import Geometry, Volume

# Bound on the float32 specialist probabilities held per batch (K x S channels at full slice size).
SPECIALIST_BYTES_PER_BATCH = 256 * 2**20

__all__ = ["Cancelled", "Prediction", "Predictor"]


@dataclass
class Prediction:
    labels: Volume  # uint8 class ids from the generalist
    class_names: list[str]
    specialist_maps: dict[str, Volume] = field(default_factory=dict)  # uint8 0..255 = P(my class)
    disagreement: Volume | None = None  # uint8 0..255 = soft inter-head disagreement
    confidence: Volume | None = None  # uint8 0..255 = max generalist probability (with maps only)
    seconds: float = 0.0
    # uint8 maps the review's error model reads (slices.EVIDENCE: background, margin, ...), with maps
    evidence: dict[str, Volume] = field(default_factory=dict)
    # where the labels are likely wrong, and per organ how much (cgs_engine.review.likely_wrong)
    errors: ErrorEstimate | None = None


class Predictor:
    """Holds one network in memory; ``predict`` may be called many times, ``swap`` replaces the model."""

    def __init__(
        self,
        checkpoint: str | Path | ModelCheckpoint,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 16,
    ) -> None:
        self.runtime = resolve_runtime(device, precision)
        self.batch_size = batch_size
        self.swap(checkpoint)

    def swap(self, checkpoint: str | Path | ModelCheckpoint) -> None:
        source = checkpoint if not isinstance(checkpoint, ModelCheckpoint) else "checkpoint"
        loaded = load_checkpoint(checkpoint) if not isinstance(checkpoint, ModelCheckpoint) else checkpoint
        model = fold_batch_norm(build_network(loaded, source)).to(self.runtime.device)
        if self.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.checkpoint, self.model = loaded, model
        self.normalization = Normalization.from_dict(loaded.normalization)
        # the calibrated error model beside the checkpoint file (model.review.json), else the fallback
        self.error_model = error_model_for(
            loaded.source or None, loaded.class_names, weights_digest(loaded.state_dict)
        )

    @property
    def class_names(self) -> list[str]:
        return self.checkpoint.class_names

    @property
    def has_specialists(self) -> bool:
        return getattr(self.model, "specialists", None) is not None

    def _batch_size(self, height: int, width: int) -> int:
        channels = 3 * max(1, len(self.class_names) - 1)
        fits = SPECIALIST_BYTES_PER_BATCH // max(1, channels * height * width * 4)
        return int(max(1, min(self.batch_size, fits)))

    def field_padding_for(self, geometry: Geometry, shape_zyx: tuple[int, int, int]) -> FieldPadding | None:
        """How :meth:`predict` pads the canonical slices of a volume of this geometry and shape to
        the trained field of view; raises where it cannot (callers check before reading voxels)."""
        turn = Reorientation.of(geometry)
        canonical = turn.to_canonical(np.broadcast_to(np.uint8(0), tuple(shape_zyx)))  # a view: no voxels
        spacing = turn.canonical_geometry(geometry, tuple(shape_zyx)).spacing
        return padding_for_volume(canonical.shape, spacing, self.checkpoint.scope)

    def predict(
        self,
        volume: Volume,
        maps: bool = True,
        progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        normalized: bool = False,
        field_padding: bool = True,
        in_plane_mm: tuple[float, float] | None = None,
    ) -> Prediction:
        """Raises ``Cancelled`` when ``cancel()`` turns true between slice batches.

        ``normalized``: the array is already in the model's intensity space (a volume read from a
        dataset store, which keeps images normalised); anything else is normalised here.
        ``field_padding=False``: the volume's spacing is a placeholder, so its slices are not
        widened to the trained field of view (:mod:`cgs_engine.infer.field`), as training did not.
        ``in_plane_mm``: the pixel spacing (row, column mm) of the canonical slices of a volume
        whose geometry is a placeholder (slices cut out of a scan): they are widened by it, as the
        training bank and the retrain's gate widen them.
        """
        started = time.perf_counter()
        image = volume.array
        normalize = None if normalized else self.normalization.slab_normalizer(image)
        want_maps = maps and self.has_specialists
        labels = np.zeros(image.shape, dtype=np.uint8)
        heads = self.class_names[1:]
        spec_maps = {name: np.zeros(image.shape, dtype=np.uint8) for name in heads} if want_maps else {}
        disagreement = np.zeros(image.shape, dtype=np.uint8) if want_maps else None
        evidence = {name: np.zeros(image.shape, dtype=np.uint8) for name in EVIDENCE} if want_maps else {}
        confidence = np.zeros(image.shape, dtype=np.uint8) if maps else None
        # The network reads axial slices in the orientation it was trained in (cgs_engine.orientation);
        # the outputs are written through canonical views of arrays on the input's own grid.
        turn = Reorientation.of(volume.geometry)
        canonical = turn.to_canonical
        (seen,) = turn.canonical_copies(image)
        if in_plane_mm is not None:
            padding = pad_to_field(seen.shape[1:], in_plane_mm, trained_field_mm(self.checkpoint.scope))
        elif field_padding:
            padding = self.field_padding_for(volume.geometry, image.shape)
        else:
            padding = None
        for batch in iterate_slice_probs(
            self.model,
            seen,
            self.checkpoint.input_size,
            self.runtime,
            self._batch_size(*(padding.padded_size(*seen.shape[1:]) if padding else seen.shape[1:])),
            specialists=want_maps,
            progress=progress,
            cancel=cancel,
            normalize=normalize,
            padding=padding,
        ):
            window = slice(batch.start, batch.stop)
            canonical(labels)[window] = batch.labels.numpy()
            if confidence is not None:
                canonical(confidence)[window] = to_uint8(batch.confidence).numpy()
            if batch.foreground is None:
                continue
            for k, name in enumerate(heads):
                canonical(spec_maps[name])[window] = batch.foreground[:, k].numpy()
            canonical(disagreement)[window] = batch.disagreement.numpy()
            for index, name in enumerate(EVIDENCE):
                canonical(evidence[name])[window] = batch.evidence[:, index].numpy()
        prediction = Prediction(
            labels=volume.like(labels, "labels"),
            class_names=list(self.class_names),
            specialist_maps={name: volume.like(array, "map") for name, array in spec_maps.items()},
            disagreement=None if disagreement is None else volume.like(disagreement, "map"),
            confidence=None if confidence is None else volume.like(confidence, "map"),
            evidence={name: volume.like(array, "map") for name, array in evidence.items()},
        )
        if want_maps:
            read, spacing, turn = canonical_network_maps(prediction, image, normalize)
            errors = estimate_errors(read, spacing, self.error_model)
            errors.map = np.ascontiguousarray(turn.from_canonical(errors.map))
            prediction.errors = errors
        prediction.seconds = time.perf_counter() - started
        return prediction
