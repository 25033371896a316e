"""Evaluation of label maps against ground truth: Dice, Jaccard, HD95, ASD, reports, pairing.

See :mod:`.surface` for the surface and HD95 conventions and :mod:`.metrics` for the
empty-mask policy.
"""

from .metrics import (
    STATUS_ABSENT,
    STATUS_EMPTY_GT,
    STATUS_EMPTY_PRED,
    STATUS_OK,
    STATUSES,
    ClassMetrics,
    dice_per_class,
    evaluate_masks,
    evaluate_volume,
)
from .pairing import PairResult, pair_files
from .report import ClassSummary, MetricStat, Summary, format_table, summarise, to_json
from .surface import SurfaceDistances, surface_distance_metrics, surface_voxels

__all__ = [
    "STATUSES",
    "STATUS_ABSENT",
    "STATUS_EMPTY_GT",
    "STATUS_EMPTY_PRED",
    "STATUS_OK",
    "ClassMetrics",
    "ClassSummary",
    "MetricStat",
    "PairResult",
    "Summary",
    "SurfaceDistances",
    "dice_per_class",
    "evaluate_masks",
    "evaluate_volume",
    "format_table",
    "pair_files",
    "summarise",
    "surface_distance_metrics",
    "surface_voxels",
    "to_json",
]
