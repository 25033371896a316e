"""Hostile-input replays: every case gives one line naming the file (exit 2) or is handled.

Files are made on the fly and tiny. Helpers of the engine tests (a tiny model, synthetic
volumes, projects) are reused from ``tests/engine``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
if str(ENGINE_TESTS) not in sys.path:
    sys.path.insert(0, str(ENGINE_TESTS))

from test_project import tiny_base_model  # noqa: E402


def cgs(*arguments: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the `cgs` command in a fresh process (so a crash of the process shows as one)."""
    return subprocess.run(
        [sys.executable, "-m", "cgs_engine", *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def cgs_bytes(*arguments: bytes | str, cwd: Path | None = None):
    """As ``cgs`` with arguments given as bytes (file names that are not UTF-8)."""
    command = [
        sys.executable.encode(),
        b"-m",
        b"cgs_engine",
        *(a if isinstance(a, bytes) else a.encode() for a in arguments),
    ]
    return subprocess.run(command, capture_output=True, timeout=300, cwd=cwd)


def assert_one_line_error(result, *words: str) -> str:
    """Exit 2, no traceback, one error line (the last on stderr) holding ``words``.

    Progress lines printed before the failure (``model: ... on cpu``) may precede it.
    """
    stderr = result.stderr if isinstance(result.stderr, str) else result.stderr.decode("utf-8", "replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def write_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def ct_array(seed: int = 0, shape=(4, 32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 0.1, shape).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_base_model(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def scan(tmp_path) -> Path:
    return write_image(tmp_path / "scan.nii.gz", ct_array())


@pytest.fixture
def open_folder():
    """A folder every user may enter (pytest's own tmp folders are private to their owner)."""
    folder = Path(tempfile.mkdtemp(prefix="cgs-reliability-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def unprivileged(command: list[str]) -> list[str]:
    """``command`` as a user who cannot write where the owner forbids it (root writes anywhere)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot test a folder root may not write")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
