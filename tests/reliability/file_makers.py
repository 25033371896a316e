"""Writing NIfTI, MetaImage and NRRD files field by field, valid or not, without ITK.

Used by the hostile-file tests, the header fuzz test and ``bench/hostile_files.py``: each field
is what the caller says, so a header can be exactly as broken as a case needs. Arrays are
indexed [z, y, x] and stored x fastest, as every one of these formats stores voxels.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

NIFTI_TYPES = {
    np.dtype("uint8"): 2,
    np.dtype("int16"): 4,
    np.dtype("int32"): 8,
    np.dtype("float32"): 16,
    np.dtype("float64"): 64,
    np.dtype("int8"): 256,
    np.dtype("uint16"): 512,
}
MET_TYPES = {
    np.dtype("uint8"): "MET_UCHAR",
    np.dtype("int8"): "MET_CHAR",
    np.dtype("int16"): "MET_SHORT",
    np.dtype("uint16"): "MET_USHORT",
    np.dtype("int32"): "MET_INT",
    np.dtype("float32"): "MET_FLOAT",
    np.dtype("float64"): "MET_DOUBLE",
}
NRRD_TYPES = {
    np.dtype("uint8"): "uchar",
    np.dtype("int8"): "signed char",
    np.dtype("int16"): "short",
    np.dtype("uint16"): "ushort",
    np.dtype("int32"): "int",
    np.dtype("float32"): "float",
    np.dtype("float64"): "double",
}


def nifti_bytes(array: np.ndarray, **fields) -> bytes:
    """A single-file NIfTI-1 (little endian) holding ``array``; ``fields`` override header fields:
    dims, datatype, bitpix, pixdim, vox_offset, scl_slope, scl_inter, qform_code, sform_code,
    quatern, qoffset, srow (3 rows of 4), magic, sizeof_hdr, data (the voxel bytes)."""
    z, y, x = array.shape
    header = bytearray(348)
    struct.pack_into("<i", header, 0, fields.get("sizeof_hdr", 348))
    struct.pack_into("<8h", header, 40, *fields.get("dims", (3, x, y, z, 1, 1, 1, 1)))
    datatype = fields.get("datatype", NIFTI_TYPES[array.dtype])
    bitpix = fields.get("bitpix", array.dtype.itemsize * 8)
    struct.pack_into("<2h", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, *fields.get("pixdim", (1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0)))
    vox_offset = fields.get("vox_offset", 352.0)
    struct.pack_into(
        "<3f", header, 108, vox_offset, fields.get("scl_slope", 1.0), fields.get("scl_inter", 0.0)
    )
    struct.pack_into("<2h", header, 252, fields.get("qform_code", 1), fields.get("sform_code", 1))
    struct.pack_into("<3f", header, 256, *fields.get("quatern", (0.0, 0.0, 0.0)))
    struct.pack_into("<3f", header, 268, *fields.get("qoffset", (0.0, 0.0, 0.0)))
    srow = fields.get("srow", ((1.0, 0, 0, 0), (0, 1.0, 0, 0), (0, 0, 1.0, 0)))
    for row in range(3):
        struct.pack_into("<4f", header, 280 + 16 * row, *srow[row])
    header[344:348] = fields.get("magic", b"n+1\x00")
    data = fields.get("data", np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())
    start = int(vox_offset) if np.isfinite(vox_offset) and 352 <= vox_offset < 1 << 20 else 352
    return bytes(header) + b"\x00" * (start - 348) + data


def write_nifti(path: Path, array: np.ndarray, **fields) -> Path:
    blob = nifti_bytes(array, **fields)
    path.write_bytes(gzip.compress(blob, 1) if path.name.endswith(".gz") else blob)
    return path


def geometry_fields_for_nifti(spacing, origin_lps, direction_lps) -> dict:
    """qform and sform fields (both scanner, equal) that put voxels where an ITK geometry does."""
    flip = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS
    direction = flip @ np.asarray(direction_lps, float).reshape(3, 3)
    origin = flip @ np.asarray(origin_lps, float)
    qfac = 1.0 if np.linalg.det(direction) > 0 else -1.0
    rotation = direction.copy()
    rotation[:, 2] *= qfac
    quatern = _quaternion(rotation)
    affine = direction * np.asarray(spacing, float)
    srow = [(*affine[row], origin[row]) for row in range(3)]
    return {
        "pixdim": (qfac, *spacing, 0, 0, 0, 0),
        "quatern": quatern,
        "qoffset": tuple(origin),
        "srow": srow,
        "qform_code": 1,
        "sform_code": 1,
    }


def _quaternion(r: np.ndarray) -> tuple[float, float, float]:
    """(b, c, d) of a proper rotation matrix, the NIfTI way (a >= 0 is implied)."""
    a = 1.0 + r[0, 0] + r[1, 1] + r[2, 2]
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b, c, d = (
            0.25 * (r[2, 1] - r[1, 2]) / a,
            0.25 * (r[0, 2] - r[2, 0]) / a,
            0.25 * (r[1, 0] - r[0, 1]) / a,
        )
    else:
        xd, yd, zd = (
            1 + r[0, 0] - r[1, 1] - r[2, 2],
            1 + r[1, 1] - r[0, 0] - r[2, 2],
            1 + r[2, 2] - r[0, 0] - r[1, 1],
        )
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c, d, a = (
                0.25 * (r[0, 1] + r[1, 0]) / b,
                0.25 * (r[0, 2] + r[2, 0]) / b,
                0.25 * (r[2, 1] - r[1, 2]) / b,
            )
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b, d, a = (
                0.25 * (r[0, 1] + r[1, 0]) / c,
                0.25 * (r[1, 2] + r[2, 1]) / c,
                0.25 * (r[0, 2] - r[2, 0]) / c,
            )
        else:
            d = 0.5 * np.sqrt(zd)
            b, c, a = (
                0.25 * (r[0, 2] + r[2, 0]) / d,
                0.25 * (r[1, 2] + r[2, 1]) / d,
                0.25 * (r[1, 0] - r[0, 1]) / d,
            )
        if a < 0:
            b, c, d = -b, -c, -d
    return float(b), float(c), float(d)


def metaimage_header(array: np.ndarray, data_file: str = "LOCAL", **fields) -> str:
    """``Key = Value`` lines; ``fields`` (NDims, DimSize, ElementSpacing, Offset, TransformMatrix,
    ElementType, CompressedData, ...) override or add, a value of None drops a line."""
    z, y, x = array.shape
    lines = {
        "ObjectType": "Image",
        "NDims": "3",
        "BinaryData": "True",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": "1 0 0 0 1 0 0 0 1",
        "Offset": "0 0 0",
        "ElementSpacing": "1 1 1",
        "DimSize": f"{x} {y} {z}",
        "ElementType": MET_TYPES.get(array.dtype, "MET_FLOAT"),
    }
    lines.update(fields)
    text = "".join(f"{key} = {value}\n" for key, value in lines.items() if value is not None)
    return text + f"ElementDataFile = {data_file}\n"


def write_metaimage(
    path: Path, array: np.ndarray, data_file: str | None = None, compress=False, **fields
) -> Path:
    """``.mha`` with the voxels attached, or a header naming ``data_file`` (written beside it
    unless it exists already or is not a plain name)."""
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    if compress:
        data = zlib.compress(data)
        fields = {"CompressedData": "True", "CompressedDataSize": str(len(data)), **fields}
    header = metaimage_header(array, data_file or "LOCAL", **fields)
    if data_file is None:
        path.write_bytes(header.encode() + data)
    else:
        path.write_text(header)
        target = path.parent / data_file
        if "/" not in data_file and not target.exists():
            target.write_bytes(data)
    return path


def nrrd_header(array: np.ndarray, data_file: str | None = None, encoding: str = "raw", **fields) -> str:
    z, y, x = array.shape
    lines = {
        "type": NRRD_TYPES.get(array.dtype, "float"),
        "dimension": "3",
        "space": "left-posterior-superior",
        "sizes": f"{x} {y} {z}",
        "space directions": "(1,0,0) (0,1,0) (0,0,1)",
        "endian": "little",
        "encoding": encoding,
        "space origin": "(0,0,0)",
    }
    lines.update(fields)
    if data_file is not None:
        lines["data file"] = data_file
    return "NRRD0004\n" + "".join(f"{key}: {value}\n" for key, value in lines.items() if value is not None)


def write_nrrd(path: Path, array: np.ndarray, data_file: str | None = None, encoding="raw", **fields) -> Path:
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    if encoding == "gzip":
        data = gzip.compress(data, 1)
    header = nrrd_header(array, data_file, encoding, **fields)
    if data_file is None:
        path.write_bytes(header.encode() + b"\n" + data)
    else:
        path.write_text(header + "\n")
        target = path.parent / data_file
        if "/" not in data_file and not target.exists():
            target.write_bytes(data)
    return path
