"""Reading a whole DICOM object (an RTSTRUCT or a SEG) that is complete and parses, or a one-line error.

pydicom reads a truncated file without complaint: the last element simply holds fewer bytes than
its header declares (a structure set cut short loses its last contours), and values are parsed
only when first used, so a damaged sequence or number fails somewhere deep in the import. Here
the declared lengths are compared with what was read, every value is parsed once, and any
failure names the file and the element.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.errors import InvalidDicomError

from cgs_engine.io.errors import one_line

from .errors import DicomError

UNDEFINED_LENGTH = 0xFFFFFFFF
# pydicom warns (rather than fails) when a sequence of undefined length meets the end of the file.
TRUNCATION_WARNINGS = ("End of file reached", "Expected delimiter", "EOF")


def read_dicom_object(path: str | os.PathLike) -> Any:
    """The pydicom Dataset of the file at ``path``, every value parsed; :class:`DicomError` if the
    file is missing, not DICOM, truncated or damaged."""
    name = os.fspath(path)
    if not Path(name).is_file():
        raise DicomError(name, "no such file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = pydicom.dcmread(name)
        except InvalidDicomError:
            dataset = _without_preamble(name)
        except Exception as error:  # noqa: BLE001 - whatever pydicom trips over in a damaged file
            raise DicomError(name, f"not a readable DICOM file ({_short(error)})") from None
        _check_complete(dataset, name, caught)
        _parse_every_value(dataset, name)
    return dataset


def _without_preamble(name: str) -> Any:
    """A DICOM object written without the 128-byte preamble and 'DICM' (older planning systems
    do; the series reader takes such slices), or a one-line refusal without pydicom's advice to
    pass force=True, an argument no user of the CLI has."""
    try:
        dataset = pydicom.dcmread(name, force=True)
        if "SOPClassUID" in dataset:
            return dataset
    except Exception:  # noqa: BLE001 - forced reading of something else fails in any way
        pass
    raise DicomError(name, "not a DICOM file (no DICM header, and it does not read as a DICOM object)")


def _check_complete(dataset: Any, name: str, caught: list) -> None:
    for tag, element in dataset._dict.items():  # raw (unparsed) top-level elements keep their lengths
        if not isinstance(element, RawDataElement) or element.value is None:
            continue
        if element.length != UNDEFINED_LENGTH and len(element.value) < element.length:
            missing = element.length - len(element.value)
            raise DicomError(name, f"file is truncated ({_keyword(tag)} ends {missing} bytes early)")
    if any(word in str(warning.message) for warning in caught for word in TRUNCATION_WARNINGS):
        raise DicomError(name, "file is truncated (a sequence ends before its delimiter)")


def _parse_every_value(dataset: Any, name: str, where: str = "") -> None:
    for tag in list(dataset.keys()):
        label = f"{where}{_keyword(tag)}"
        try:
            element = dataset[tag]
        except Exception as error:  # noqa: BLE001 - a value pydicom cannot parse: the file is damaged
            raise DicomError(name, f"damaged DICOM file: {label} cannot be read ({_short(error)})") from None
        if element.VR == "UN" and isinstance(element.value, bytes):
            element = _as_dictionary_vr(dataset, element, name, label)
        if element.VR == "SQ":
            for index, item in enumerate(element.value):
                _parse_every_value(item, name, f"{label}[{index}].")


def _as_dictionary_vr(dataset: Any, element: Any, name: str, label: str) -> Any:
    """A standard element stored as UN (a value over 64 KiB in Explicit VR, such as a long
    ContourData, must be; pydicom re-reads that only at the top level) parsed with its real VR:
    inside a sequence its bytes were taken for numbers, the ASCII codes of the text."""
    try:
        known = dictionary_VR(element.tag)
    except KeyError:  # private or unknown: nothing to parse it as
        return element
    if known in ("UN", "SQ") or " " in known:  # "US or SS": ambiguous without context
        return element
    raw = RawDataElement(element.tag, known, len(element.value), element.value, 0, True, True)
    try:
        dataset[element.tag] = convert_raw_data_element(raw)
    except Exception as error:  # noqa: BLE001 - whatever the bytes hold, the file is damaged
        raise DicomError(name, f"damaged DICOM file: {label} cannot be read ({_short(error)})") from None
    return dataset[element.tag]


def _keyword(tag: Any) -> str:
    return keyword_for_tag(tag) or str(tag)


def _short(error: Exception) -> str:
    return one_line(str(error))[:160] or type(error).__name__
