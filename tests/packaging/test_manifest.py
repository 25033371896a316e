"""The npe2 manifest is found from an editable install and from a built wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300, **kwargs
    )


def test_root_manifest_is_the_single_source():
    packaged = ROOT / "napari_cgs" / "napari.yaml"
    assert packaged.is_symlink()
    assert packaged.resolve() == (ROOT / "napari.yaml").resolve()


def test_npe2_validates_installed_package():
    result = _run([str(BIN / "npe2"), "validate", "napari-cgs"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ]
    )
    assert built.returncode == 0, built.stderr
    wheel = next(out.glob("napari_cgs-*.whl"))
    site = out / "site"
    installed = _run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    )
    assert installed.returncode == 0, installed.stderr
    return site


def test_wheel_carries_manifest_and_samples(wheel_site):
    wheel = next(wheel_site.parent.glob("napari_cgs-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        manifest = archive.read("napari_cgs/napari.yaml").decode()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "napari-cgs = napari_cgs:napari.yaml" in archive.read(entry_points).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    for patient in ("pt_222", "pt_225"):
        for part in ("ct", "labels"):
            assert f"napari_cgs/samples/openkbp_{patient}_{part}.nii.gz" in names
    assert "napari_cgs/samples/NOTICE.md" in names
    assert "napari_cgs/models/default.pt" in names
    assert "napari_cgs/models/default.review.json" in names  # its error model (issue 25)
    prior = json.loads((ROOT / "napari_cgs/models/default.prior/prior.json").read_text())
    for case in prior["cases"]:
        for key in ("image", "labels"):
            assert f"napari_cgs/models/default.prior/{case[key]}" in names
    assert {
        "napari_cgs/models/default.prior/prior.json",
        "napari_cgs/models/default.prior/NOTICE.md",
    } <= names


def test_npe2_validates_wheel_install(wheel_site):
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    where = _run([sys.executable, "-c", "import napari_cgs; print(napari_cgs.__file__)"], env=env, cwd="/")
    assert where.stdout.strip().startswith(str(wheel_site)), where.stdout + where.stderr
    result = _run([str(BIN / "npe2"), "validate", "napari-cgs"], env=env, cwd="/")
    assert result.returncode == 0, result.stdout + result.stderr
