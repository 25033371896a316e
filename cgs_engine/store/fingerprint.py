"""The fingerprint of a slice store: a sha256 of what training sees, stable across reopening.

It covers class names, normalisation, and per volume: name, split, shape, geometry, and all label,
review and image bytes (``v2:`` in front). Fingerprints recorded before (no prefix) sampled 4
evenly spaced image slices of each volume: a scan edited on other slices (defaced, +300 HU on
slices 50-70) kept its fingerprint, and a resumed run trained on the changed data without a
word. They are still recomputed the old way to compare with (:func:`same_fingerprint`).
"""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np

from cgs_engine.store.layout import VolumeInfo

FINGERPRINT_IMAGE_SLICES = 4  # of the fingerprints recorded before v2
_HASH_BLOCK_SLICES = 64
SCHEME = "v2:"


class Fingerprint:
    """A sha256 fed with the store's header, then with each volume in ``volume_names()`` order."""

    def __init__(
        self, format_version: int, class_names: list[str], normalization: dict, sampled: bool = False
    ) -> None:
        self._sampled = sampled  # the scheme before v2 (4 image slices per volume)
        self._digest = hashlib.sha256()
        header = {
            "format_version": format_version,
            "class_names": class_names,
            "normalization": normalization,
        }
        self._digest.update(json.dumps(header, sort_keys=True).encode())

    def add_volume(
        self, info: VolumeInfo, image: h5py.Dataset, label: h5py.Dataset | None, review: h5py.Dataset | None
    ) -> None:
        summary = [
            info.name,
            info.split,
            list(info.shape),
            info.geometry.to_dict(),
            info.has_label,
            info.has_review,
        ]
        if info.sampling_weight != 1:  # appended only when set, so older fingerprints stay valid
            summary.append(info.sampling_weight)
        self._digest.update(json.dumps(summary, sort_keys=True).encode())
        for dataset in (label, review) if self._sampled else (label, review, image):
            if dataset is not None:
                for start in range(0, info.shape[0], _HASH_BLOCK_SLICES):
                    self._digest.update(dataset[start : start + _HASH_BLOCK_SLICES].tobytes())
        if self._sampled:
            sample_count = min(info.shape[0], FINGERPRINT_IMAGE_SLICES)
            for z in np.unique(np.linspace(0, info.shape[0] - 1, sample_count).round().astype(int)):
                self._digest.update(image[int(z)].tobytes())

    def hexdigest(self) -> str:
        return self._digest.hexdigest() if self._sampled else SCHEME + self._digest.hexdigest()


def same_fingerprint(store, recorded: str) -> bool:
    """Whether ``store`` (an open SliceStore) holds the data ``recorded`` was taken of, by the scheme
    it was taken with."""
    return store.fingerprint(sampled=not recorded.startswith(SCHEME)) == recorded
