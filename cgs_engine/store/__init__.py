"""HDF5 slice store for 2D slice-based training on 3D volumes, and importers into it."""

from cgs_engine.store._checks import SliceStoreError
from cgs_engine.store.dataset import SliceStore
from cgs_engine.store.layout import (
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    StoredSlice,
    StoredVolume,
    VolumeInfo,
)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "SliceStore",
    "SliceStoreError",
    "StoredSlice",
    "StoredVolume",
    "VolumeInfo",
]
