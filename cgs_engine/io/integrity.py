"""Completeness check for NIfTI files.

ITK reads a NIfTI file whose voxel data is cut short, gzipped or not, without any error and
fills the missing voxels with zeros. A half-copied or half-downloaded scan would then look
like a valid volume, so we compare the data length with what the header promises.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import VolumeIOError

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_HEADER_SIZE = 348
_NIFTI2_HEADER_SIZE = 540
_CHUNK = 1 << 20


def check_nifti_complete(path: Path, name: str) -> None:
    """Raise :class:`VolumeIOError` if ``path`` is a single-file NIfTI with less data than it declares.

    Files that are not recognisably NIfTI-1/2 pass: SimpleITK gives the better error for those.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    if not compressed:
        _compare_lengths(_read_header(path, open), path.stat().st_size, name)
        return
    try:
        header = _read_header(path, gzip.open)
        _compare_lengths(header, _decompressed_length(path), name)
    except EOFError:
        raise VolumeIOError(name, "file is truncated or corrupt (gzip stream ended early)") from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise VolumeIOError(name, f"file is truncated or corrupt (bad gzip data: {error})") from None


def _read_header(path: Path, opener) -> bytes:
    with opener(path, "rb") as stream:
        return stream.read(_NIFTI2_HEADER_SIZE)


def _decompressed_length(path: Path) -> int:
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            total += len(chunk)
    return total


def _compare_lengths(header: bytes, actual: int, name: str) -> None:
    expected = expected_nifti_length(header)
    if expected is not None and actual < expected:
        problem = f"file is truncated or corrupt (holds {actual} of the {expected} bytes it declares)"
        raise VolumeIOError(name, problem)


def expected_nifti_length(header: bytes) -> int | None:
    """Bytes a single-file NIfTI-1/2 needs (header, extensions, voxels), or None if not NIfTI."""
    for endian in "<>":
        if len(header) < 4:
            return None
        declared = struct.unpack(endian + "i", header[:4])[0]
        if declared == _NIFTI1_HEADER_SIZE:
            return _nifti1_length(header, endian)
        if declared == _NIFTI2_HEADER_SIZE:
            return _nifti2_length(header, endian)
    return None


def _nifti1_length(header: bytes, endian: str) -> int | None:
    if len(header) < _NIFTI1_HEADER_SIZE:
        return _NIFTI1_HEADER_SIZE
    if header[344:348] != b"n+1\x00":  # "ni1": header and voxels in separate files
        return None
    dims = struct.unpack(endian + "8h", header[40:56])
    bitpix = struct.unpack(endian + "h", header[72:74])[0]
    vox_offset = struct.unpack(endian + "f", header[108:112])[0]
    return _data_end(dims, bitpix, vox_offset)


def _nifti2_length(header: bytes, endian: str) -> int | None:
    if len(header) < _NIFTI2_HEADER_SIZE:
        return _NIFTI2_HEADER_SIZE
    if header[4:8] != b"n+2\x00":
        return None
    bitpix = struct.unpack(endian + "h", header[14:16])[0]
    dims = struct.unpack(endian + "8q", header[16:80])
    vox_offset = struct.unpack(endian + "q", header[168:176])[0]
    return _data_end(dims, bitpix, vox_offset)


def _data_end(dims, bitpix: int, vox_offset: float) -> int | None:
    ndim = dims[0]
    sizes = dims[1 : ndim + 1]
    if not 1 <= ndim <= 7 or bitpix <= 0 or min(sizes) < 1 or not np.isfinite(vox_offset):
        return None
    voxels = int(np.prod(sizes, dtype=np.int64))
    return int(vox_offset) + (voxels * bitpix + 7) // 8
