"""The fields of a NIfTI-1 or NIfTI-2 header, read from the raw bytes (gzipped or not).

ITK's NIfTI reader repairs or reinterprets some header fields without saying so (a zero voxel
size becomes 1 mm, a sheared sform is swapped for the qform). To judge a header before ITK
sees it (``header_rules``) and to know where the voxel bytes lie (``integrity``), the header is
read here, field by field, as the standard defines it.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
NIFTI1_HEADER_SIZE = 348
NIFTI2_HEADER_SIZE = 540
# The 4 extension-flag bytes follow the header; voxels of a single file start after them.
NIFTI1_MIN_VOX_OFFSET = NIFTI1_HEADER_SIZE + 4
NIFTI2_MIN_VOX_OFFSET = NIFTI2_HEADER_SIZE + 4

# datatype code -> (bits per voxel, numpy type) for the types ITK reads
DATATYPES: dict[int, tuple[int, str | None]] = {
    2: (8, "u1"),
    4: (16, "i2"),
    8: (32, "i4"),
    16: (32, "f4"),
    32: (64, "c8"),
    64: (64, "f8"),
    128: (24, None),  # RGB
    256: (8, "i1"),
    512: (16, "u2"),
    768: (32, "u4"),
    1024: (64, "i8"),
    1280: (64, "u8"),
    1792: (128, "c16"),
    2304: (32, None),  # RGBA
}
XFORM_CODES = range(0, 6)  # unknown, scanner, aligned, Talairach, MNI, template (NIfTI-2)


@dataclass(frozen=True)
class NiftiHeader:
    version: int  # 1 or 2
    endian: str  # "<" or ">"
    magic: bytes
    dims: tuple[int, ...]  # dim[0..7]
    datatype: int
    bitpix: int
    pixdim: tuple[float, ...]  # pixdim[0..7]; pixdim[0] is qfac
    vox_offset: float
    scl_slope: float
    scl_inter: float
    qform_code: int
    sform_code: int
    quatern: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srow: tuple[tuple[float, ...], ...]  # 3 rows of 4

    @property
    def single_file(self) -> bool:
        """Header and voxels in one file, with the magic of this header's own version."""
        return self.magic == (b"n+1\x00" if self.version == 1 else b"n+2\x00")

    @property
    def min_vox_offset(self) -> int:
        return NIFTI1_MIN_VOX_OFFSET if self.version == 1 else NIFTI2_MIN_VOX_OFFSET

    @property
    def ndim(self) -> int:
        return self.dims[0]

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(self.dims[1 : self.ndim + 1])

    @property
    def numpy_type(self) -> np.dtype | None:
        code = DATATYPES.get(self.datatype, (0, None))[1]
        return None if code is None else np.dtype(self.endian + code)

    def data_bytes(self) -> int:
        voxels = int(np.prod(self.sizes, dtype=np.int64)) if self.sizes else 0
        return (voxels * self.bitpix + 7) // 8

    def qform_affine(self) -> np.ndarray:
        """The qform as a 4x4 RAS affine (voxel index -> mm), as the standard's method 2 defines it."""
        b, c, d = self.quatern
        a = float(np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d))))
        rotation = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
            ]
        )
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        scale = np.array([self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac])
        affine = np.eye(4)
        affine[:3, :3] = rotation * scale
        affine[:3, 3] = self.qoffset
        return affine

    def sform_affine(self) -> np.ndarray:
        affine = np.eye(4)
        affine[:3, :] = np.asarray(self.srow, dtype=float)
        return affine


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The header of a NIfTI file, or None when the bytes are not a NIfTI-1/2 header at all.

    Raises ``OSError``/``EOFError`` for gzip data that cannot be read (the caller words it).
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    opener = gzip.open if compressed else open
    with opener(path, "rb") as stream:
        head = stream.read(NIFTI2_HEADER_SIZE)
    return parse_nifti_header(head)


def header_cut_short(path: Path) -> bool:
    """Whether the file starts like a NIfTI header but ends before the header does."""
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
        with (gzip.open if compressed else open)(path, "rb") as stream:
            head = stream.read(NIFTI2_HEADER_SIZE)
    except (OSError, EOFError):
        return compressed
    for endian in "<>":
        if len(head) >= 4 and struct.unpack(endian + "i", head[:4])[0] in (
            NIFTI1_HEADER_SIZE,
            NIFTI2_HEADER_SIZE,
        ):
            return len(head) < struct.unpack(endian + "i", head[:4])[0]
    return False


def parse_nifti_header(head: bytes) -> NiftiHeader | None:
    if len(head) < 4:
        return None
    for endian in "<>":
        declared = struct.unpack(endian + "i", head[:4])[0]
        if declared == NIFTI1_HEADER_SIZE and len(head) >= NIFTI1_HEADER_SIZE:
            return _nifti1(head, endian)
        if declared == NIFTI2_HEADER_SIZE and len(head) >= NIFTI2_HEADER_SIZE:
            return _nifti2(head, endian)
    return None


def _unpack(endian: str, layout: str, head: bytes, offset: int) -> tuple:
    return struct.unpack_from(endian + layout, head, offset)


def _nifti1(head: bytes, e: str) -> NiftiHeader:
    srow = tuple(_unpack(e, "4f", head, 280 + 16 * row) for row in range(3))
    return NiftiHeader(
        version=1,
        endian=e,
        magic=head[344:348],
        dims=_unpack(e, "8h", head, 40),
        datatype=_unpack(e, "h", head, 70)[0],
        bitpix=_unpack(e, "h", head, 72)[0],
        pixdim=_unpack(e, "8f", head, 76),
        vox_offset=_unpack(e, "f", head, 108)[0],
        scl_slope=_unpack(e, "f", head, 112)[0],
        scl_inter=_unpack(e, "f", head, 116)[0],
        qform_code=_unpack(e, "h", head, 252)[0],
        sform_code=_unpack(e, "h", head, 254)[0],
        quatern=_unpack(e, "3f", head, 256),
        qoffset=_unpack(e, "3f", head, 268),
        srow=srow,
    )


def _nifti2(head: bytes, e: str) -> NiftiHeader:
    srow = tuple(_unpack(e, "4d", head, 400 + 32 * row) for row in range(3))
    return NiftiHeader(
        version=2,
        endian=e,
        magic=head[4:8],
        dims=_unpack(e, "8q", head, 16),
        datatype=_unpack(e, "h", head, 12)[0],
        bitpix=_unpack(e, "h", head, 14)[0],
        pixdim=_unpack(e, "8d", head, 104),
        vox_offset=float(_unpack(e, "q", head, 168)[0]),
        scl_slope=_unpack(e, "d", head, 176)[0],
        scl_inter=_unpack(e, "d", head, 184)[0],
        qform_code=_unpack(e, "i", head, 344)[0],
        sform_code=_unpack(e, "i", head, 348)[0],
        quatern=_unpack(e, "3d", head, 352),
        qoffset=_unpack(e, "3d", head, 376),
        srow=srow,
    )
