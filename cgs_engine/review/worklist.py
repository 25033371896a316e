"""Which scan to correct next: one score per scan and per organ, from one forward pass per scan.

A scan's score is 1 - the mean estimated Dice of its organs (``likely_wrong.ErrorEstimate``):
the worse the model likely did, the higher, and the more a correction of it would teach the
model. Per organ the worklist keeps the likely wrong volume (mL) and the estimated Dice, so a
reviewer opening the scan knows which organ to start with. Scans that cannot be read keep
their one-line reason and go to the end of the list.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cgs_engine.errors import CGSError
from cgs_engine.io import label_map_problem, read_volume
from cgs_engine.io.formats import describe_supported, is_supported_path
from cgs_engine.scope import check_scope


@dataclass
class ScanScore:
    path: str
    score: float  # 1 - mean estimated Dice; NaN when the scan could not be scored
    calibrated: bool = False  # the organ volumes are expected wrong mL (else only an order)
    likely_wrong_ml: float = 0.0
    organs: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> figures, see OrganErrors
    seconds: float = 0.0
    problem: str | None = None  # why it could not be scored
    # where the scan lies outside what the model was trained on (cgs_engine.scope), one line each
    outside: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def found_no_organ(self) -> bool:
        """Read and predicted, but no organ was predicted: nothing to estimate a Dice from."""
        return self.problem is None and math.isnan(self.score)

    def worst_organ(self) -> str | None:
        """The organ with the lowest estimated Dice, the one to start with (the score is 1 - their
        mean). Not the most likely wrong mL: that is nearly always the largest organ, however good."""
        estimated = {
            organ: row["estimated_dice"]
            for organ, row in self.organs.items()
            if not math.isnan(row.get("estimated_dice", math.nan))
        }
        if not estimated:
            return max(self.organs, key=lambda organ: self.organs[organ]["likely_wrong_ml"], default=None)
        return min(estimated, key=lambda organ: (estimated[organ], -self.organs[organ]["likely_wrong_ml"]))

    def findings(self) -> list[str]:
        """What the score says, in pieces: the CLI's line and the panel's list item join them."""
        if self.problem:
            return [f"not scored: {self.problem}"]
        if self.found_no_organ:
            return ["no organ found (the model may not know this anatomy)"]
        parts = [f"score {self.score:.3f}"]
        parts.append(f"likely wrong {self.likely_wrong_ml:.1f} mL" if self.calibrated else "uncalibrated")
        worst = self.worst_organ()
        if worst is not None:
            parts.append(f"worst {worst} (est. Dice {self.organs[worst]['estimated_dice']:.2f})")
        return parts + [f"ranked last: {line}" for line in self.outside]

    def describe(self) -> str:
        """One line: score, the likely wrong volume and the worst organ, or the problem."""
        return f"{self.name}: {'; '.join(self.findings())}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # strict JSON has no NaN (Python's json writes a bare NaN other readers refuse): an organ
        # nothing was predicted or missed for has no estimated Dice, written as null
        data["score"] = _finite_or_none(self.score)
        data["organs"] = {
            organ: {name: _finite_or_none(value) for name, value in figures.items()}
            for organ, figures in self.organs.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScanScore:
        score = data.get("score")
        return cls(
            path=str(data["path"]),
            score=float("nan") if score is None else float(score),
            calibrated=bool(data.get("calibrated", False)),
            likely_wrong_ml=float(data.get("likely_wrong_ml", 0.0)),
            organs={
                str(k): {str(n): float("nan") if v is None else float(v) for n, v in f.items()}
                for k, f in (data.get("organs") or {}).items()
            },
            seconds=float(data.get("seconds", 0.0)),
            problem=data.get("problem"),
            outside=[str(line) for line in data.get("outside") or []],
        )


def scans_in_folder(folder: str | os.PathLike) -> list[Path]:
    """The scans of a folder: its image files and its sub-folders holding a DICOM series, sorted;
    not what an earlier `cgs predict` wrote there (label and probability maps are no scans)."""
    from cgs_engine.classes.files import prediction_outputs_in

    folder = Path(folder)
    if folder.is_file():
        raise CGSError(f"{folder}: is a file; give the folder of scans it lies in")
    if not folder.is_dir():
        raise CGSError(f"{folder}: no such folder")
    outputs = prediction_outputs_in(folder)
    candidates = [p for p in sorted(folder.iterdir()) if is_supported_path(p) and p.resolve() not in outputs]
    # one scan reached twice (a link, symbolic or hard, beside its file) was scored twice and opened
    # twice, each time with a session of its own: the file itself is kept, else the first name
    scans, seen = [], set()
    for path in sorted(candidates, key=lambda p: p.is_symlink()):
        try:
            stat = path.stat()
            key: object = (stat.st_dev, stat.st_ino)
        except OSError:  # a dangling link: listed, and said unreadable when it is scored
            key = path
        if key not in seen:
            seen.add(key)
            scans.append(path)
    scans.sort()
    if not scans:
        raise CGSError(f"{folder}: no scans in this folder ({describe_supported()})")
    return scans


def score_scan(predictor: Any, path: str | os.PathLike) -> ScanScore:
    """Read and predict one scan (one forward pass, with the maps) and score it; never raises CGSError."""
    started = time.perf_counter()
    try:
        volume = read_volume(path)
        problem = label_map_problem(volume.array)
        if problem is not None:  # a reference segmentation in the folder was ranked as a scan
            return ScanScore(str(path), float("nan"), problem=problem)
        prediction = predictor.predict(volume, maps=True)
    except CGSError as error:
        return ScanScore(str(path), float("nan"), problem=str(error))
    errors = prediction.errors
    if errors is None:
        return ScanScore(str(path), float("nan"), problem="the model has no specialist heads to score with")
    return ScanScore(
        path=str(path),
        score=errors.scan_score(),
        calibrated=errors.calibrated,
        likely_wrong_ml=errors.likely_wrong_ml(),
        organs=errors.organ_table(list(prediction.class_names)),
        seconds=time.perf_counter() - started,
        outside=check_scope(volume, predictor.checkpoint.scope),
    )


def score_scans(
    predictor: Any,
    paths: Iterable[str | os.PathLike],
    cancel: Callable[[], bool] | None = None,
) -> Iterator[ScanScore]:
    """Score scans one at a time (a generator, so a worker can show each as it comes and stop between)."""
    for path in paths:
        if cancel is not None and cancel():
            return
        yield score_scan(predictor, path)


def ordered(scores: Iterable[ScanScore]) -> list[ScanScore]:
    """Worst scan first; then the scans unlike the model's training data (an MR for a CT model:
    "wrong everywhere" there teaches the model nothing), then those where no organ was found, then
    those that could not be scored: an unreadable file must not hide a scan that was predicted."""
    scored, outside, no_organ, unscored = [], [], [], []
    for score in scores:
        if score.problem:
            unscored.append(score)
        elif score.found_no_organ:
            no_organ.append(score)
        else:
            (outside if score.outside else scored).append(score)
    worst_first = sorted(scored, key=lambda s: -s.score) + sorted(outside, key=lambda s: -s.score)
    return worst_first + no_organ + unscored


def _finite_or_none(value: float) -> float | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value
