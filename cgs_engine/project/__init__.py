"""Retraining projects: the folder holding corrections, unlabeled scan references and model versions.

``Project`` is the folder (see ``project.py``); retraining it is ``cgs_engine.retrain``.
"""

from cgs_engine.project.corrections import Correction, CorrectionInfo
from cgs_engine.project.project import Project
from cgs_engine.project.unlabeled import UnlabeledScan
from cgs_engine.project.versions import ProjectError, VersionInfo

__all__ = [
    "Correction",
    "CorrectionInfo",
    "Project",
    "ProjectError",
    "UnlabeledScan",
    "VersionInfo",
]
