"""Per-organ volumes of a label map, in voxels and millilitres (voxel volume from the geometry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cgs_engine.volume import Volume


@dataclass(frozen=True)
class OrganVolume:
    class_id: int
    name: str
    voxels: int
    millilitres: float


def organ_volumes(labels: Volume, class_names: list[str]) -> list[OrganVolume]:
    """One row per foreground class in ``class_names`` (absent organs get 0)."""
    counts = np.bincount(np.asarray(labels.array).ravel(), minlength=len(class_names))
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    return [
        OrganVolume(i, name, int(counts[i]), float(counts[i]) * voxel_ml)
        for i, name in enumerate(class_names)
        if i > 0
    ]


def format_volume_table(rows: list[OrganVolume]) -> str:
    lines = [f"{'organ':16s} {'voxels':>9s} {'mL':>9s}"]
    lines += [f"{r.name:16s} {r.voxels:9d} {r.millilitres:9.2f}" for r in rows]
    return "\n".join(lines)


def volume_table_csv(rows: list[OrganVolume]) -> str:
    return "class_id,organ,voxels,millilitres\n" + "".join(
        f"{r.class_id},{r.name},{r.voxels},{r.millilitres:.3f}\n" for r in rows
    )
