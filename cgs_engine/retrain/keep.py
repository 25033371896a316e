"""The end of a retrain: score the new model and the active one, keep a version, activate it or not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cgs_engine.project.project import Project
from cgs_engine.project.versions import read_json
from cgs_engine.retrain.scoring import HeldoutScore, decide_activation, evaluate_heldout
from cgs_engine.review.error_model import sidecar_path
from cgs_engine.runtime import resolve_runtime
from cgs_engine.train.config import TrainConfig


@dataclass
class KeptVersion:
    version_id: str
    activated: bool
    reason: str
    new_score: HeldoutScore | None
    active_score: HeldoutScore | None
    record: dict[str, Any]


def keep_version(
    project: Project,
    run: Path,
    candidate: Path,
    store_path: Path,
    plan: dict[str, Any],
    result,
    cancelled: bool,
) -> KeptVersion:
    """Score ``candidate`` and the active model on the held-out data; keep it under the activation rule."""
    recorded = read_json(run / "train" / "config.json", "training record")["config"]
    config = TrainConfig.from_dict(recorded, source=str(run / "train" / "config.json"))
    runtime = resolve_runtime(config.device, config.precision, config.threads)
    new_score = evaluate_heldout(candidate, store_path, project.class_names, runtime)
    active = project.active_version()
    active_score = (
        None
        if active is None
        else evaluate_heldout(active.model_path, store_path, project.class_names, runtime)
    )
    tolerance = float(project.settings["activation_tolerance"])
    compared_with = None if active is None else active.id
    status, activate, reason = decide_activation(new_score, active_score, compared_with, tolerance)
    # One step for the check, the new version and the pointer: a `cgs project activate` from
    # another process lands before (this version is then not activated) or after, never between.
    with project.state_lock():
        current = project.active_version()
        if activate and (None if current is None else current.id) != compared_with:
            status, activate = "rejected", False
            reason = (
                f"not activated: the active version changed to {current and current.id} during evaluation"
            )
        record = {
            "origin": "retrained",
            "status": status,
            "reason": reason,
            "parent": plan.get("parent"),
            "run": run.name,
            "metrics": {
                "new": None if new_score is None else new_score.to_dict(),
                "active": None if active_score is None else active_score.to_dict(),
                "compared_with": compared_with,
                "heldout": plan["heldout"],
                "heldout_mode": plan["heldout_mode"],
                "tolerance": tolerance,
            },
            "corrections_used": plan["corrections_used"],
            "unlabeled_used": plan["unlabeled_used"],
            "steps": result.steps_done,
            "total_steps": result.total_steps,
            "cancelled": cancelled,
            "train_config": config.to_dict(),
        }
        # The parent's calibrated error model, until one is fitted for this version: a few
        # hundred fine-tuning steps move the weights little, and uncalibrated is worse.
        inherited = None if active is None else sidecar_path(active.model_path)
        inherited = inherited if inherited is not None and inherited.is_file() else None
        record["error_model"] = None if inherited is None else f"inherited from {active.id}"
        version = project.add_version(candidate, record, error_model=inherited)
        if activate:
            project.activate(version.id, why=reason)
    return KeptVersion(version.id, activate, reason, new_score, active_score, record)
