"""Refuse files whose header claims far more voxels than the file can hold, before ITK allocates them.

ITK allocates the whole image its header describes before it reads a byte of voxel data, so a
1 KB NRRD that claims 2000 x 2000 x 1000 floats makes it take 16 GB and then fail. The header
alone (``ReadImageInformation``) tells the claimed size; the data it would fill is on disk.
Raw data must fit in the file; gzip/zlib data cannot expand by more than about 1032 times.
Whatever the encoding, an image that would not fit in this machine's memory is refused too.

NIfTI data is measured exactly by ``integrity`` with the header's stored voxel type: ITK reports
the type it will hand back, which for a scaled int16 file is float32, twice the bytes on disk.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import SimpleITK as sitk

from ..native_output import captured_native_stderr
from .errors import VolumeIOError, describe_read_failure
from .formats import itk_image_io
from .header_rules import DataLayout
from .nifti_twin import itk_readable

GZIP_MAX_RATIO = 1100  # deflate's limit is 1032:1; a little slack for headers
_BITS = re.compile(r"(\d+)-bit")


def check_claimed_size(location: Path, name: str, layout: DataLayout) -> int:
    """The voxel bytes the header claims (ITK's output type), once they are plausible."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO(itk_image_io(location))
    try:
        with captured_native_stderr(), itk_readable(location) as readable:
            reader.SetFileName(str(readable))
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
    if layout.encoding not in ("raw", "gzip"):
        return claimed  # NIfTI: measured exactly by integrity; other encodings: ITK checks them
    on_disk = sum(path.stat().st_size for path in layout.files) - (layout.offset or 0)
    limit = on_disk if layout.encoding == "raw" else on_disk * GZIP_MAX_RATIO + 4096
    if claimed > limit:
        raise VolumeIOError(
            name,
            f"file is truncated or corrupt (its header claims {sizes} voxels, {claimed:,} bytes, "
            f"but the data holds only {max(on_disk, 0):,} bytes)",
        )
    return claimed


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
