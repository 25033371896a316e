"""One check of an image file's header before the image library reads it.

ITK repairs, guesses or drops what it does not like in a header and carries on: a zero or NaN
voxel size becomes 1 mm, ``Offset = nan`` becomes 0, a sheared sform is swapped for the qform,
``dim[3] = 0`` reads one slice, ``vox_offset = 0`` shifts every voxel, a MetaImage direction
that is not a rotation is kept as it is. Each would give a volume whose geometry is not what
the file says, silently. So the header is read here as the format defines it and every field
that the reader would reinterpret is refused with the reason, naming the file.

A header names its data files itself (``text_header``): they must lie beside it and be regular
files. The input itself must be a regular file too (no pipe, device or socket).
"""

from __future__ import annotations

import math
import os
import re
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VolumeIOError
from .formats import NIFTI_EXTENSIONS, extension_of
from .nifti_header import DATATYPES, XFORM_CODES, NiftiHeader, header_cut_short, read_nifti_header
from .text_header import TextHeader, describe_mode, read_text_header, resolve_data_files, text_header_format

ORTHOGONAL_TOLERANCE = 1e-4  # |cos| between axes, and |D^T D - I| of a direction matrix
SPACING_RTOL = 1e-4
ORIGIN_ATOL = 1e-3  # mm
QUATERNION_SLACK = 1e-6
# A qform keeps its rotation as float32 quaternion b, c, d and recomputes a = sqrt(1 - b2 - c2 - d2):
# next to a half-turn (d near 1, as every LPS scan written as RAS has) a small tilt vanishes below
# float32 precision, up to about sqrt(2 * 2**-23) = 3.5e-4 of a direction component. So a qform and
# an sform written together from one direction differ by that much (ITK's own files, a DICOM series
# rotated by 0.01 deg); a disagreement meant as such is far larger.
QFORM_DIRECTION_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DataLayout:
    """Where the voxel bytes of a file lie and how they are stored."""

    files: tuple[Path, ...]
    offset: int | None  # into the first file; None where the reader derives it (data at the end)
    # "raw" or "gzip" (a gzip or zlib stream) for MetaImage and NRRD data; "nifti-raw" or
    # "nifti-gzip" (the whole file gzipped) for NIfTI, whose data ``integrity`` measures; "other"
    encoding: str
    skip_inflated: int = 0  # bytes before the voxels in the inflated stream (NRRD gzip "byte skip")
    compressed_bytes: int | None = None  # of the stream, as declared (MetaImage CompressedDataSize)


def require_regular_file(location: Path, name: str) -> os.stat_result:
    """The ``stat`` of ``location``, or a one-line refusal for a pipe, device, socket or folder."""
    try:
        info = os.stat(location)
    except OSError as error:
        raise VolumeIOError(name, error.strerror or "cannot be opened") from None
    if not stat.S_ISREG(info.st_mode):
        raise VolumeIOError(name, f"is {describe_mode(info.st_mode)}, not an image file")
    return info


def check_image_header(location: Path, name: str) -> DataLayout:
    """Refuse a header the reader would reinterpret; return where its voxel data lies."""
    require_regular_file(location, name)
    if extension_of(location) in NIFTI_EXTENSIONS:
        return _check_nifti(location, name)
    if text_header_format(location) is not None:
        header = read_text_header(location, name)
        files = tuple(resolve_data_files(location, header, name))
        if header.format == "metaimage":
            return _check_metaimage(header, files, name)
        return _check_nrrd(header, files, name)
    return DataLayout((location,), None, "other")


def check_label_scaling(location: Path, name: str) -> None:
    """A label map's ids are its stored values: a NIfTI header scaling them (scl_inter 1 made every
    background voxel class 1, the brainstem) is refused, whatever ids it happens to give."""
    if extension_of(location) not in NIFTI_EXTENSIONS:
        return
    header = read_nifti_header(location)
    if header is None:
        return
    slope, inter = header.scl_slope, header.scl_inter
    if slope not in (0.0, 1.0) or (slope != 0.0 and inter != 0.0):
        raise VolumeIOError(
            name,
            f"header scaling scl_slope = {slope:g}, scl_inter = {inter:g} would change the label ids "
            "(a label map's ids are stored as they are); save it without scaling",
        )


# ----------------------------------------------------------------------------------------- NIfTI
def _check_nifti(location: Path, name: str) -> DataLayout:
    try:
        header = read_nifti_header(location)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeIOError(name, f"file is truncated or corrupt (bad gzip data: {error})") from None
    if header is None:
        if header_cut_short(location):
            raise VolumeIOError(name, "file is truncated or corrupt (it ends inside its NIfTI header)")
        raise VolumeIOError(
            name, "not a readable image (not NIfTI: its header size field is neither 348 nor 540)"
        )
    check_nifti_header(header, name)
    with open(location, "rb") as stream:
        whole_gzip = stream.read(2) == b"\x1f\x8b"
    return DataLayout((location,), int(header.vox_offset), "nifti-gzip" if whole_gzip else "nifti-raw")


def check_nifti_header(h: NiftiHeader, name: str) -> None:
    if not h.single_file:
        raise VolumeIOError(
            name,
            f"header magic {h.magic!r} is not that of a single-file NIfTI-{h.version} (n+{h.version}); "
            "a separate .img file or another version is not read",
        )
    if h.version == 2:  # (the reader says only "not recognized": it was refused as corrupt)
        raise VolumeIOError(
            name,
            "is a NIfTI-2 file, which this reader does not read; save it as NIfTI-1 (e.g. with "
            "nibabel: nib.save(nib.Nifti1Image.from_image(nib.load(path)), out))",
        )
    if not 1 <= h.ndim <= 7:
        raise VolumeIOError(name, f"header dim[0] = {h.ndim}; the number of axes must be 1 to 7")
    for axis, size in enumerate(h.sizes, start=1):
        if size < 1:
            raise VolumeIOError(name, f"header dim[{axis}] = {size}; every axis needs at least 1 voxel")
    if h.datatype not in DATATYPES:
        raise VolumeIOError(name, f"header datatype code {h.datatype} is not a NIfTI voxel type")
    bits = DATATYPES[h.datatype][0]
    if h.bitpix != bits:
        raise VolumeIOError(name, f"header bitpix = {h.bitpix} but datatype {h.datatype} has {bits} bits")
    offset = h.vox_offset
    if not math.isfinite(offset) or offset != int(offset) or offset < h.min_vox_offset:
        raise VolumeIOError(
            name,
            f"header vox_offset = {offset:g} is invalid (voxels of a single-file NIfTI start at a whole "
            f"byte from {h.min_vox_offset} on); the reader would take them from the wrong place",
        )
    for axis in range(1, min(h.ndim, 3) + 1):
        _check_voxel_size(h.pixdim[axis], f"pixdim[{axis}]", name)
    _check_scaling(h, name)
    for which, code in (("qform_code", h.qform_code), ("sform_code", h.sform_code)):
        if code not in XFORM_CODES:
            raise VolumeIOError(name, f"header {which} = {code} is not a NIfTI transform code (0 to 5)")
    if h.qform_code == 0 and h.sform_code == 0:
        # NIfTI "method 1" (ANALYZE style): voxel sizes only. Read as LPS with identity direction it
        # may be the patient's mirror image; which side is left cannot be told (as NRRD scanner-xyz)
        raise VolumeIOError(
            name,
            "header states no patient orientation (qform_code and sform_code are both 0), so which side "
            "is the patient's left cannot be told; convert it again from the scanner's DICOM",
        )
    qform = _checked_qform(h, name) if h.qform_code > 0 else None
    sform = _checked_sform(h, name) if h.sform_code > 0 else None
    if qform is not None and sform is not None:
        _require_same(qform, sform, "header qform and sform", name)


def _check_voxel_size(value: float, field: str, name: str) -> None:
    if not math.isfinite(value) or value <= 0:
        raise VolumeIOError(
            name, f"header {field} (voxel size) = {value:g}; it must be a positive number of millimetres"
        )


def _check_scaling(h: NiftiHeader, name: str) -> None:
    slope, inter = h.scl_slope, h.scl_inter
    if not math.isfinite(slope) or not math.isfinite(inter):
        raise VolumeIOError(
            name, f"header scaling scl_slope = {slope:g}, scl_inter = {inter:g} is not finite"
        )
    if slope == 0 and inter != 0:
        # The standard says slope 0 means "no scaling"; ITK adds the intercept all the same.
        raise VolumeIOError(
            name, f"header has scl_slope = 0 with scl_inter = {inter:g}; whether to scale is ambiguous"
        )


def _checked_qform(h: NiftiHeader, name: str) -> np.ndarray:
    b, c, d = h.quatern
    if not all(math.isfinite(v) for v in (*h.quatern, *h.qoffset)):
        raise VolumeIOError(name, "header qform holds a value that is not a finite number")
    if b * b + c * c + d * d > 1 + QUATERNION_SLACK:
        raise VolumeIOError(
            name, f"header qform quaternion ({b:g}, {c:g}, {d:g}) is longer than 1, so it is not a rotation"
        )
    return h.qform_affine()


def _checked_sform(h: NiftiHeader, name: str) -> np.ndarray:
    affine = h.sform_affine()
    if not np.isfinite(affine).all():
        raise VolumeIOError(name, "header sform holds a value that is not a finite number")
    axes = affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    if (sizes == 0).any():
        raise VolumeIOError(name, "header sform gives a voxel axis of length 0")
    if _not_orthogonal(axes / sizes):
        raise VolumeIOError(
            name,
            "header sform is sheared (its voxel axes are not perpendicular); the reader would drop the shear",
        )
    pixdim = np.asarray(h.pixdim[1:4], dtype=float)
    if not np.allclose(sizes, pixdim, rtol=SPACING_RTOL, atol=0):
        raise VolumeIOError(
            name,
            f"header pixdim {_triple(pixdim)} disagrees with the voxel sizes of its sform {_triple(sizes)}; "
            "the reader would mix the two",
        )
    return affine


def _require_same(first: np.ndarray, second: np.ndarray, what: str, name: str) -> None:
    sizes_a, sizes_b = np.linalg.norm(first[:3, :3], axis=0), np.linalg.norm(second[:3, :3], axis=0)
    differences = []
    if not np.allclose(sizes_a, sizes_b, rtol=SPACING_RTOL, atol=0):
        differences.append(f"voxel sizes {_triple(sizes_a)} vs {_triple(sizes_b)} mm")
    if not np.allclose(first[:3, :3] / sizes_a, second[:3, :3] / sizes_b, atol=QFORM_DIRECTION_TOLERANCE):
        differences.append("axis directions")
    if not np.allclose(first[:3, 3], second[:3, 3], atol=ORIGIN_ATOL, rtol=SPACING_RTOL):
        differences.append(f"origin {_triple(first[:3, 3])} vs {_triple(second[:3, 3])} mm")
    if differences:
        raise VolumeIOError(
            name, f"{what} disagree ({'; '.join(differences)}); which geometry is meant is ambiguous"
        )


def _not_orthogonal(unit_columns: np.ndarray) -> bool:
    gram = unit_columns.T @ unit_columns
    return bool(np.abs(gram - np.eye(len(gram))).max() > ORTHOGONAL_TOLERANCE)


def _triple(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


# ------------------------------------------------------------------------------------- MetaImage
_MET_TYPES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _check_metaimage(header: TextHeader, files: tuple[Path, ...], name: str) -> DataLayout:
    geometry_keys = {"ndims", "dimsize", "elementspacing", "offset", "origin", "position", "transformmatrix"}
    repeated = sorted(set(header.duplicates) & (geometry_keys | {"rotation", "orientation"}))
    if repeated:
        raise VolumeIOError(name, f"header gives {repeated[0]} twice; which one counts is ambiguous")
    ndims = _integer(header.get("ndims"), "NDims", name, low=1, high=16)
    sizes = _numbers(header.get("dimsize"), ndims, "DimSize", name)
    if any(size != int(size) or size < 1 for size in sizes):
        raise VolumeIOError(
            name, f"header DimSize = {header.get('dimsize')}; every axis needs whole voxels >= 1"
        )
    spacing = header.get("elementspacing") or header.get("elementsize")
    if spacing is not None:
        for axis, value in enumerate(_numbers(spacing, ndims, "ElementSpacing", name)):
            _check_voxel_size(value, f"ElementSpacing[{axis}]", name)
    origins = [header.get(key) for key in ("offset", "origin", "position") if header.get(key) is not None]
    if len(origins) > 1 and len({" ".join(o.split()) for o in origins}) > 1:
        raise VolumeIOError(name, "header gives two different origins (Offset/Origin/Position)")
    if origins:
        _numbers(origins[0], ndims, "Offset", name)
    matrices = [
        header.get(k) for k in ("transformmatrix", "rotation", "orientation") if header.get(k) is not None
    ]
    if len(matrices) > 1 and len({" ".join(m.split()) for m in matrices}) > 1:
        raise VolumeIOError(name, "header gives two different direction matrices")
    if matrices:
        values = _numbers(matrices[0], ndims * ndims, "TransformMatrix", name)
        columns = np.asarray(values, dtype=float).reshape(ndims, ndims).T
        if _not_orthogonal(columns) or abs(abs(np.linalg.det(columns)) - 1) > ORTHOGONAL_TOLERANCE:
            raise VolumeIOError(
                name,
                f"header TransformMatrix = {matrices[0]} is not a rotation (its axes are not perpendicular "
                "unit vectors); the reader would keep a distorted geometry",
            )
    element = (header.get("elementtype") or "").upper()
    if element not in _MET_TYPES:
        raise VolumeIOError(
            name, f"header ElementType = {header.get('elementtype')!r} is not a MetaImage type"
        )
    _integer(header.get("elementnumberofchannels") or "1", "ElementNumberOfChannels", name, low=1, high=64)
    compressed = _boolean(header.get("compresseddata") or "False", "CompressedData", name)
    header_size = _integer(header.get("headersize") or "0", "HeaderSize", name, low=-1, high=1 << 62)
    # ITK inflates only the CompressedDataSize bytes it is told of: a smaller number gave a volume
    # of garbage from that point on, different at each read (memory never written)
    declared = header.get("compresseddatasize")
    compressed_bytes = (
        _integer(declared, "CompressedDataSize", name, low=1, high=1 << 62)
        if compressed and declared is not None
        else None
    )
    attached = files[0] if len(files) == 1 else None
    if attached is not None and header.get("elementdatafile", "").upper() == "LOCAL":
        offset = header.data_offset
    else:
        offset = None if header_size == -1 else header_size
    return DataLayout(files, offset, "gzip" if compressed else "raw", compressed_bytes=compressed_bytes)


# ------------------------------------------------------------------------------------------ NRRD
_NRRD_TYPES = {
    "signed char": 1, "int8": 1, "int8_t": 1, "uchar": 1, "unsigned char": 1, "uint8": 1, "uint8_t": 1,
    "short": 2, "short int": 2, "signed short": 2, "signed short int": 2, "int16": 2, "int16_t": 2,
    "ushort": 2, "unsigned short": 2, "unsigned short int": 2, "uint16": 2, "uint16_t": 2,
    "int": 4, "signed int": 4, "int32": 4, "int32_t": 4, "uint": 4, "unsigned int": 4, "uint32": 4,
    "uint32_t": 4, "longlong": 8, "long long": 8, "long long int": 8, "signed long long": 8,
    "signed long long int": 8, "int64": 8, "int64_t": 8, "ulonglong": 8, "unsigned long long": 8,
    "unsigned long long int": 8, "uint64": 8, "uint64_t": 8, "float": 4, "double": 8,
}  # fmt: skip
_NRRD_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "other", "bz2": "other"}
_NRRD_TEXT_ENCODINGS = {"ascii", "text", "txt", "hex"}
_NRRD_SPACES = {
    # patient spaces only: "scanner-xyz" and "3D-right-handed" say nothing of where the patient is
    "left-posterior-superior", "lps", "right-anterior-superior", "ras", "left-anterior-superior", "las",
}  # fmt: skip


def _check_nrrd(header: TextHeader, files: tuple[Path, ...], name: str) -> DataLayout:
    repeated = sorted(set(header.duplicates) - {"content"})
    if repeated:
        raise VolumeIOError(name, f"header gives '{repeated[0]}' twice; which one counts is ambiguous")
    dimension = _integer(header.get("dimension"), "dimension", name, low=1, high=16)
    sizes = _numbers(header.get("sizes"), dimension, "sizes", name)
    if any(size != int(size) or size < 1 for size in sizes):
        raise VolumeIOError(name, f"header sizes = {header.get('sizes')}; every axis needs whole voxels >= 1")
    kind = (header.get("type") or "").lower()
    if kind not in _NRRD_TYPES:
        raise VolumeIOError(name, f"header type = {header.get('type')!r} is not a NRRD voxel type")
    space = header.get("space")
    if space is not None and space.lower() not in _NRRD_SPACES:
        raise VolumeIOError(name, f"header space = {space!r} is not a 3D space this reader places correctly")
    # Voxel sizes at most ('spacings', 'axis mins/maxs'): orientation unknown. A 'space dimension'
    # without a name is what ITK writes for 4D and more, in its own (LPS) world: read as ITK does.
    if space is None and header.get("spacedimension") is None:
        raise VolumeIOError(
            name,
            "header names no space (such as left-posterior-superior), so which side is the patient's "
            "left cannot be told (as with space = scanner-xyz)",
        )
    directions = header.get("spacedirections")
    spacings = header.get("spacings")
    if directions is None and spacings is None:
        # ITK then takes 1 mm, even where 'axis mins/maxs' imply another size: volumes in mL go wrong
        raise VolumeIOError(name, "header gives no voxel size ('space directions' or 'spacings')")
    if directions is not None and spacings is not None:
        raise VolumeIOError(name, "header gives both 'space directions' and 'spacings'; they may disagree")
    if spacings is not None and space is not None:
        # the format places a 'space' image by its directions only (the reader fails on it)
        raise VolumeIOError(
            name, "header gives 'spacings' with a 'space'; such a file needs 'space directions'"
        )
    if directions is not None:
        _check_space_directions(directions, dimension, name)
    elif spacings is not None:
        for axis, value in enumerate(_numbers(spacings, dimension, "spacings", name, allow_nan=True)):
            if axis < 3:
                _check_voxel_size(value, f"spacings[{axis}]", name)
    _check_space_units(header.get("spaceunits"), name)
    origin = header.get("spaceorigin")
    if origin is not None:
        values = _vector(origin, "space origin", name)
        if not all(math.isfinite(v) for v in values):
            raise VolumeIOError(name, f"header space origin = {origin} is not finite")
    encoding_name = (header.get("encoding") or "").lower()
    if encoding_name not in _NRRD_ENCODINGS and encoding_name not in _NRRD_TEXT_ENCODINGS:
        raise VolumeIOError(name, f"header encoding = {header.get('encoding')!r} is not a NRRD encoding")
    byte_skip = _integer(header.get("byteskip") or "0", "byte skip", name, low=-1, high=1 << 62)
    _integer(header.get("lineskip") or "0", "line skip", name, low=0, high=1 << 30)
    if encoding_name in ("bzip2", "bz2"):  # the reader is built without it ("truncated or corrupt")
        raise VolumeIOError(
            name, "header encoding = bzip2 is not read here; save it with raw or gzip encoding"
        )
    encoding = _NRRD_ENCODINGS.get(encoding_name, "other")
    if byte_skip == -1 and encoding_name != "raw":
        raise VolumeIOError(name, "header byte skip = -1 (data at the end) is only defined for raw encoding")
    detached = header.get("datafile") is not None
    start = 0 if detached else header.data_offset
    if encoding == "gzip":  # the skip is counted in the inflated data (the NRRD format)
        return DataLayout(files, start, encoding, skip_inflated=byte_skip)
    offset = None if byte_skip == -1 else start + byte_skip
    return DataLayout(files, offset, encoding)


MILLIMETRES = {"mm", "millimeter", "millimeters", "millimetre", "millimetres"}


def _check_space_units(text: str | None, name: str) -> None:
    """ITK reads a NRRD's directions and origin as millimetres whatever its 'space units' say: a
    file in metres was read 1000 times too small. Units other than mm are refused."""
    if text is None:
        return
    units = re.findall(r'"([^"]*)"', text) or text.split()
    other = [unit for unit in units if unit.strip().lower() not in MILLIMETRES | {""}]
    if other:
        raise VolumeIOError(
            name, f"header space units = {text.strip()}; only millimetres are read right (save it in mm)"
        )


def _check_space_directions(text: str, dimension: int, name: str) -> None:
    entries = _split_vectors(text)
    if len(entries) != dimension:
        raise VolumeIOError(
            name, f"header space directions = {text}: {len(entries)} entries for {dimension} axes"
        )
    vectors = []
    for entry in entries:
        if entry.lower() == "none":
            continue
        vector = _vector(entry, "space directions", name)
        if not all(math.isfinite(v) for v in vector) or not any(vector):
            raise VolumeIOError(name, f"header space direction {entry} is not a finite, non-zero vector")
        vectors.append(vector)
    if not vectors:
        return
    if len({len(v) for v in vectors}) != 1:
        raise VolumeIOError(name, f"header space directions = {text} mix vector lengths")
    # 'none' is for a non-spatial axis (time, channels); on one of the image's spatial axes ITK took
    # 1 mm and a made-up direction there
    if len(vectors) < min(dimension, len(vectors[0])):
        raise VolumeIOError(
            name,
            f"header space directions = {text} give no direction (so no voxel size) for one of the "
            "image's spatial axes",
        )
    matrix = np.asarray(vectors, dtype=float).T
    if _not_orthogonal(matrix / np.linalg.norm(matrix, axis=0)):
        raise VolumeIOError(
            name,
            f"header space directions = {text} are not perpendicular; the reader would keep a distorted "
            "geometry",
        )


def _split_vectors(text: str) -> list[str]:
    entries, depth, current = [], 0, ""
    for char in text.strip():
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char.isspace() and depth == 0:
            if current:
                entries.append(current)
            current = ""
            continue
        current += char
    if current:
        entries.append(current)
    return entries


def _vector(text: str, field: str, name: str) -> list[float]:
    inner = text.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        raise VolumeIOError(name, f"header {field} entry {text!r} is not a vector like (1,0,0)")
    try:
        return [float(part) for part in inner[1:-1].split(",")]
    except ValueError:
        raise VolumeIOError(name, f"header {field} entry {text!r} is not a vector of numbers") from None


# --------------------------------------------------------------------------------------- helpers
def _numbers(text: str | None, count: int, field: str, name: str, allow_nan: bool = False) -> list[float]:
    if text is None:
        raise VolumeIOError(name, f"header has no {field}")
    try:
        values = [float(part) for part in text.split()]
    except ValueError:
        raise VolumeIOError(name, f"header {field} = {text!r} is not a list of numbers") from None
    if len(values) != count:
        raise VolumeIOError(name, f"header {field} = {text!r} has {len(values)} values for {count} axes")
    if not all(math.isfinite(v) or (allow_nan and math.isnan(v)) for v in values):
        raise VolumeIOError(name, f"header {field} = {text!r} holds a value that is not a finite number")
    return values


def _integer(text: str | None, field: str, name: str, low: int, high: int) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        raise VolumeIOError(name, f"header {field} = {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise VolumeIOError(name, f"header {field} = {value} is out of range ({low} to {high})")
    return value


def _boolean(text: str, field: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise VolumeIOError(name, f"header {field} = {text!r} is neither True nor False")
    return lowered == "true"
