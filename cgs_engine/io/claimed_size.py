"""Refuse files whose header claims far more voxels than the file can hold, before ITK allocates them.

ITK allocates the whole image its header describes before it reads a byte of voxel data, so a
1 KB NRRD that claims 2000 x 2000 x 1000 floats makes it take 16 GB and then fail. The header
alone (``ReadImageInformation``) tells the claimed size; the data it would fill is on disk.
Raw data must fit in the file; gzip/zlib data cannot expand by more than about 1032 times.
Whatever the encoding, an image that would not fit in this machine's memory is refused too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import SimpleITK as sitk

from .errors import VolumeIOError, describe_read_failure

GZIP_MAX_RATIO = 1100  # deflate's limit is 1032:1; a little slack for headers
_BITS = re.compile(r"(\d+)-bit")
_HEADER_BYTES = 1 << 16


def check_claimed_size(location: Path, name: str) -> None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(location))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeIOError(name, describe_read_failure(error)) from error
    size = reader.GetSize()
    claimed = bytes_per_voxel(reader) * _product(size)
    sizes = " x ".join(str(n) for n in size)
    memory = physical_memory()
    if memory and 2 * claimed > memory:  # ITK's buffer plus the array handed to us
        raise VolumeIOError(
            name,
            f"header claims {sizes} voxels ({_gib(claimed)}), more than this machine's memory "
            f"({_gib(memory)}) can hold",
        )
    data_file, encoding = _data_file_and_encoding(location)
    if data_file is None or not data_file.is_file():
        return  # ITK reports a missing data file better
    on_disk = data_file.stat().st_size
    limit = on_disk if encoding == "raw" else on_disk * GZIP_MAX_RATIO + 4096 if encoding == "gzip" else None
    if limit is not None and claimed > limit:
        raise VolumeIOError(
            name,
            f"file is truncated or corrupt (its header claims {sizes} voxels, {claimed:,} bytes, "
            f"but the data holds only {on_disk:,} bytes)",
        )


def bytes_per_voxel(reader: sitk.ImageFileReader) -> int:
    description = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    match = _BITS.search(description)
    bits = int(match.group(1)) if match else 64
    complex_factor = 2 if "complex" in description else 1
    return max(1, bits // 8) * complex_factor * max(1, reader.GetNumberOfComponents())


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _product(size) -> int:
    total = 1
    for n in size:
        total *= int(n)
    return total


def _gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"


def _data_file_and_encoding(location: Path) -> tuple[Path | None, str | None]:
    """Where the voxel data lies and how it is encoded: "raw", "gzip" or None (unknown)."""
    name = location.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        with open(location, "rb") as stream:
            return location, "gzip" if stream.read(2) == b"\x1f\x8b" else "raw"
    if name.endswith((".nrrd", ".nhdr")):
        return _nrrd(location, _header_text(location, b"\n\n"))
    if name.endswith((".mha", ".mhd")):
        return _metaimage(location, _header_text(location, b"ElementDataFile"))
    return None, None


def _header_text(location: Path, ends_with: bytes) -> str:
    """The text header: up to the blank line (NRRD) or the end of the ``ElementDataFile`` line (MHA)."""
    with open(location, "rb") as stream:
        head = stream.read(_HEADER_BYTES)
    cut = head.find(ends_with)
    if cut >= 0:
        end = head.find(b"\n", cut + len(ends_with))
        head = head[: end if end >= 0 else len(head)]
    return head.decode("latin-1")


def _field(header: str, pattern: str) -> str | None:
    match = re.search(pattern, header, flags=re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else None


def _nrrd(location: Path, header: str) -> tuple[Path | None, str | None]:
    encoding = (_field(header, r"^encoding:\s*(.+)$") or "raw").lower()
    kind = "raw" if encoding == "raw" else "gzip" if encoding in ("gzip", "gz") else None
    detached = _field(header, r"^data ?file:\s*(.+)$")
    if detached is None:
        return location, kind
    if " " in detached or detached.upper().startswith("LIST"):
        return None, None  # several data files: ITK checks them
    return location.parent / detached, kind


def _metaimage(location: Path, header: str) -> tuple[Path | None, str | None]:
    compressed = (_field(header, r"^CompressedData\s*=\s*(\S+)") or "false").lower() == "true"
    kind = "gzip" if compressed else "raw"
    data = _field(header, r"^ElementDataFile\s*=\s*(.+)$")
    if data is None or data.upper() == "LOCAL":
        return location, kind
    if data.upper() == "LIST" or "%" in data:
        return None, None
    return location.parent / data, kind
