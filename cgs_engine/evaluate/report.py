"""Summaries of per-volume metrics: averaging, a text table and a JSON-ready dict.

Averaging order: for each class, the mean over volumes; then the unweighted mean over
classes of those per-class means (a small organ counts as much as the liver).  Missing
values (None) are skipped and counted.  Dice of ``empty_pred``/``empty_gt`` cases is a real
0 and is averaged; ``absent`` cases (class in neither map) have no Dice and are skipped.
Standard deviations are population standard deviations (ddof=0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .metrics import (
    STATUS_ABSENT,
    STATUS_EMPTY_GT,
    STATUS_EMPTY_PRED,
    STATUS_OK,
    ClassMetrics,
    ClassSpec,
    class_ids,
)

METRIC_NAMES = ("dice", "jaccard", "hd95_mm", "asd_mm", "hd95_vox", "asd_vox")
PerVolume = Mapping[str, Mapping[int, ClassMetrics]]


@dataclass(frozen=True)
class MetricStat:
    """Mean and std of the values that exist; ``n`` used, ``n_missing`` skipped (None)."""

    mean: float | None
    std: float | None
    n: int
    n_missing: int


@dataclass(frozen=True)
class ClassSummary:
    class_id: int
    name: str
    n_volumes: int
    n_ok: int
    n_empty_pred: int
    n_empty_gt: int
    n_absent: int
    metrics: dict[str, MetricStat]


@dataclass(frozen=True)
class Summary:
    """Per-class summaries (in class order) and the mean over classes of their means."""

    classes: list[ClassSummary]
    mean: dict[str, MetricStat]
    n_volumes: int


def summarise(per_volume: PerVolume, class_names: ClassSpec | None = None) -> Summary:
    """Summarise ``{volume name: {class id: ClassMetrics}}``.

    ``class_names`` is ``{id: name}`` or a list of ids (named by their id); None takes every
    class found.  A class missing from a volume's dict was not evaluated there and is not
    counted for that volume.
    """
    if class_names is None:
        class_names = sorted({c for results in per_volume.values() for c in results})
    names = dict(class_names) if isinstance(class_names, Mapping) else {c: str(c) for c in class_names}
    classes = [_summarise_class(c, names[c], per_volume) for c in class_ids(class_names)]
    mean = {metric: _stat([summary.metrics[metric].mean for summary in classes]) for metric in METRIC_NAMES}
    return Summary(classes=classes, mean=mean, n_volumes=len(per_volume))


TABLE_HEADER = ("class", "n", "Dice", "Jaccard", "HD95 mm", "ASD mm", "HD95 vox", "ASD vox")
TABLE_COUNT_HEADER = ("empty pred", "empty gt", "absent")


def format_table(summary: Summary) -> str:
    """Plain aligned text table: one row per class and a final row with the class means."""
    rows = [[*TABLE_HEADER, *TABLE_COUNT_HEADER]]
    for item in summary.classes:
        counts = (item.n_empty_pred, item.n_empty_gt, item.n_absent)
        rows.append(_table_row(item.name, item.metrics, counts))
    totals = tuple(
        sum(getattr(item, field) for item in summary.classes)
        for field in ("n_empty_pred", "n_empty_gt", "n_absent")
    )
    rows.append(_table_row("mean", summary.mean, totals))

    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(width) if col == 0 else cell.rjust(width)
            for col, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    rule = "-" * len(lines[0])
    lines = [lines[0], rule, *lines[1:-1], rule, lines[-1]]
    lines.append(
        f"{summary.n_volumes} volumes; n = volumes where the class is in prediction or ground truth."
    )
    lines.append(
        "mean row: unweighted mean over classes of the per-class means (n = classes); '-' = no value."
    )
    return "\n".join(lines)


def to_json(summary: Summary, per_volume: PerVolume | None = None) -> dict[str, Any]:
    """JSON-serialisable dict of the summary and, if given, every per-volume result.

    Dict keys are strings (class ids as decimal strings) so ``json.loads(json.dumps(d)) == d``;
    missing values are None, never NaN.
    """
    data: dict[str, Any] = {
        "n_volumes": summary.n_volumes,
        "classes": [
            {
                **{k: v for k, v in asdict(item).items() if k != "metrics"},
                "metrics": {m: _clean(asdict(stat)) for m, stat in item.metrics.items()},
            }
            for item in summary.classes
        ],
        "mean": {m: _clean(asdict(stat)) for m, stat in summary.mean.items()},
    }
    if per_volume is not None:
        data["volumes"] = {
            str(volume): {str(c): _clean(asdict(metrics)) for c, metrics in results.items()}
            for volume, results in per_volume.items()
        }
    return data


def _summarise_class(class_id: int, name: str, per_volume: PerVolume) -> ClassSummary:
    results = [volume[class_id] for volume in per_volume.values() if class_id in volume]
    statuses = [r.status for r in results]
    return ClassSummary(
        class_id=class_id,
        name=name,
        n_volumes=len(results),
        n_ok=statuses.count(STATUS_OK),
        n_empty_pred=statuses.count(STATUS_EMPTY_PRED),
        n_empty_gt=statuses.count(STATUS_EMPTY_GT),
        n_absent=statuses.count(STATUS_ABSENT),
        metrics={metric: _stat([getattr(r, metric) for r in results]) for metric in METRIC_NAMES},
    )


def _stat(values: list[float | None]) -> MetricStat:
    present = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not present:
        return MetricStat(None, None, 0, len(values))
    array = np.asarray(present)
    return MetricStat(float(array.mean()), float(array.std()), len(present), len(values) - len(present))


def _table_row(name: str, metrics: Mapping[str, MetricStat], counts: tuple[int, ...]) -> list[str]:
    dice = metrics["dice"]
    dice_cell = "-" if dice.mean is None else f"{dice.mean:.4f}±{dice.std:.4f}"
    distances = (_fmt(metrics[m].mean, 2) for m in ("hd95_mm", "asd_mm", "hd95_vox", "asd_vox"))
    return [name, str(dice.n), dice_cell, _fmt(metrics["jaccard"].mean, 4), *distances, *map(str, counts)]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _clean(record: dict[str, Any]) -> dict[str, Any]:
    """Plain Python scalars with non-finite floats replaced by None."""
    cleaned: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, (float, np.floating)):
            value = float(value) if math.isfinite(value) else None
        elif isinstance(value, np.integer):
            value = int(value)
        cleaned[key] = value
    return cleaned
