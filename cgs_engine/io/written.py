"""Reading back a volume file just written, before it replaces anything.

ITK's writers do not report a short write: on a full disk a ``.nii.gz`` comes out at 0 bytes or
cut short while ``WriteImage`` returns normally (niftilib only prints "wrote only N of M bytes").
So every written file is checked the way a reader would see it: the header reads back with the
size, spacing, origin, direction and voxel type that were written, our own header rules accept
it, and the voxel data is all there (for compressed data: the stream inflates, its checksum
holds, and it holds exactly the voxel bytes).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..native_output import captured_native_stderr
from .errors import VolumeIOError, itk_reason
from .formats import itk_image_io
from .header_rules import DataLayout, check_image_header
from .nifti_twin import itk_readable

_CHUNK = 1 << 20
_MAX_OUT = 1 << 24


def written_volume_problem(path: Path, image: sitk.Image) -> str | None:
    """None when ``path`` holds ``image`` as written, else what is wrong with it (a few words)."""
    try:
        with captured_native_stderr(), itk_readable(path) as readable:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(readable))
            reader.SetImageIO(itk_image_io(path))
            reader.ReadImageInformation()
    except RuntimeError as error:
        return f"it does not read back: {itk_reason(error)}"
    mismatch = _header_mismatch(reader, image)
    if mismatch:
        return mismatch
    try:
        layout = check_image_header(path, str(path))
    except VolumeIOError as error:
        return f"its header does not read back ({error.problem})"
    expected = _voxel_bytes(image)
    try:
        present = stored_data_bytes(layout, expected)
    except (OSError, EOFError, zlib.error) as error:
        return f"its voxel data does not read back ({' '.join(str(error).split())[:120]})"
    if present < expected:
        return f"holds {present:,} of its {expected:,} voxel bytes"
    return None


def _header_mismatch(reader: sitk.ImageFileReader, image: sitk.Image) -> str | None:
    if tuple(reader.GetSize()) != tuple(image.GetSize()):
        return f"its header reads back size {reader.GetSize()} instead of {image.GetSize()}"
    if reader.GetPixelID() != image.GetPixelID():
        return "its header reads back another voxel type"
    # NIfTI stores spacing and origin as float32
    if not np.allclose(reader.GetSpacing(), image.GetSpacing(), rtol=1e-5, atol=0):
        return f"its header reads back spacing {reader.GetSpacing()} instead of {image.GetSpacing()}"
    if not np.allclose(reader.GetOrigin(), image.GetOrigin(), rtol=1e-5, atol=1e-3):
        return f"its header reads back origin {reader.GetOrigin()} instead of {image.GetOrigin()}"
    if not np.allclose(reader.GetDirection(), image.GetDirection(), rtol=0, atol=1e-5):
        matrix = np.asarray(image.GetDirection(), float).reshape(3, 3)
        skew = float(np.abs(matrix.T @ matrix - np.eye(3)).max())
        if skew > 1e-6:
            # (a scan whose axes are a little off perpendicular reads; NIfTI stores only a rotation,
            # and "reads back another direction" sounded like a failing disk)
            return (
                f"its grid's axes are off perpendicular by {skew:.1g}, which a NIfTI header cannot "
                "store; write .mha or .nrrd, which keep the direction as it is"
            )
        return "its header reads back another direction"
    return None


def _voxel_bytes(image: sitk.Image) -> int:
    voxels = int(np.prod(image.GetSize(), dtype=np.int64))
    return voxels * image.GetSizeOfPixelComponent() * image.GetNumberOfComponentsPerPixel()


def stored_data_bytes(layout: DataLayout, expected: int, limit: int | None = None) -> int:
    """How many voxel bytes the file's data holds; compressed data is inflated to its end (or to
    its first ``limit`` compressed bytes), so a stream cut short or with a wrong checksum raises
    ``EOFError``/``zlib.error``."""
    offset = layout.offset or 0
    if layout.encoding in ("raw", "nifti-raw"):
        return sum(path.stat().st_size for path in layout.files) - offset
    if layout.encoding == "nifti-gzip":
        return inflated_length(layout.files[0], 0) - offset
    if layout.encoding == "gzip":
        return inflated_length(layout.files[0], offset, limit) - layout.skip_inflated
    return expected  # encodings ITK does not write (bzip2, text): nothing to compare


def inflated_length(path: Path, start: int, limit: int | None = None) -> int:
    """Bytes the gzip or zlib stream starting at ``start`` of ``path`` inflates to (gzip members
    written one after another count together); with ``limit``, only that many compressed bytes
    are read."""
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, detected
    total = 0
    left = limit
    with open(path, "rb") as stream:
        stream.seek(start)
        pending = b""
        while True:
            chunk = pending or stream.read(_CHUNK if left is None else min(_CHUNK, left))
            if left is not None and not pending:
                left -= len(chunk)
            pending = b""
            if not chunk:
                if inflater.eof:
                    return total
                raise EOFError("the compressed data ends early")
            total += len(inflater.decompress(chunk, _MAX_OUT))
            while inflater.unconsumed_tail and not inflater.eof:
                total += len(inflater.decompress(inflater.unconsumed_tail, _MAX_OUT))
            if inflater.eof:
                if limit is not None:
                    return total  # one stream of a declared length (MetaImage)
                rest = inflater.unused_data + stream.read(_CHUNK)
                if not rest.startswith(b"\x1f\x8b"):
                    return total  # the stream is complete; what follows is not another member
                inflater, pending = zlib.decompressobj(32 + zlib.MAX_WBITS), rest
