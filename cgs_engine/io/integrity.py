"""Completeness and finiteness checks for NIfTI files, in one pass over the voxel bytes.

ITK reads a NIfTI file whose voxel data is cut short, gzipped or not, without any error and
fills the missing voxels with zeros. A half-copied or half-downloaded scan would then look
like a valid volume, so we compare the data length with what the header promises.

ITK also reads NaN and infinite float voxels of a NIfTI file as 0, silently. A scan holding
them is damaged (or not a scan), so they are counted in the raw bytes and refused.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VolumeIOError

_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI1_HEADER_SIZE = 348
_NIFTI2_HEADER_SIZE = 540
_CHUNK = 1 << 20
_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype code -> numpy float type


@dataclass(frozen=True)
class NiftiLayout:
    data_start: int
    data_end: int
    float_type: np.dtype | None  # set for float voxels, whose values are checked


def check_nifti_complete(path: Path, name: str) -> None:
    """Raise :class:`VolumeIOError` if a single-file NIfTI has less data than it declares, or float
    voxels that are NaN or infinite.

    Files that are not recognisably NIfTI-1/2 pass: SimpleITK gives the better error for those.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    try:
        layout = nifti_layout(_read_header(path, opener))
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


def _read_header(path: Path, opener) -> bytes:
    with opener(path, "rb") as stream:
        return stream.read(_NIFTI2_HEADER_SIZE)


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


def expected_nifti_length(header: bytes) -> int | None:
    """Bytes a single-file NIfTI-1/2 needs (header, extensions, voxels), or None if not NIfTI."""
    layout = nifti_layout(header)
    return None if layout is None else layout.data_end


def nifti_layout(header: bytes) -> NiftiLayout | None:
    for endian in "<>":
        if len(header) < 4:
            return None
        declared = struct.unpack(endian + "i", header[:4])[0]
        if declared == _NIFTI1_HEADER_SIZE:
            return _nifti1_layout(header, endian)
        if declared == _NIFTI2_HEADER_SIZE:
            return _nifti2_layout(header, endian)
    return None


def _nifti1_layout(header: bytes, endian: str) -> NiftiLayout | None:
    if len(header) < _NIFTI1_HEADER_SIZE:
        return NiftiLayout(_NIFTI1_HEADER_SIZE, _NIFTI1_HEADER_SIZE, None)
    if header[344:348] != b"n+1\x00":  # "ni1": header and voxels in separate files
        return None
    dims = struct.unpack(endian + "8h", header[40:56])
    datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
    vox_offset = struct.unpack(endian + "f", header[108:112])[0]
    return _layout(dims, datatype, bitpix, vox_offset, endian)


def _nifti2_layout(header: bytes, endian: str) -> NiftiLayout | None:
    if len(header) < _NIFTI2_HEADER_SIZE:
        return NiftiLayout(_NIFTI2_HEADER_SIZE, _NIFTI2_HEADER_SIZE, None)
    if header[4:8] != b"n+2\x00":
        return None
    datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
    dims = struct.unpack(endian + "8q", header[16:80])
    vox_offset = struct.unpack(endian + "q", header[168:176])[0]
    return _layout(dims, datatype, bitpix, vox_offset, endian)


def _layout(dims, datatype: int, bitpix: int, vox_offset: float, endian: str) -> NiftiLayout | None:
    ndim = dims[0]
    sizes = dims[1 : ndim + 1]
    if not 1 <= ndim <= 7 or bitpix <= 0 or min(sizes) < 1 or not np.isfinite(vox_offset):
        return None
    voxels = int(np.prod(sizes, dtype=np.int64))
    start = int(vox_offset)
    float_code = _FLOAT_TYPES.get(datatype)
    float_type = np.dtype(endian + float_code) if float_code else None
    return NiftiLayout(start, start + (voxels * bitpix + 7) // 8, float_type)
