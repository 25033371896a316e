"""The bundled OpenKBP head-and-neck CTs (see samples/NOTICE.md for source, citation and licence)."""

from __future__ import annotations

from pathlib import Path

from cgs_engine.classes.organs import OPENKBP_CLASS_NAMES
from cgs_engine.io import read_volume
from napari_cgs._layers import CLASS_NAMES_KEY, volume_to_layer_data

SAMPLES = Path(__file__).parent / "samples"
# CGS trained on OpenKBP (README, "The default model"; scripts/train_default_model.py)
BUNDLED_MODEL = Path(__file__).parent / "models" / "default.pt"
SAMPLE_CT = SAMPLES / "openkbp_pt_222_ct.nii.gz"
SAMPLE_LABELS = SAMPLES / "openkbp_pt_222_labels.nii.gz"
SECOND_SAMPLE_CT = SAMPLES / "openkbp_pt_225_ct.nii.gz"
SECOND_SAMPLE_LABELS = SAMPLES / "openkbp_pt_225_labels.nii.gz"
SAMPLE_CLASS_NAMES = tuple(OPENKBP_CLASS_NAMES)  # the organs of the OpenKBP contours


def _layer(path: Path, kind: str, name: str):
    return volume_to_layer_data(read_volume(path, kind=kind), name=name)


def _ct(path: Path, patient: str):
    return [_layer(path, "image", f"OpenKBP {patient} CT")]


def _ct_with_contours(ct: Path, labels: Path, patient: str):
    contours = _layer(labels, "labels", f"OpenKBP {patient} contours")
    contours[1]["metadata"][CLASS_NAMES_KEY] = list(SAMPLE_CLASS_NAMES)  # saved with their organ names
    return [_layer(ct, "image", f"OpenKBP {patient} CT"), contours]


def openkbp_ct():
    """napari sample: the pt_222 CT alone, ready to pre-segment."""
    return _ct(SAMPLE_CT, "pt_222")


def openkbp_ct_with_contours():
    """napari sample: the pt_222 CT plus its clinical contours of 7 organs at risk."""
    return _ct_with_contours(SAMPLE_CT, SAMPLE_LABELS, "pt_222")


def openkbp_second_ct():
    """napari sample: the pt_225 CT alone, a second patient to pre-segment."""
    return _ct(SECOND_SAMPLE_CT, "pt_225")


def openkbp_second_ct_with_contours():
    """napari sample: the pt_225 CT plus its clinical contours of 7 organs at risk."""
    return _ct_with_contours(SECOND_SAMPLE_CT, SECOND_SAMPLE_LABELS, "pt_225")
