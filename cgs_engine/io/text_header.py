"""The text headers of MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) files, and their data files.

Both formats may keep the voxels in other files the header names (``ElementDataFile``,
``data file:``), as one name, a printf-style pattern or a list. Those names come from the file,
not from the user, so every one is resolved here and must lie in the header's own folder and be
a regular file: a header naming ``/etc/passwd``, ``../../x``, ``/dev/urandom`` or a named pipe is
refused before the image library opens anything (it would read that file's bytes as voxels, or
block forever on the pipe).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VolumeIOError

HEADER_LIMIT = 1 << 20  # a text header larger than this is not one
_NRRD_MAGIC = re.compile(rb"^NRRD000\d\s*$")
_PATTERN = re.compile(r"%[0-9]*d")
MAX_DATA_FILES = 100_000


@dataclass
class TextHeader:
    """Fields (keys in lower case, spaces removed) and where the attached data begins."""

    format: str  # "metaimage" or "nrrd"
    fields: dict[str, str]
    data_offset: int  # bytes from the start of the header file to the attached data
    list_names: list[str] = field(default_factory=list)  # file names after a LIST data-file field
    duplicates: list[str] = field(default_factory=list)

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)


def text_header_format(location: Path) -> str | None:
    name = location.name.lower()
    if name.endswith((".mha", ".mhd")):
        return "metaimage"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return None


def read_text_header(location: Path, name: str) -> TextHeader:
    kind = text_header_format(location)
    with open(location, "rb") as stream:
        head = stream.read(HEADER_LIMIT)
    if kind == "metaimage":
        return _metaimage(head, name)
    return _nrrd(head, name)


def _text(raw: bytes) -> str:
    """A header line: UTF-8 as ITK writes the data file's name (``ü.raw`` read as latin-1 was
    ``Ã¼.raw``, a file that does not exist), latin-1 for an older header that is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _key(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _metaimage(head: bytes, name: str) -> TextHeader:
    fields: dict[str, str] = {}
    duplicates: list[str] = []
    offset = 0
    lines = head.split(b"\n")
    for index, raw in enumerate(lines):
        line_end = offset + len(raw) + 1
        text = _text(raw).strip()
        offset = line_end
        if not text:
            continue
        key, equals, value = text.partition("=")
        if not equals:
            raise VolumeIOError(name, f"not a MetaImage header (line {index + 1} has no 'key = value')")
        key = _key(key)
        if key in fields:
            duplicates.append(key)
        fields[key] = value.strip()
        if key == "elementdatafile":
            names = [_text(line).strip() for line in lines[index + 1 :]]
            is_list = value.strip().upper().startswith("LIST")
            return TextHeader(
                "metaimage", fields, min(line_end, len(head)), names if is_list else [], duplicates
            )
        if line_end > len(head):
            break
    raise VolumeIOError(name, "not a MetaImage header (no ElementDataFile line)")


def _nrrd(head: bytes, name: str) -> TextHeader:
    lines = head.split(b"\n")
    if not lines or not _NRRD_MAGIC.match(lines[0].rstrip(b"\r")):
        raise VolumeIOError(name, "not a NRRD file (its first line is not NRRD000N)")
    fields: dict[str, str] = {}
    duplicates: list[str] = []
    offset = len(lines[0]) + 1
    for index in range(1, len(lines)):
        raw = lines[index]
        offset += len(raw) + 1
        text = _text(raw).rstrip("\r")
        if not text.strip():
            return TextHeader("nrrd", fields, min(offset, len(head)), [], duplicates)
        if text.startswith("#") or ":=" in text:
            continue  # comments and key/value pairs do not describe the data
        key, colon, value = text.partition(":")
        if not colon:
            raise VolumeIOError(name, f"not a NRRD header (line {index + 1} has no 'field: value')")
        key = _key(key)
        if key in fields:
            duplicates.append(key)
        fields[key] = value.strip()
        if key in ("datafile", "data file") and value.strip().upper().startswith("LIST"):
            names = [_text(line).strip() for line in lines[index + 1 :]]
            return TextHeader("nrrd", fields, len(head), [n for n in names if n], duplicates)
    if len(head) >= HEADER_LIMIT:
        raise VolumeIOError(name, "not a NRRD header (no blank line within its first megabyte)")
    return TextHeader("nrrd", fields, len(head), [], duplicates)  # a detached header may end without one


def data_file_names(header: TextHeader, name: str) -> list[str] | None:
    """The data file names a header refers to; None when the data follows the header itself."""
    key = "elementdatafile" if header.format == "metaimage" else "datafile"
    value = header.get(key)
    if value is None:
        if header.format == "metaimage":
            raise VolumeIOError(name, "MetaImage header names no ElementDataFile")
        return None
    if header.format == "metaimage" and value.upper() == "LOCAL":
        return None
    if value.upper().startswith("LIST"):
        names = [n for n in header.list_names if n]
        if not names:
            raise VolumeIOError(name, "header lists no data files after LIST")
        return names
    parts = value.split()
    if _PATTERN.search(parts[0]) and len(parts) >= 4:
        return _pattern_names(parts, name)
    return [value]


def _pattern_names(parts: list[str], name: str) -> list[str]:
    try:
        first, last, step = (int(p) for p in parts[1:4])
    except ValueError:
        raise VolumeIOError(
            name, f"data file pattern {' '.join(parts)!r} has no whole-number range"
        ) from None
    if step == 0 or (last - first) * step < 0:
        raise VolumeIOError(name, f"data file pattern {' '.join(parts)!r} has an empty or endless range")
    count = (last - first) // step + 1
    if count > MAX_DATA_FILES:
        raise VolumeIOError(name, f"data file pattern names {count:,} files (at most {MAX_DATA_FILES:,})")
    try:
        return [parts[0] % number for number in range(first, last + (1 if step > 0 else -1), step)]
    except (TypeError, ValueError):
        raise VolumeIOError(name, f"data file pattern {parts[0]!r} is not a file name pattern") from None


def resolve_data_files(location: Path, header: TextHeader, name: str) -> list[Path]:
    """The header's data files (the header itself for attached data), each checked to lie in the
    header's folder and to be a regular file."""
    names = data_file_names(header, name)
    if names is None:
        return [location]
    folder = Path(os.path.realpath(location.parent))
    return [_contained_regular_file(folder, location.parent, entry, name) for entry in names]


def _contained_regular_file(folder: Path, given_folder: Path, entry: str, name: str) -> Path:
    if not entry or "\x00" in entry:
        raise VolumeIOError(name, "header names an empty data file")
    if os.path.isabs(entry):
        raise VolumeIOError(
            name, f"header names data file {entry!r} by an absolute path; it must lie beside the header"
        )
    resolved = Path(os.path.realpath(folder / entry))
    if resolved.parent != folder and folder not in resolved.parents:
        raise VolumeIOError(
            name, f"header names data file {entry!r}, which lies outside the header's folder; refused"
        )
    try:
        mode = os.stat(resolved).st_mode
    except OSError:
        raise VolumeIOError(name, f"its data file {entry!r} does not exist beside the header") from None
    if not stat.S_ISREG(mode):
        raise VolumeIOError(name, f"its data file {entry!r} is not a regular file ({describe_mode(mode)})")
    return given_folder / entry


def describe_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"
