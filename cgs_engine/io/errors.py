"""The one error type of volume I/O, and turning SimpleITK's multi-line errors into one line."""

from __future__ import annotations

import os
import re

from ..errors import CGSError, display_path

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")
# "Exception thrown in SimpleITK ImageFileReader_Execute: /path/sitkImageReaderBase.cxx:99:"
_SOURCE_LOCATION = re.compile(r"^(?:Exception thrown in SimpleITK \S+: )?\S+\.(?:cxx|cpp|hxx|h):\d+:$")
_ERROR_PREFIX = re.compile(r"^(?:sitk::ERROR|ITK ERROR|\[nrrd\])[:\s]*")
_OBJECT_ADDRESS = re.compile(r"\w+ ?\(0x[0-9a-fA-F]+\):\s*")
_NRRD_FUNCTION = re.compile(r"^_?nrrd\w*:\s*")


class VolumeIOError(CGSError):
    """A volume could not be read or written.

    ``str(error)`` is one line, ``"<file>: <problem>"``, ready to show to a user as it is.
    Construct it as ``VolumeIOError(path, problem)``, or ``VolumeIOError(message)``.
    """

    def __init__(self, path: str | os.PathLike, problem: str | None = None) -> None:
        if problem is None:
            self.path, self.problem = None, str(path)
            message = self.problem
        else:
            self.path, self.problem = os.fspath(path), problem
            message = f"{display_path(self.path)}: {problem}"
        super().__init__(one_line(message))


def require_utf8_path(path: str | os.PathLike, name: str | None = None) -> str:
    """``path`` as a str that ITK can take; a one-line error for names with non-UTF-8 bytes."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise VolumeIOError(
            name if name is not None else text,
            "the path holds bytes that are not UTF-8 text, which the image library cannot open; "
            "rename the file or folder",
        ) from None
    return text


def one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text).strip()


def itk_reason(error: Exception) -> str:
    """The informative line of a SimpleITK exception, without source locations and addresses.

    Usually the ``ERROR`` line (later lines may be a printed matrix); for NRRD the library's
    own last line, which is the most specific.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    informative = [line for line in lines if not _SOURCE_LOCATION.match(line)]
    nrrd_lines = [line for line in informative if line.startswith("[nrrd]")]
    error_lines = [line for line in informative if _ERROR_PREFIX.match(line)]
    chosen = (nrrd_lines[-1:] or error_lines[:1] or informative[-1:] or [""])[0]
    reason = _NRRD_FUNCTION.sub("", _OBJECT_ADDRESS.sub("", _ERROR_PREFIX.sub("", chosen))).strip()
    return reason or "unknown SimpleITK error"


def describe_read_failure(error: Exception) -> str:
    """The problem to report for a file that exists, is not empty, and SimpleITK failed to read."""
    text = str(error)
    if "Unable to determine ImageIO reader" in text:
        return "not a readable image (no image reader recognises its contents)"
    if "fread got only" in text or "but received" in text:
        return "file is truncated or corrupt (the image data ends early)"
    if "MetaImageIO" in text:
        # MetaImage reports a short or missing data file as "No such file or directory" on the header.
        return "file is truncated or corrupt (the MetaImage header or its data file could not be read)"
    return f"file is truncated or corrupt ({itk_reason(error)})"
