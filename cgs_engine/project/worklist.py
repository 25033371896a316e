"""A project's unlabeled scans ordered by how wrong the active model likely is on them.

Scoring a scan costs one forward pass, so the scores are kept in ``worklist.json`` in the project
folder, each with the scan's fingerprint and the model version (and whether its error model was
calibrated) that scored it; a scan is scored again only when one of them changed. Scans that
cannot be used (missing, changed, unreadable) are listed last with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cgs_engine.infer import Predictor
from cgs_engine.project.project import Project
from cgs_engine.project.versions import ProjectError, read_json, write_json_atomically
from cgs_engine.review.worklist import ScanScore, ordered, score_scan

WORKLIST_FILE = "worklist.json"


def worklist_path(project: Project) -> Path:
    return project.folder / WORKLIST_FILE


def _model_key(version_id: str, predictor: Any) -> str:
    return f"{version_id}:{'calibrated' if predictor.error_model.calibrated else 'uncalibrated'}"


def _cached(project: Project) -> dict[str, Any]:
    path = worklist_path(project)
    if not path.is_file():
        return {}
    try:
        data = read_json(path, "worklist")
        return dict(data["scans"]) if isinstance(data, dict) and isinstance(data.get("scans"), dict) else {}
    except ProjectError:
        return {}  # a damaged cache is only lost work: the scans are scored again


def iterate_project_worklist(
    project: Project,
    predictor: Any | None = None,
    rescore: bool = False,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[ScanScore]:
    """Yield each unlabeled scan's score (cached or new), saving new ones as they come."""
    active = project.active_version()
    if active is None:
        raise ProjectError(
            f"{project.folder}: no model version yet; the worklist needs a model to score with"
        )
    if predictor is None:
        predictor = Predictor(active.model_path)
    key = _model_key(active.id, predictor)
    for scan in project.unlabeled():
        if cancel is not None and cancel():
            return
        problem = scan.problem()
        if problem is not None:
            yield ScanScore(str(scan.path), float("nan"), problem=problem)
            continue
        entry = _cached(project).get(str(scan.path))
        if (
            not rescore
            and entry
            and entry.get("model") == key
            and entry.get("fingerprint") == scan.fingerprint
        ):
            yield ScanScore.from_dict(entry["score"])
            continue
        score = score_scan(predictor, scan.path)
        if score.problem is None:
            _remember(
                project, scan.path, {"model": key, "fingerprint": scan.fingerprint, "score": score.to_dict()}
            )
        yield score


def project_worklist(
    project: Project, predictor: Any | None = None, rescore: bool = False
) -> list[ScanScore]:
    """Every unlabeled scan of the project, the one the active model likely got most wrong first."""
    return ordered(iterate_project_worklist(project, predictor, rescore))


def _remember(project: Project, path: Path, entry: dict[str, Any]) -> None:
    with project.state_lock():
        scans = _cached(project)
        current = {str(s.path) for s in project.unlabeled()}
        scans = {p: e for p, e in scans.items() if p in current}  # removed scans leave the cache
        scans[str(path)] = entry
        write_json_atomically(worklist_path(project), {"scans": scans})
