"""Reading ``X.nii.gz`` when an ``X.nii`` lies beside it.

ITK's NIfTI reader (niftilib) looks for the uncompressed name first: asked for ``X.nii.gz`` it opened
``X.nii`` when both were in one folder, so a gunzipped older copy left beside a map was read in its
place (the header checks, made on the named file, passed), and e.g. a correction was stored without
the organ drawn since. The named file is read through a link of the same name in a folder of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def shadowing_twin(location: Path) -> Path | None:
    """The ``X.nii`` that ITK would open instead of ``location`` (``X.nii.gz``), if there is one."""
    name = location.name
    if not name.lower().endswith(".nii.gz"):
        return None
    twin = location.with_name(name[: -len(".gz")])
    return twin if twin.exists() else None


@contextmanager
def itk_readable(location: Path) -> Iterator[Path]:
    """A path at which ITK reads exactly ``location``."""
    if shadowing_twin(location) is None:
        yield location
        return
    with tempfile.TemporaryDirectory(prefix="cgs-read-") as folder:
        alias = Path(folder) / location.name
        try:
            os.symlink(location.resolve(), alias)
        except OSError:  # no symbolic links here (some Windows accounts): a copy reads the same
            shutil.copyfile(location, alias)
        yield alias
