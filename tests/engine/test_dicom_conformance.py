"""The written CT series, RTSTRUCT and SEG pass dciodvfy (dicom3tools' IOD checker) without errors.

dciodvfy is a Debian package (``apt-get install dicom3tools``), not a Python one: without it the
test is skipped. It knows no LABELMAP SEG yet, so only BINARY is checked.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from dicom_cases import shared_series

from cgs_engine.classes.organs import openkbp_class_names
from cgs_engine.classes.table import derive_class_table
from cgs_engine.dicom import export_rtstruct, export_seg

pytestmark = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed"
)


def _problems(path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_ct_rtstruct_and_seg_have_no_iod_errors(tmp_path):
    series, labels = shared_series("oblique")
    table = derive_class_table(openkbp_class_names())
    rtstruct = export_rtstruct(labels, series, table, tmp_path / "RS.dcm").path
    seg = export_seg(labels, series, table, tmp_path / "SEG.dcm").path
    for path in (series.slices[0].path, rtstruct, seg):
        assert _problems(path) == [], path
