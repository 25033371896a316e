"""The error of DICOM import and export: one line naming the file or folder and the problem."""

from __future__ import annotations

import os

from cgs_engine.errors import CGSError, display_path


class DicomError(CGSError):
    """A DICOM series, RTSTRUCT or SEG that cannot be read, does not fit, or cannot be written."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path, self.problem = os.fspath(path), problem
        super().__init__(" ".join(f"{display_path(self.path)}: {problem}".split()))
