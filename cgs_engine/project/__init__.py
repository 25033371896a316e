"""Retraining projects: the folder holding corrections, unlabeled scan references and model versions.

``Project`` is the folder (see ``project.py``); retraining it is ``cgs_engine.retrain``.
"""

from cgs_engine.project.project import Correction, CorrectionInfo, Project, UnlabeledScan
from cgs_engine.project.versions import ProjectError, VersionInfo

__all__ = [
    "Correction",
    "CorrectionInfo",
    "Project",
    "ProjectError",
    "UnlabeledScan",
    "VersionInfo",
]
