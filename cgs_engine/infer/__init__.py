"""Inference: a long-lived Predictor and the slice-batched forward pass it uses."""

from cgs_engine.infer.export import write_prediction
from cgs_engine.infer.predictor import Cancelled, Prediction, Predictor

__all__ = ["Cancelled", "Prediction", "Predictor", "write_prediction"]
