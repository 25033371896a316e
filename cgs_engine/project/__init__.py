"""Retraining projects: corrections and unlabeled scans in, crash-safe model versions out.

``Project`` is the folder (see ``project.py``), ``retrain`` fine-tunes the active model in this
process, ``start_retrain_process`` does it in a separate one for the GUI (see ``worker.py``).
"""

from cgs_engine.project.project import Correction, CorrectionInfo, Project, UnlabeledScan
from cgs_engine.project.retrain import HeldoutScore, RetrainResult, retrain
from cgs_engine.project.versions import ProjectError, VersionInfo

__all__ = [
    "Correction",
    "CorrectionInfo",
    "HeldoutScore",
    "Project",
    "ProjectError",
    "RetrainProcess",
    "RetrainResult",
    "UnlabeledScan",
    "VersionInfo",
    "retrain",
    "start_retrain_process",
]


def __getattr__(name: str):
    # Imported on first use: `python -m cgs_engine.project.worker` must not find the worker
    # module already imported by this package (runpy warns and runs a second copy).
    if name in ("RetrainProcess", "start_retrain_process"):
        from cgs_engine.project import worker

        return getattr(worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
