"""The bundled OpenKBP head-and-neck CT (see samples/NOTICE.md for source, citation and licence)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_CT = SAMPLES / "openkbp_pt_222_ct.nii.gz"
SAMPLE_LABELS = SAMPLES / "openkbp_pt_222_labels.nii.gz"
SAMPLE_CLASS_NAMES = (
    "background",
    "Brainstem",
    "SpinalCord",
    "RightParotid",
    "LeftParotid",
    "Esophagus",
    "Larynx",
    "Mandible",
)


def _layer(path: Path, kind: str, name: str):
    from cgs_engine.io import read_volume
    from napari_cgs._layers import volume_to_layer_data

    return volume_to_layer_data(read_volume(path, kind=kind), name=name)


def openkbp_ct():
    """napari sample: the CT alone, ready to pre-segment."""
    return [_layer(SAMPLE_CT, "image", "OpenKBP pt_222 CT")]


def openkbp_ct_with_contours():
    """napari sample: the CT plus its clinical contours of 7 organs at risk."""
    return [
        _layer(SAMPLE_CT, "image", "OpenKBP pt_222 CT"),
        _layer(SAMPLE_LABELS, "labels", "OpenKBP pt_222 contours"),
    ]
