"""Seeded fuzzing of NIfTI, MetaImage and NRRD headers against the promise of `cgs convert`:

exit 0 with the geometry the header states and the voxels it holds, or exit 2 with exactly one
line; never a traceback, a crash or a hang (each case bounded); never a changed file that existed
before.

Each case starts from a valid file with a random geometry (spacing, origin, a rotation with
either handedness) and type, then 0 to 3 header fields are set to values drawn from a pool of
plausible and hostile ones (0, -1, NaN, inf, huge, text, wrong counts...), or the data is cut.
What the header means is worked out here, independently of the engine, from the format's own
definition (``expected_*``): None when it has no single meaning (a NaN voxel size, a sheared
matrix, too little data), and then only a refusal is right.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import math
import os
import signal
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from file_makers import geometry_fields_for_nifti, metaimage_header, nifti_bytes, nrrd_header
from scipy.spatial.transform import Rotation

from cgs_engine.cli.main import main

SEED = 20261205
CASES_PER_FORMAT = 100  # x 3 formats
CASE_SECONDS = 20
LPS = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
HOSTILE_NUMBERS = (0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e30, 1e-30, 0.5, 2.0, 7.0)
HOSTILE_TEXT = ("0", "-1", "nan", "inf", "1e30", "abc", "", "1 2", "0.5", "3")


@dataclass
class Expected:
    array: np.ndarray  # [z, y, x], the values a reader must return
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray  # 3x3, columns = axes (LPS)


@dataclass
class FuzzCase:
    name: str
    files: dict[str, bytes]  # file name -> bytes, the first is the one to read
    expected: Expected | None  # None: the header has no single meaning; only a refusal is right
    mutated: list[str]


def random_geometry(rng: np.random.Generator):
    rotation = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix()
    if rng.random() < 0.5:
        rotation[:, 2] *= -1  # a left-handed grid (qfac -1 in NIfTI)
    if rng.random() < 0.3:
        rotation = np.eye(3)
    spacing = tuple(float(v) for v in np.round(rng.uniform(0.3, 5.0, 3), 3))
    origin = tuple(float(v) for v in np.round(rng.uniform(-300, 300, 3), 2))
    return spacing, origin, rotation


def random_array(rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(n) for n in rng.integers(2, 6, 3))
    kind = rng.choice(["float32", "int16", "uint8", "float64", "uint16"])
    if kind.startswith("float"):
        return rng.normal(0, 100, shape).astype(kind)
    info = np.iinfo(kind)
    return rng.integers(max(info.min, -3000), min(info.max, 3000), shape).astype(kind)


def pick(rng: np.random.Generator, values):
    return values[int(rng.integers(len(values)))]


# ---------------------------------------------------------------------------------------- NIfTI
NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}


def nifti_case(rng: np.random.Generator, index: int) -> FuzzCase:
    array = random_array(rng)
    spacing, origin, rotation = random_geometry(rng)
    fields = geometry_fields_for_nifti(spacing, origin, rotation.ravel())
    fields["pixdim"] = list(fields["pixdim"])
    fields["srow"] = [list(row) for row in fields["srow"]]
    fields["quatern"], fields["qoffset"] = list(fields["quatern"]), list(fields["qoffset"])
    z, y, x = array.shape
    fields.update(
        dims=[3, x, y, z, 1, 1, 1, 1],
        datatype={"float32": 16, "int16": 4, "uint8": 2, "float64": 64, "uint16": 512}[array.dtype.name],
        bitpix=array.dtype.itemsize * 8,
        vox_offset=352.0,
        scl_slope=1.0,
        scl_inter=0.0,
        magic=b"n+1\x00",
        sizeof_hdr=348,
    )
    if rng.random() < 0.3:
        fields["qform_code"] = 0
    elif rng.random() < 0.2:
        fields["sform_code"] = 0
    if rng.random() < 0.2 and array.dtype.kind in "iu":
        fields["scl_slope"], fields["scl_inter"] = (
            float(pick(rng, (0.5, 2.0, -1.0))),
            float(pick(rng, (0.0, -1024.0))),
        )
    mutated = []
    for _ in range(int(rng.integers(0, 4)) if index % 4 else 0):
        mutated.append(_mutate_nifti(rng, fields))
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    blob = nifti_bytes(array, data=data, **fields)
    if rng.random() < 0.1:
        blob = blob[: int(rng.integers(1, len(blob)))]
        mutated.append("cut")
    gz = rng.random() < 0.5
    name = f"case{index}.nii" + (".gz" if gz else "")
    return FuzzCase(
        name,
        {name: gzip.compress(blob, 1) if gz else blob},
        expected_nifti(fields, blob, array.dtype),
        mutated,
    )


def _mutate_nifti(rng: np.random.Generator, fields: dict) -> str:
    field = pick(
        rng,
        (
            "dims", "dim0", "datatype", "bitpix", "pixdim", "vox_offset", "scl_slope", "scl_inter",
            "qform_code", "sform_code", "quatern", "qoffset", "srow", "magic", "sizeof_hdr",
        ),
    )  # fmt: skip
    if field == "dims":
        fields["dims"][int(rng.integers(1, 4))] = int(pick(rng, (0, -1, 1, 2, 30000)))
    elif field == "dim0":
        fields["dims"][0] = int(pick(rng, (0, 2, 4, 5, 8, -1)))
    elif field == "datatype":
        fields["datatype"] = int(pick(rng, (0, 3, 2, 4, 16, 64, 512, 9999)))
    elif field == "bitpix":
        fields["bitpix"] = int(pick(rng, (0, 7, 8, 16, 32, 64)))
    elif field == "pixdim":
        fields["pixdim"][int(rng.integers(0, 4))] = float(pick(rng, HOSTILE_NUMBERS))
    elif field == "vox_offset":
        fields["vox_offset"] = float(
            pick(rng, (0.0, 348.0, 351.0, 352.5, 356.0, 368.0, 1024.0, math.nan, 1e9, -352.0))
        )
    elif field == "scl_slope":
        fields["scl_slope"] = float(pick(rng, (0.0, 1.0, -2.0, 0.5, math.nan, math.inf)))
    elif field == "scl_inter":
        fields["scl_inter"] = float(pick(rng, (0.0, 5.0, -1024.0, math.nan)))
    elif field in ("qform_code", "sform_code"):
        fields[field] = int(pick(rng, (0, 1, 2, 3, 4, 5, 6, -1, 255)))
    elif field == "quatern":
        fields["quatern"][int(rng.integers(3))] = float(pick(rng, (0.0, 0.5, 0.9, 1.0, 1.5, math.nan, -0.7)))
    elif field == "qoffset":
        fields["qoffset"][int(rng.integers(3))] = float(pick(rng, (0.0, 1e30, math.nan, -50.0)))
    elif field == "srow":
        fields["srow"][int(rng.integers(3))][int(rng.integers(4))] = float(pick(rng, HOSTILE_NUMBERS))
    elif field == "magic":
        fields["magic"] = pick(rng, (b"ni1\x00", b"\x00\x00\x00\x00", b"n+2\x00", b"n+1\x00"))
    else:
        fields["sizeof_hdr"] = int(pick(rng, (0, 540, 1000, 348)))
    return field


def expected_nifti(fields: dict, blob: bytes, dtype: np.dtype) -> Expected | None:
    """What a single-file NIfTI-1 holds, by the standard; None when it has no single meaning."""
    if fields["sizeof_hdr"] != 348 or fields["magic"] != b"n+1\x00":
        return None
    dims = fields["dims"]
    if dims[0] not in (3, 4) or min(dims[1:4]) < 1 or (dims[0] == 4 and dims[4] != 1):
        return None
    code = NIFTI_DTYPES.get(fields["datatype"])
    if code is None or np.dtype(code).itemsize * 8 != fields["bitpix"]:
        return None
    offset = _f32(fields["vox_offset"])
    if not math.isfinite(offset) or offset != int(offset) or offset < 352:
        return None
    x, y, z = dims[1:4]
    count = x * y * z * np.dtype(code).itemsize
    if len(blob) < int(offset) + count:
        return None
    values = np.frombuffer(blob[int(offset) : int(offset) + count], dtype="<" + code).reshape(z, y, x)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return None
    slope, inter = _f32(fields["scl_slope"]), _f32(fields["scl_inter"])
    if not (math.isfinite(slope) and math.isfinite(inter)) or (slope == 0 and inter != 0):
        return None
    if slope not in (0.0, 1.0) or inter != 0:
        values = values.astype(np.float64) * slope + inter
    geometry = _nifti_geometry(fields)
    if geometry is None:
        return None
    return Expected(values.astype(np.float64), *geometry)


def _nifti_geometry(fields: dict):
    qcode, scode = fields["qform_code"], fields["sform_code"]
    if qcode not in range(6) or scode not in range(6):
        return None
    pixdim = [_f32(v) for v in fields["pixdim"]]
    q = _qform(fields, pixdim) if qcode > 0 else None
    s = _sform(fields) if scode > 0 else None
    if (qcode > 0 and q is None) or (scode > 0 and s is None):
        return None
    if q is not None and s is not None and not _same_affine(q, s):
        return None
    if s is not None and not np.allclose(np.linalg.norm(s[:3, :3], axis=0), pixdim[1:4], rtol=1e-4):
        return None  # which voxel size is meant, the sform's or pixdim's?
    affine = s if s is not None else q
    if affine is None:  # no transform states the patient's orientation: refused
        return None
    linear, origin = LPS @ affine[:3, :3], LPS @ affine[:3, 3]
    spacing = np.linalg.norm(linear, axis=0)
    return tuple(spacing), tuple(origin), linear / spacing


def _qform(fields: dict, pixdim):
    b, c, d = (_f32(v) for v in fields["quatern"])
    offset = [_f32(v) for v in fields["qoffset"]]
    if not all(math.isfinite(v) for v in (b, c, d, *offset, *pixdim[1:4])) or min(pixdim[1:4]) <= 0:
        return None
    if b * b + c * c + d * d > 1 + 1e-6:
        return None
    a = math.sqrt(max(0.0, 1 - (b * b + c * c + d * d)))
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
    affine[:3, 3] = offset
    return affine


def _sform(fields: dict):
    affine = np.eye(4)
    affine[:3, :] = [[_f32(v) for v in row] for row in fields["srow"]]
    if not np.isfinite(affine).all():
        return None
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if (norms == 0).any():
        return None
    unit = affine[:3, :3] / norms
    if np.abs(unit.T @ unit - np.eye(3)).max() > 1e-4:
        return None  # sheared: no rotation and voxel sizes describe it
    return affine


def _same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    return np.allclose(a[:3, :3], b[:3, :3], atol=1e-4, rtol=1e-4) and np.allclose(
        a[:3, 3], b[:3, 3], atol=1e-3
    )


def _f32(value: float) -> float:
    return float(np.float32(value))


# ------------------------------------------------------------------------------------ MetaImage
METAIMAGE_FIELDS = (
    "NDims", "DimSize", "ElementSpacing", "Offset", "TransformMatrix", "ElementType", "CompressedData",
    "HeaderSize", "BinaryDataByteOrderMSB", "duplicate", "datafile",
)  # fmt: skip
MET_DTYPES = {"MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2", "MET_FLOAT": "f4", "MET_DOUBLE": "f8"}


def metaimage_case(rng: np.random.Generator, index: int) -> FuzzCase:
    array = random_array(rng)
    spacing, origin, rotation = random_geometry(rng)
    fields = {
        "NDims": "3",
        "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": " ".join(f"{v:.17g}" for v in rotation.T.ravel()),
        "Offset": " ".join(f"{v:.17g}" for v in origin),
        "ElementSpacing": " ".join(f"{v:.17g}" for v in spacing),
        "DimSize": " ".join(str(n) for n in array.shape[::-1]),
        "ElementType": {"uint8": "MET_UCHAR", "int16": "MET_SHORT", "uint16": "MET_USHORT",
                        "float32": "MET_FLOAT", "float64": "MET_DOUBLE"}[array.dtype.name],
    }  # fmt: skip
    detached = rng.random() < 0.4
    compressed = rng.random() < 0.4
    mutated = []
    extra_lines = ""
    for _ in range(int(rng.integers(0, 4)) if index % 4 else 0):
        field = pick(rng, METAIMAGE_FIELDS)
        mutated.append(field)
        if field == "NDims":
            fields["NDims"] = pick(rng, ("2", "4", "0", "x", "3"))
        elif field in ("DimSize", "ElementSpacing", "Offset", "TransformMatrix"):
            parts = fields[field].split()
            if rng.random() < 0.2:
                parts = parts[:-1]
            else:
                parts[int(rng.integers(len(parts)))] = pick(rng, HOSTILE_TEXT)
            fields[field] = " ".join(parts)
        elif field == "ElementType":
            fields["ElementType"] = pick(rng, ("MET_BOGUS", "MET_UCHAR", "MET_FLOAT", "MET_DOUBLE"))
        elif field == "CompressedData":
            compressed = not compressed
        elif field == "HeaderSize":
            fields["HeaderSize"] = pick(rng, ("-1", "0", "x"))
        elif field == "BinaryDataByteOrderMSB":
            fields["BinaryDataByteOrderMSB"] = "True"
        elif field == "duplicate":
            extra_lines = f"Offset = {pick(rng, ('0 0 0', fields['Offset']))}\n"
        else:
            detached = "outside"
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    stored = zlib.compress(data) if compressed else data
    header_fields = dict(fields)
    if compressed:
        header_fields["CompressedData"] = "True"
        header_fields["CompressedDataSize"] = str(len(stored))
    cut = rng.random() < 0.1
    if cut:
        stored = stored[: int(rng.integers(0, len(stored)))]
        mutated.append("cut")
    name = f"case{index}" + (".mhd" if detached else ".mha")
    data_name = {True: f"case{index}.raw", "outside": "../outside.raw", False: "LOCAL"}[detached]
    header = metaimage_header(array, data_name, **{"ObjectType": "Image", **header_fields})
    header = header.replace("ElementDataFile", extra_lines + "ElementDataFile") if extra_lines else header
    files = {name: header.encode() + (b"" if detached else stored)}
    if detached is True:
        files[data_name] = stored
    expected = (
        None
        if detached == "outside" or extra_lines
        else expected_metaimage(header_fields, stored, compressed)
    )
    return FuzzCase(name, files, expected, mutated)


def expected_metaimage(fields: dict, stored: bytes, compressed: bool) -> Expected | None:
    try:
        if int(fields["NDims"]) != 3 or fields.get("HeaderSize", "0") not in ("0", "-1"):
            return None
        sizes = [float(v) for v in fields["DimSize"].split()]
        spacing = [float(v) for v in fields["ElementSpacing"].split()]
        origin = [float(v) for v in fields["Offset"].split()]
        matrix = [float(v) for v in fields["TransformMatrix"].split()]
    except ValueError:
        return None
    if len(sizes) != 3 or len(spacing) != 3 or len(origin) != 3 or len(matrix) != 9:
        return None
    if any(not math.isfinite(n) or n != int(n) or n < 1 for n in sizes) or not all(
        math.isfinite(v) and v > 0 for v in spacing
    ):
        return None
    if not all(math.isfinite(v) for v in (*origin, *matrix)):
        return None
    direction = np.asarray(matrix).reshape(3, 3).T
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:
        return None
    code = MET_DTYPES.get(fields["ElementType"])
    if code is None:
        return None
    x, y, z = (int(n) for n in sizes)
    if compressed:
        try:
            data = zlib.decompress(stored)
        except zlib.error:
            return None
    else:
        data = stored
    count = x * y * z * np.dtype(code).itemsize
    if len(data) < count or (compressed and len(data) != count):
        return None
    order = ">" if fields["BinaryDataByteOrderMSB"] == "True" else "<"
    if fields.get("HeaderSize") == "-1":
        data = data[len(data) - count :]
    values = np.frombuffer(data[:count], dtype=order + code).reshape(z, y, x)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return None
    return Expected(values.astype(np.float64), tuple(spacing), tuple(origin), direction)


# ----------------------------------------------------------------------------------------- NRRD
NRRD_DTYPES = {"uchar": "u1", "short": "i2", "ushort": "u2", "float": "f4", "double": "f8"}


def nrrd_case(rng: np.random.Generator, index: int) -> FuzzCase:
    array = random_array(rng)
    spacing, origin, rotation = random_geometry(rng)
    ras = rng.random() < 0.3
    frame = LPS if ras else np.eye(3)
    columns = frame @ rotation * np.asarray(spacing)
    fields = {
        "type": {"uint8": "uchar", "int16": "short", "uint16": "ushort", "float32": "float",
                 "float64": "double"}[array.dtype.name],
        "dimension": "3",
        "space": "right-anterior-superior" if ras else "left-posterior-superior",
        "sizes": " ".join(str(n) for n in array.shape[::-1]),
        "space directions": " ".join(_vector(columns[:, i]) for i in range(3)),
        "endian": "little",
        "encoding": pick(rng, ("raw", "gzip")),
        "space origin": "(" + ",".join(f"{v:.17g}" for v in frame @ np.asarray(origin)) + ")",
    }  # fmt: skip
    detached = rng.random() < 0.4
    mutated = []
    for _ in range(int(rng.integers(0, 4)) if index % 4 else 0):
        field = pick(rng, ("type", "dimension", "sizes", "space", "space directions", "space origin",
                           "encoding", "endian", "spacings", "byte skip", "datafile"))  # fmt: skip
        mutated.append(field)
        if field == "type":
            fields["type"] = pick(rng, ("bogus", "float", "uchar", "double"))
        elif field == "dimension":
            fields["dimension"] = pick(rng, ("2", "4", "0", "x"))
        elif field == "sizes":
            parts = fields["sizes"].split()
            parts[int(rng.integers(3))] = pick(rng, ("0", "-1", "1.5", "abc", "1"))
            fields["sizes"] = " ".join(parts)
        elif field == "space":
            fields["space"] = pick(rng, ("scanner-xyz", "bogus", "left-posterior-superior"))
        elif field == "space directions":
            vectors = fields["space directions"].split()
            axis = int(rng.integers(3))
            parts = vectors[axis].strip("()").split(",")
            parts[int(rng.integers(3))] = pick(rng, HOSTILE_TEXT[:6])
            vectors[axis] = "(" + ",".join(parts) + ")"
            fields["space directions"] = " ".join(vectors)
        elif field == "space origin":
            parts = fields["space origin"].strip("()").split(",")
            parts[int(rng.integers(3))] = pick(rng, ("nan", "inf", "abc", "1e30"))
            fields["space origin"] = "(" + ",".join(parts) + ")"
        elif field == "encoding":
            fields["encoding"] = pick(rng, ("rot13", "raw", "gzip"))
        elif field == "endian":
            fields["endian"] = "big"
        elif field == "spacings":
            fields["spacings"] = pick(rng, ("1 1 1", "nan 1 1", "0 1 1"))
        elif field == "byte skip":
            fields["byte skip"] = pick(rng, ("-1", "0", "x"))
        else:
            detached = "outside"
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    stored = gzip.compress(data, 1) if fields["encoding"] == "gzip" else data
    if rng.random() < 0.1:
        stored = stored[: int(rng.integers(0, len(stored)))]
        mutated.append("cut")
    name = f"case{index}" + (".nhdr" if detached else ".nrrd")
    data_name = {True: f"case{index}.raw", "outside": "../outside.raw", False: None}[detached]
    header = nrrd_header(array, data_name, **fields).encode()
    files = {name: header + b"\n" + (b"" if detached else stored)}
    if detached is True:
        files[data_name] = stored
    expected = None if detached == "outside" else expected_nrrd(fields, stored)
    return FuzzCase(name, files, expected, mutated)


def _vector(values) -> str:
    return "(" + ",".join(f"{v:.17g}" for v in values) + ")"


def expected_nrrd(fields: dict, stored: bytes) -> Expected | None:
    if (
        fields["dimension"] != "3"
        or fields["type"] not in NRRD_DTYPES
        or fields["encoding"] not in ("raw", "gzip")
    ):
        return None
    if "spacings" in fields or fields.get("byte skip", "0") not in ("0", "-1"):
        return None
    if fields.get("byte skip") == "-1" and fields["encoding"] != "raw":
        return None  # "data at the end" is defined for raw data only
    space = fields["space"]
    frame = {"left-posterior-superior": np.eye(3), "right-anterior-superior": LPS}.get(space)
    if frame is None:
        return None
    try:
        sizes = [float(v) for v in fields["sizes"].split()]
        columns = np.array(
            [
                [float(v) for v in vector.strip("()").split(",")]
                for vector in fields["space directions"].split()
            ]
        ).T
        origin = np.array([float(v) for v in fields["space origin"].strip("()").split(",")])
    except ValueError:
        return None
    if (
        len(sizes) != 3
        or any(not math.isfinite(n) or n != int(n) or n < 1 for n in sizes)
        or columns.shape != (3, 3)
        or origin.shape != (3,)
    ):
        return None
    if not np.isfinite(columns).all() or not np.isfinite(origin).all():
        return None
    spacing = np.linalg.norm(columns, axis=0)
    if (spacing == 0).any():
        return None
    direction = frame @ columns / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-4:
        return None
    if fields["encoding"] == "gzip":
        try:
            data = gzip.decompress(stored)
        except (OSError, EOFError, zlib.error):
            return None
    else:
        data = stored
    code = NRRD_DTYPES[fields["type"]]
    x, y, z = (int(n) for n in sizes)
    count = x * y * z * np.dtype(code).itemsize
    if len(data) < count:
        return None
    if fields.get("byte skip") == "-1":
        data = data[len(data) - count :]
    order = ">" if fields["endian"] == "big" else "<"
    values = np.frombuffer(data[:count], dtype=order + code).reshape(z, y, x)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return None
    return Expected(values.astype(np.float64), tuple(spacing), tuple(frame @ origin), direction)


# -------------------------------------------------------------------------------------- running
def all_cases() -> list[FuzzCase]:
    rng = np.random.default_rng(SEED)
    makers = (nifti_case, metaimage_case, nrrd_case)
    return [maker(rng, index) for index in range(CASES_PER_FORMAT) for maker in makers]


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: int):
    def expire(signum, frame):
        raise CaseTimeout(f"no answer in {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines, C-level output of the libraries included."""
    python_err = io.StringIO()
    with tempfile.TemporaryFile() as native:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        try:
            with (
                contextlib.redirect_stderr(python_err),
                contextlib.redirect_stdout(io.StringIO()),
                bounded(CASE_SECONDS),
            ):
                code = main(argv)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        native.seek(0)
        text = native.read().decode("utf-8", "replace") + python_err.getvalue()
    return code, [line for line in text.splitlines() if line.strip()]


def digests(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def check_case(case: FuzzCase, folder: Path) -> str | None:
    """None when the promise holds for this case, else what broke it."""
    work = folder / "in"
    work.mkdir(parents=True)
    (folder / "outside.raw").write_bytes(bytes(range(256)) * 64)
    for name, data in case.files.items():
        (work / name).write_bytes(data)
    output = folder / "out.mha"
    overwrite = len(case.name) % 2 == 0
    if overwrite:
        output.write_bytes(b"an earlier result")
    before = digests(folder)
    argv = ["convert", str(work / next(iter(case.files))), str(output)] + (
        ["--overwrite"] if overwrite else []
    )
    try:
        code, lines = run_cli(argv)
    except CaseTimeout as error:
        return f"hang: {error}"
    except BaseException as error:  # noqa: BLE001 - a traceback is what this test looks for
        return f"traceback: {type(error).__name__}: {error}"
    if code == 2:
        if len(lines) != 1 or ": error: " not in lines[0]:
            return f"exit 2 without exactly one error line: {lines[:4]}"
        if digests(folder) != before:
            return "a refused case changed a file that existed before"
        if case.expected is not None and not case.mutated:
            return f"a valid file was refused: {lines[0]}"
        return None
    if code != 0:
        return f"exit {code}: {lines[:3]}"
    if lines:
        return f"exit 0 with library output: {lines[:3]}"
    changed = [p for p, d in before.items() if p != str(output) and digests(folder).get(p) != d]
    if changed:
        return f"changed {changed}"
    if case.expected is None:
        return "accepted a header that has no single meaning (silent wrong geometry)"
    return _compare(sitk.ReadImage(str(output)), case.expected)


def _compare(image: sitk.Image, expected: Expected) -> str | None:
    got = sitk.GetArrayFromImage(image).astype(np.float64)
    if got.shape != expected.array.shape:
        return f"shape {got.shape} instead of {expected.array.shape}"
    scale = max(1.0, float(np.abs(expected.array).max()))
    if not np.allclose(got, expected.array, rtol=1e-5, atol=1e-5 * scale):
        return "voxels differ from the file's"
    if not np.allclose(image.GetSpacing(), expected.spacing, rtol=1e-4):
        return f"spacing {image.GetSpacing()} instead of {expected.spacing}"
    if not np.allclose(image.GetOrigin(), expected.origin, rtol=1e-5, atol=1e-3):
        return f"origin {image.GetOrigin()} instead of {expected.origin}"
    if not np.allclose(np.reshape(image.GetDirection(), (3, 3)), expected.direction, atol=1e-4):
        return "direction differs from the header's"
    return None


CASES = all_cases()


def test_the_generator_makes_valid_and_hostile_cases():
    valid = [case for case in CASES if not case.mutated]
    assert len(CASES) == 3 * CASES_PER_FORMAT
    assert len(valid) >= CASES_PER_FORMAT // 2 and all(case.expected is not None for case in valid)
    assert sum(case.expected is None for case in CASES) >= CASES_PER_FORMAT // 2


def test_every_fuzzed_header_keeps_the_promise(tmp_path):
    failures = []
    for number, case in enumerate(CASES):
        problem = check_case(case, tmp_path / f"{number:03d}")
        if problem:
            failures.append(f"{case.name} {case.mutated}: {problem}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases broke the promise:\n" + "\n".join(
        failures[:40]
    )


@pytest.mark.parametrize("number", [1, 2, 3, 5, 6, 7])
def test_fuzzed_headers_in_a_fresh_process_exit_cleanly(tmp_path, number):
    """A few cases as the real command, so a crash of the process (not only an exception) shows."""
    case = CASES[number * 7 % len(CASES)]
    for name, data in case.files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path.parent / "outside.raw").write_bytes(bytes(256))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cgs_engine",
            "convert",
            str(tmp_path / next(iter(case.files))),
            str(tmp_path / "o.mha"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode in (0, 2), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.returncode == 0 and not lines or len(lines) == 1 and ": error: " in lines[0], lines
