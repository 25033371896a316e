"""Autosaved review sessions: the edited labels, the review mask and the queue, in one HDF5 file.

The file sits next to the image (:func:`session_path_for`) and is replaced atomically: it is
written to a temporary file in the same folder, flushed to disk, then renamed over the old one,
so a crash or a full disk leaves either the previous session or the new one, never half of one.

Layout: datasets ``labels`` (uint8/uint16), ``review_mask`` (uint8) and optionally
``component_map`` (smallest unsigned type), gzip level 1, one chunk per z slice; attributes
``format``, ``format_version``, ``fingerprint``, ``saved`` (UTC ISO time) and JSON strings
``geometry``, ``class_names`` and ``review_state``; optionally ``class_colors`` (JSON) and
``prediction_id`` (which saved prediction's maps belong to these labels, see ``prediction_file``)
and ``write_id`` (new for every write).

Two writers of one file (the same image open in two napari windows) would each replace the
other's work without a word, the last one winning. A writer that passes ``replaces`` (the
``write_id`` of the file as it last read or wrote it) gets :class:`SessionConflictError` instead
when someone else wrote the file meanwhile, and can save elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from cgs_engine.errors import CGSError
from cgs_engine.h5_durable import foreign_link, write_h5_atomically
from cgs_engine.io.formats import extension_of
from cgs_engine.locks import Busy, exclusive
from cgs_engine.review.state import EDITED, ReviewState
from cgs_engine.volume import Geometry

FORMAT_NAME = "napari-cgs-review-session"
FORMAT_VERSION = 1
SESSION_SUFFIX = ".cgs-session.h5"
FINGERPRINT_SAMPLES = 1 << 20  # voxels hashed, evenly strided over the whole volume
FINGERPRINT_EDGE_BYTES = 1 << 16  # hashed in full at both ends of the data


class SessionError(CGSError):
    """A review session cannot be saved or loaded; the message is one line naming the file."""


class SessionConflictError(SessionError):
    """The session file was written by someone else since the writer last read or wrote it."""


UNCHECKED = object()  # save_session(replaces=...) default: no check of who wrote the file last


@dataclass
class Session:
    path: Path
    labels: np.ndarray
    review_state: ReviewState
    geometry: Geometry
    class_names: list[str]
    fingerprint: str
    saved: str  # UTC ISO 8601
    component_map: np.ndarray | None = None  # int32 region ids, when one was saved
    class_colors: list[list[int]] | None = None  # RGB 0-255 per class id, when saved
    prediction_id: str = ""  # the saved prediction (maps) these labels came from, when saved
    write_id: str = ""  # this write of the file ("" for files written before it was recorded)


def session_path_for(image_path: str | os.PathLike) -> Path:
    """``<folder>/<stem>.cgs-session.h5`` for an image file; beside the folder for a DICOM folder."""
    path = Path(image_path)
    if path.name in ("", ".."):  # `.` or `..` (a DICOM folder opened from inside it): its real name
        path = Path(os.path.abspath(path))
    extension = None if path.is_dir() else extension_of(path)
    stem = path.name[: -len(extension)] if extension else path.name
    return path.with_name(stem + SESSION_SUFFIX)


def session_path_of_image(image_path: str | os.PathLike, fingerprint: str) -> tuple[Path, str]:
    """Where this image's session goes, and a one-line note when its usual name is taken.

    The usual name (:func:`session_path_for`) unless a session of other voxels holds it: another
    scan with the same name in the folder (``ct.nii.gz`` beside ``ct.nrrd``), the image changed
    on disk since, or a damaged file. That file is never overwritten (it is someone's review);
    this image's session goes to ``<stem>.<fingerprint 12>.cgs-session.h5`` instead, and the note
    says so."""
    usual = session_path_for(image_path)
    if not usual.exists():
        return usual, ""
    owner = session_fingerprint(usual)
    if owner == fingerprint:
        return usual, ""
    stem = usual.name[: -len(SESSION_SUFFIX)]
    own = usual.with_name(f"{stem}.{fingerprint[:12]}{SESSION_SUFFIX}")
    why = (
        "cannot be read"
        if owner is None
        else "belongs to other voxels (the image changed, or another scan has its name)"
    )
    return own, f"{usual.name} {why}; it is kept as it is, and this image's review is saved in {own.name}"


def session_fingerprint(path: str | os.PathLike) -> str | None:
    """The image fingerprint a session file was saved for; None when it cannot be read."""
    try:
        with h5py.File(path, "r") as file:
            return _text(file.attrs["fingerprint"])
    except (OSError, KeyError, ValueError, TypeError):
        return None


def image_fingerprint(array: np.ndarray, geometry: Geometry) -> str:
    """sha256 over shape, value type, geometry and a strided sample of the voxels (not every byte).

    Byte order does not matter. Geometry is compared at float32 precision, which is what NIfTI keeps.
    """
    digest = hashlib.sha256()
    header = {
        "shape": list(array.shape),
        "dtype": array.dtype.name,
        "geometry": {
            key: [repr(float(np.float32(v))) for v in values] for key, values in geometry.to_dict().items()
        },
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    flat = array.reshape(-1)
    # An odd stride never lines up with (even) row lengths, so the sample walks across every column.
    stride = max(1, flat.size // FINGERPRINT_SAMPLES) | 1
    little = array.dtype.newbyteorder("<")
    edge = max(1, FINGERPRINT_EDGE_BYTES // max(1, array.dtype.itemsize))
    for part in (flat[::stride], flat[:edge], flat[-edge:]):
        digest.update(np.ascontiguousarray(part, dtype=little).tobytes())
    return digest.hexdigest()


def save_session(
    path: str | os.PathLike,
    labels: np.ndarray,
    review_state: ReviewState,
    image_fingerprint: str,
    geometry: Geometry,
    class_names: list[str],
    component_map: np.ndarray | None = None,
    class_colors: list[list[int]] | None = None,
    prediction_id: str = "",
    write_id: str = "",
    replaces: str | None | object = UNCHECKED,
) -> Path:
    """Write the session atomically and return its path; the previous file survives any failure.

    ``write_id`` marks this write (a new random one by default). ``replaces``: the ``write_id`` the
    file must still have (None: it must not exist yet), else :class:`SessionConflictError` and
    nothing is written.
    """
    target = Path(path)
    with _checked_write(target, replaces):
        labels = _storable_labels(labels, target)
        if review_state.shape != labels.shape:
            raise SessionError(
                f"{target}: review mask shape {review_state.shape} differs from labels {labels.shape}"
            )
        if component_map is not None and component_map.shape != labels.shape:
            raise SessionError(
                f"{target}: component map shape {component_map.shape} differs from labels {labels.shape}"
            )
        if not target.parent.is_dir():
            raise SessionError(f"{target}: cannot save session, folder {target.parent} does not exist")
        try:
            write_h5_atomically(
                target,
                lambda file: _fill(
                    file,
                    labels,
                    review_state,
                    image_fingerprint,
                    geometry,
                    class_names,
                    component_map,
                    class_colors,
                    prediction_id,
                    write_id or uuid.uuid4().hex,
                ),
            )
        except OSError as error:
            raise SessionError(f"{target}: cannot save session ({_one_line(error)})") from error
        return target


SAVE_LOCK_WAIT_S = 60.0  # another window's save of a large scan takes seconds


@contextlib.contextmanager
def _checked_write(target: Path, replaces) -> Iterator[None]:
    """With ``replaces``: the file still has that write id (else :class:`SessionConflictError`),
    checked and written under one lock beside it. Two windows saving at once both passed the check
    (each then spent seconds writing) and the later file replaced the other's work in silence; not
    reentrant, so two windows of one process (threads) wait for each other too."""
    if replaces is UNCHECKED:
        yield
        return
    if not target.parent.is_dir():
        raise SessionError(f"{target}: cannot save session, folder {target.parent} does not exist")
    try:
        with exclusive(
            target.with_name(f".{target.name}.lock"), "", wait_s=SAVE_LOCK_WAIT_S, reentrant=False
        ):
            if session_write_id(target) != replaces:
                raise SessionConflictError(
                    f"{target}: saved by another window or program since this one read it; not overwritten"
                )
            yield
    except Busy:
        raise SessionConflictError(
            f"{target}: another window or program is saving it; not overwritten (try again)"
        ) from None
    except OSError as error:  # the lock file could not be made (a read-only folder)
        raise SessionError(f"{target}: cannot save session ({_one_line(error)})") from error


def load_session(path: str | os.PathLike, expected_fingerprint: str | None = None) -> Session:
    """Read a session; :class:`SessionError` if it is missing, corrupt, foreign or for another image."""
    source = Path(path)
    if not source.is_file():
        raise SessionError(f"{source}: no such session file")
    if not h5py.is_hdf5(source):
        raise SessionError(f"{source}: not a session file (not HDF5, or corrupt)")
    try:
        with h5py.File(source, "r") as file:
            _check_format(file, source)
            linked = foreign_link(file)
            if linked:
                raise SessionError(f"{source}: {linked}; a session file holds its own data")
            fingerprint = _text(file.attrs["fingerprint"])
            if expected_fingerprint is not None and fingerprint != expected_fingerprint:
                raise SessionError(f"{source}: session belongs to a different image (fingerprint mismatch)")
            labels = _storable_labels(file["labels"][()], source)  # refused here as on save
            mask = _review_mask_as_saved(file["review_mask"][()], source)
            component_map = _component_map_as_saved(file, source)
            state = ReviewState.from_dict(json.loads(_text(file.attrs["review_state"])), mask)
            names = json.loads(_text(file.attrs["class_names"]))
            if not isinstance(names, list):  # (a string "abc" became the organs 'a', 'b', 'c')
                raise SessionError(f"{source}: session file is corrupt (its class names are no list)")
            session = Session(
                path=source,
                labels=labels,
                review_state=state,
                geometry=Geometry.from_dict(json.loads(_text(file.attrs["geometry"]))),
                class_names=[str(name) for name in names],
                fingerprint=fingerprint,
                saved=_text(file.attrs.get("saved", "")),
                component_map=component_map,
                class_colors=_colours(file.attrs.get("class_colors")),
                prediction_id=_text(file.attrs.get("prediction_id", "")),
                write_id=_text(file.attrs.get("write_id", "")),
            )
    except SessionError:
        raise
    except KeyError as error:
        raise SessionError(f"{source}: session file is incomplete (missing {_one_line(error)})") from error
    except (OSError, ValueError, TypeError, AttributeError) as error:
        # (AttributeError: a review state of the wrong shape, e.g. "status": [1], crashed the panel
        # when the image was opened)
        raise SessionError(f"{source}: session file is corrupt ({_one_line(error)})") from error
    if labels.shape != state.shape or (component_map is not None and component_map.shape != labels.shape):
        raise SessionError(
            f"{source}: session file is corrupt (labels, mask and component map differ in shape)"
        )
    return session


def session_write_id(path: str | os.PathLike) -> str | None:
    """The ``write_id`` of the session file at ``path``: None when there is no file, "" for one
    written before ids were recorded, and a marker no writer holds for a file that cannot be read
    as a session (it is nobody's to overwrite)."""
    source = Path(path)
    if not source.exists():
        return None
    try:
        with h5py.File(source, "r") as file:
            return _text(file.attrs.get("write_id", ""))
    except (OSError, ValueError, TypeError):
        return "unreadable"


def _review_mask_as_saved(mask: np.ndarray, source: Path) -> np.ndarray:
    """The review mask as saved (0, ACCEPTED, EDITED); anything else is a damaged file: an int16
    257 was read as ACCEPTED and a float 0.9 as not reviewed, in silence."""
    if mask.dtype.kind not in "biu" or (mask.size and (int(mask.min()) < 0 or int(mask.max()) > EDITED)):
        raise SessionError(
            f"{source}: session file is corrupt (its review mask holds other values than 0, 1, 2)"
        )
    return mask.astype(np.uint8)


def _component_map_as_saved(file: h5py.File, source: Path) -> np.ndarray | None:
    if "component_map" not in file:
        return None
    components = file["component_map"][()]
    if components.dtype.kind not in "biu" or (components.size and int(components.min()) < 0):
        raise SessionError(f"{source}: session file is corrupt (its component map holds no region ids)")
    return components.astype(np.int32)


def _storable_labels(labels: np.ndarray, target: Path) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3 or 0 in labels.shape:
        raise SessionError(
            f"{target}: labels must be a non-empty 3D [z, y, x] array, got shape {labels.shape}"
        )
    if labels.dtype.kind not in "biu":
        raise SessionError(f"{target}: labels must hold integer ids, got {labels.dtype}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > np.iinfo(np.uint16).max:
        raise SessionError(f"{target}: label ids must be 0..65535, got {low}..{high}")
    return labels.astype(np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16, copy=False)


def _fill(
    file: h5py.File,
    labels: np.ndarray,
    state: ReviewState,
    fingerprint: str,
    geometry: Geometry,
    class_names: list[str],
    component_map: np.ndarray | None,
    class_colors: list[list[int]] | None,
    prediction_id: str,
    write_id: str,
) -> None:
    file.attrs["format"] = FORMAT_NAME
    file.attrs["write_id"] = write_id
    file.attrs["format_version"] = FORMAT_VERSION
    file.attrs["fingerprint"] = fingerprint
    file.attrs["saved"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    file.attrs["geometry"] = json.dumps(geometry.to_dict())
    file.attrs["class_names"] = json.dumps(list(class_names))
    file.attrs["review_state"] = json.dumps(state.to_dict())
    if class_colors is not None:  # optional attributes: readers without them ignore them
        file.attrs["class_colors"] = json.dumps([[int(c) for c in colour] for colour in class_colors])
    if prediction_id:
        file.attrs["prediction_id"] = prediction_id
    _dataset(file, "labels", labels)
    _dataset(file, "review_mask", state.review_mask.astype(np.uint8, copy=False))
    if component_map is not None:
        _dataset(file, "component_map", component_map.astype(_smallest_unsigned(component_map), copy=False))


def _colours(value) -> list[list[int]] | None:
    return None if value is None else [[int(c) for c in colour] for colour in json.loads(_text(value))]


def _dataset(file: h5py.File, name: str, array: np.ndarray) -> None:
    _, height, width = array.shape
    file.create_dataset(name, data=array, chunks=(1, height, width), compression="gzip", compression_opts=1)


def _smallest_unsigned(array: np.ndarray) -> type:
    high = int(array.max()) if array.size else 0
    for candidate in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(candidate).max:
            return candidate
    raise ValueError("component map ids do not fit in uint32")


def _check_format(file: h5py.File, source: Path) -> None:
    if _text(file.attrs.get("format", "")) != FORMAT_NAME:
        raise SessionError(f"{source}: not a napari-cgs review session (HDF5 file of another kind)")
    version = file.attrs.get("format_version")
    if version is None or int(version) != FORMAT_VERSION:
        raise SessionError(
            f"{source}: session format version {version} is not supported (this napari-cgs reads version "
            f"{FORMAT_VERSION})"
        )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
