"""Completeness and finiteness checks for NIfTI files, in one pass over the voxel bytes.

ITK reads a NIfTI file whose voxel data is cut short, gzipped or not, without any error and
fills the missing voxels with zeros. A half-copied or half-downloaded scan would then look
like a valid volume, so we compare the data length with what the header promises.

ITK also reads NaN and infinite float voxels of a NIfTI file as 0, silently. A scan holding
them is damaged (or not a scan), so they are counted in the raw bytes and refused.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VolumeIOError
from .nifti_header import GZIP_MAGIC, NiftiHeader, read_nifti_header

_CHUNK = 1 << 20


@dataclass(frozen=True)
class NiftiLayout:
    data_start: int
    data_end: int
    float_type: np.dtype | None  # set for float voxels, whose values are checked


def check_nifti_complete(path: Path, name: str) -> None:
    """Raise :class:`VolumeIOError` if a single-file NIfTI has less data than it declares, or float
    voxels that are NaN or infinite.

    Files that are not recognisably NIfTI-1/2 pass: ``header_rules`` refuses those first.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        header = read_nifti_header(path)
        layout = None if header is None else nifti_layout(header)
        if layout is None:
            return
        length, nonfinite = _scan(path, opener, layout)
    except EOFError:
        raise VolumeIOError(name, "file is truncated or corrupt (gzip stream ended early)") from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise VolumeIOError(name, f"file is truncated or corrupt (bad gzip data: {error})") from None
    if length < layout.data_end:
        problem = f"file is truncated or corrupt (holds {length} of the {layout.data_end} bytes it declares)"
        raise VolumeIOError(name, problem)
    if nonfinite:
        raise VolumeIOError(name, f"image holds {nonfinite} NaN or infinite voxel value(s); it is damaged")


def _scan(path: Path, opener, layout: NiftiLayout) -> tuple[int, int]:
    """(bytes in the file, non-finite float voxels among the declared data)."""
    total = nonfinite = 0
    carry = b""
    itemsize = layout.float_type.itemsize if layout.float_type is not None else 0
    with opener(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            start, total = total, total + len(chunk)
            if not itemsize:
                continue
            low, high = max(start, layout.data_start), min(total, layout.data_end)
            if low >= high:
                continue
            data = carry + chunk[low - start : high - start]
            usable = len(data) - len(data) % itemsize
            values = np.frombuffer(data[:usable], dtype=layout.float_type)
            nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[usable:]
    return total, nonfinite


def nifti_layout(header: NiftiHeader) -> NiftiLayout | None:
    """Where a single-file NIfTI's voxels lie (by the header's own bit count), or None for a header
    too broken to tell (``header_rules`` refuses those)."""
    if not header.single_file or not 1 <= header.ndim <= 7 or header.bitpix <= 0 or min(header.sizes) < 1:
        return None
    if not np.isfinite(header.vox_offset):
        return None
    start = int(header.vox_offset)
    float_type = header.numpy_type if header.datatype in (16, 64) else None
    return NiftiLayout(start, start + header.data_bytes(), float_type)
