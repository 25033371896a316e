"""Organ volumes in mL use the voxel volume of the geometry."""

from __future__ import annotations

import numpy as np
import pytest

from cgs_engine.evaluate.volumes import format_volume_table, organ_volumes, volume_table_csv
from cgs_engine.volume import Geometry, Volume


def test_organ_volumes_in_millilitres():
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[0, :5, :4] = 1  # 20 voxels
    geometry = Geometry(spacing=(0.5, 2.0, 5.0))  # 5 mm^3 per voxel
    rows = organ_volumes(Volume(labels, geometry, kind="labels"), ["background", "liver", "spleen"])
    assert [(r.name, r.voxels) for r in rows] == [("liver", 20), ("spleen", 0)]
    assert rows[0].millilitres == pytest.approx(0.1)
    assert "liver" in format_volume_table(rows) and volume_table_csv(rows).startswith("class_id,organ")
