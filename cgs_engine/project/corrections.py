"""The corrections of a project: ``corrections/<name>.h5``, one corrected volume each.

A file holds the raw image as read, the labels, the review mask and the geometry; it is replaced
atomically on every save, and a new ``revision`` tells retraining which corrections are new.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cgs_engine.errors import first_line
from cgs_engine.h5_durable import foreign_link, write_h5_atomically
from cgs_engine.project.versions import ProjectError, fsync_dir, now_iso
from cgs_engine.review.session import image_fingerprint
from cgs_engine.review.state import ACCEPTED, EDITED, UNREVIEWED
from cgs_engine.volume import Geometry, Volume

CORRECTION_FORMAT = "napari-cgs-correction"
# 2: review masks hold 0 / 1 ACCEPTED / 2 EDITED; version 1 files held 0 / 1 (read as EDITED).
CORRECTION_FORMAT_VERSION = 2
CORRECTION_NAME = re.compile(r"^[\w][\w .()+-]{0,199}$")
REPLACE_CHOICES = ("no", "same-source", "yes")  # add_correction(replace=...)


class CorrectionExistsError(ProjectError):
    """Saving would replace an existing correction that the caller did not ask to replace."""

    def __init__(self, path: Path, name: str, source: str) -> None:
        self.path, self.name, self.source = path, name, source
        super().__init__(
            f"{path}: correction {name!r} already exists (from {source}); "
            "save it under another name, or remove that correction first"
        )


@dataclass(frozen=True)
class CorrectionInfo:
    name: str
    path: Path
    shape: tuple[int, int, int]
    saved: str
    source: str
    revision: str  # changes on every save; tells retraining which corrections are new
    reviewed_voxels: int
    geometry: Geometry
    edited_voxels: int = 0  # drawn or corrected by the user (review mask EDITED)
    format_version: int = CORRECTION_FORMAT_VERSION
    image_fingerprint: str = ""  # the same scan saved under two names has one fingerprint


@dataclass(frozen=True)
class Correction:
    info: CorrectionInfo
    image: Volume  # raw intensities as read, with their geometry
    labels: np.ndarray  # uint8 class ids
    review: np.ndarray  # uint8: 0 ignored, 1 ACCEPTED (model output a person checked), 2 EDITED


def correction_content(correction: Correction) -> str:
    """sha256 of what a correction teaches: its image (fingerprint), labels and review mask. Saving
    the same correction again gives it a new revision but the same content."""
    digest = hashlib.sha256(correction.info.image_fingerprint.encode())
    for array in (correction.labels, correction.review):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return digest.hexdigest()


class CorrectionRecords:
    """The correction methods of :class:`~cgs_engine.project.project.Project`."""

    corrections_dir: Path
    class_names: list[str]

    def add_correction(
        self,
        name: str,
        image: Volume,
        labels: np.ndarray,
        review_mask: np.ndarray | None = None,
        replace: str = "same-source",
    ) -> CorrectionInfo:
        """Save the correction ``name``; an existing one is replaced atomically only as ``replace`` allows.

        ``review_mask``: 0 = not reviewed (ignored), 1 = ACCEPTED (the model's label, checked by a
        person), 2 = EDITED (drawn or corrected by a person). ``None``: every voxel is EDITED, i.e.
        the labels are the user's own.

        ``replace``: ``"no"`` refuses an existing correction of that name, ``"same-source"`` replaces
        it only when it was saved from the same image source (saving a scan's correction again),
        ``"yes"`` always replaces it. A refusal raises :class:`CorrectionExistsError`.
        """
        if replace not in REPLACE_CHOICES:
            raise ValueError(f"replace must be one of {', '.join(REPLACE_CHOICES)}, not {replace!r}")
        if not isinstance(name, str) or not CORRECTION_NAME.match(name):
            raise ProjectError(
                f"correction name {name!r}: use letters, digits, spaces and ._-+() "
                "(at most 200, not starting with a dot or space)"
            )
        if not isinstance(image, Volume):
            image = Volume(np.asarray(image))
        raw = np.asarray(image.array)
        if raw.dtype.kind not in "iufb" or raw.size == 0:
            raise ProjectError(f"correction {name!r}: image must be a non-empty numeric array")
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise ProjectError(f"correction {name!r}: image has NaN or infinite values")
        labels = self._checked_labels(name, labels, raw.shape)
        review = _checked_review(name, review_mask, raw.shape)
        path = self.corrections_dir / f"{name}.h5"
        attrs = {
            "format": CORRECTION_FORMAT,
            "format_version": CORRECTION_FORMAT_VERSION,
            "name": name,
            "source": recorded_source(image.source),
            # which image this is when it has no source file (opened by another reader, made in
            # napari): re-saving the same voxels replaces it, another image of that name does not
            "image_fingerprint": image_fingerprint(raw, image.geometry),
            "saved": now_iso(),
            "revision": uuid.uuid4().hex,
            "geometry": json.dumps(image.geometry.to_dict()),
            "reviewed_voxels": int(np.count_nonzero(review)),
            "edited_voxels": int(np.count_nonzero(review == EDITED)),
        }
        with self.state_lock():  # two processes saving one name: the second sees the first's file
            self.corrections_dir.mkdir(exist_ok=True)
            _refuse_replacing(path, name, attrs["source"], attrs["image_fingerprint"], replace)
            _write_h5_atomically(path, {"image": raw, "labels": labels, "review": review}, attrs)
        return _read_correction_info(path)

    def correction_name_for(self, image: Volume, preferred: str) -> str:
        """The name to save ``image``'s correction under, so that saving a scan again replaces its
        own correction and never another scan's.

        The name of the correction saved earlier from the same source file, whatever the name
        offered now (napari names a second ``ct.nii.gz`` "ct [1]", and the scan then went in twice,
        its older labels still training); else ``preferred`` when free; else ``preferred`` with
        the source's folder in front ("pt7_ct"), else with a number.
        """
        source = recorded_source(image.source)
        infos = self.corrections()
        if source:
            earlier = next((info.name for info in infos if same_source(info.source, source)), None)
            if earlier is not None:
                return earlier
        taken = {info.name for info in infos}
        if self.corrections_dir.is_dir():  # damaged files hold their names too
            taken |= {path.stem for path in self.corrections_dir.glob("*.h5")}
        if preferred not in taken:
            return preferred
        folder = Path(source).parent.name if source else ""
        candidates = [f"{folder}_{preferred}"] if folder else []
        candidates += [f"{preferred} ({number})" for number in range(2, 10_000)]
        return next(name for name in candidates if name not in taken and CORRECTION_NAME.match(name))

    def remove_correction(self, name: str) -> None:
        path = self._correction_path(name)
        # under the state lock: a retrain checks "no correction it used was removed" and activates
        # its version in one step there; a removal landing between the two went live unseen
        with self.state_lock():
            if not path.is_file():
                raise ProjectError(f"{path}: no correction named {name!r}")
            path.unlink()
            fsync_dir(self.corrections_dir)

    def _correction_path(self, name: str) -> Path:
        """The file of correction ``name``; names that could point elsewhere are refused."""
        if not isinstance(name, str) or not CORRECTION_NAME.match(name):
            raise ProjectError(f"correction name {name!r}: not a valid correction name")
        return self.corrections_dir / f"{name}.h5"

    def corrections(self) -> list[CorrectionInfo]:
        """Readable corrections in name order (damaged files are listed in ``problems``)."""
        return self._corrections_and_problems()[0]

    def read_correction(self, name: str) -> Correction:
        path = self._correction_path(name)
        if not path.is_file():
            raise ProjectError(f"{path}: no correction named {name!r}")
        info = _read_correction_info(path)
        try:
            with h5py.File(path, "r") as file:
                image, labels, review = (file[key][()] for key in ("image", "labels", "review"))
        except (OSError, KeyError) as error:
            raise ProjectError(f"{path}: damaged correction file ({first_line(error)})") from None
        if info.format_version < 2:  # version 1 marked every reviewed voxel 1, whatever its origin
            review = np.where(review > 0, np.uint8(EDITED), np.uint8(0))
        volume = Volume(image, info.geometry, "image", info.source or None)
        return Correction(info, volume, labels, review)

    def read_review_mask(self, name: str) -> np.ndarray:
        """Only the review mask of a correction (0 / ACCEPTED / EDITED), without its image."""
        path = self._correction_path(name)
        info = _read_correction_info(path)
        try:
            with h5py.File(path, "r") as file:
                review = file["review"][()]
        except (OSError, KeyError) as error:
            raise ProjectError(f"{path}: damaged correction file ({first_line(error)})") from None
        if info.format_version < 2:
            review = np.where(review > 0, np.uint8(EDITED), np.uint8(0))
        return review

    def _corrections_and_problems(self) -> tuple[list[CorrectionInfo], list[str]]:
        found, problems = [], []
        if not self.corrections_dir.is_dir():
            return found, problems
        for path in sorted(self.corrections_dir.glob("*.h5")):
            if path.name.startswith("."):
                continue
            try:
                found.append(_read_correction_info(path))
            except ProjectError as error:
                problems.append(str(error))
        return found, problems

    def _checked_labels(self, name: str, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.shape != shape:
            raise ProjectError(f"correction {name!r}: labels shape {labels.shape} differs from image {shape}")
        if labels.dtype.kind == "f":
            if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
                raise ProjectError(f"correction {name!r}: labels must be whole-number class ids")
        elif labels.dtype.kind not in "iub":
            raise ProjectError(f"correction {name!r}: labels must be integer class ids, got {labels.dtype}")
        low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
        if low < 0 or high >= len(self.class_names):
            raise ProjectError(
                f"correction {name!r}: label ids must lie in 0..{len(self.class_names) - 1} "
                f"({', '.join(self.class_names)}), got {low:g}..{high:g}"
            )
        return labels.astype(np.uint8)


def _checked_review(name: str, review: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if review is None:
        return np.full(shape, EDITED, np.uint8)
    review = np.asarray(review)
    if review.shape != shape:
        raise ProjectError(
            f"correction {name!r}: review mask shape {review.shape} differs from image {shape}"
        )
    if review.dtype.kind not in "iufb" or not np.isin(review, (UNREVIEWED, ACCEPTED, EDITED)).all():
        raise ProjectError(
            f"correction {name!r}: review mask must hold only 0 (unreviewed), 1 (accepted) and 2 (edited)"
        )
    return review.astype(np.uint8)


def recorded_source(source: str | None) -> str:
    """An image's source as a correction records it: a file or folder given relative to the working
    folder (``cgs project add-correction --image images/ct.nii.gz``) made absolute. Recorded as
    given, the panel's save of the same scan (by its full path) did not find it and added the scan
    a second time, its older labels still training."""
    if not source:
        return ""
    return os.path.abspath(source) if os.path.exists(source) else source


def same_source(recorded: str, source: str) -> bool:
    """One source file: the same recorded path, or two paths of one file (a link, a relative path
    recorded before sources were made absolute, read from the folder it was given in)."""
    if not recorded or not source:
        return False
    if recorded == source:
        return True
    try:
        return os.path.samefile(recorded, source)
    except OSError:  # either is gone, or was never a file
        return False


def _refuse_replacing(path: Path, name: str, source: str, fingerprint: str, replace: str) -> None:
    """ "same-source": the same source file, or for images without one, the same voxels and grid
    (two scans without a source file were the same "" source, and one replaced the other)."""
    if replace == "yes" or not os.path.lexists(path):
        return
    try:
        existing = _read_correction_info(path).source
        with h5py.File(path, "r") as file:
            existing_fingerprint = str(file.attrs.get("image_fingerprint", ""))
    except (ProjectError, OSError):
        raise CorrectionExistsError(path, name, "a damaged file that cannot be read") from None
    same = same_source(existing, source) if source else existing_fingerprint == fingerprint and not existing
    if replace == "same-source" and same:
        return
    raise CorrectionExistsError(path, name, existing or "another image without a recorded source file")


def _write_h5_atomically(path: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    def fill(file: h5py.File) -> None:
        for key, value in attrs.items():
            file.attrs[key] = value
        for key, array in arrays.items():
            chunks = (1, *array.shape[1:]) if array.ndim == 3 else True
            file.create_dataset(key, data=array, chunks=chunks, compression="gzip", compression_opts=1)

    write_h5_atomically(path, fill)


def _read_correction_info(path: Path) -> CorrectionInfo:
    try:
        with h5py.File(path, "r") as file:
            attrs = file.attrs
            if attrs.get("format") != CORRECTION_FORMAT:
                raise ProjectError(f"{path}: not a napari-cgs correction file")
            linked = foreign_link(file)
            if linked:
                raise ProjectError(f"{path}: {linked}; a correction file holds its own data")
            if int(attrs.get("format_version", 1)) > CORRECTION_FORMAT_VERSION:
                raise ProjectError(
                    f"{path}: correction format version {attrs.get('format_version')} is newer than this "
                    f"napari-cgs reads ({CORRECTION_FORMAT_VERSION})"
                )
            shape = tuple(int(n) for n in file["image"].shape)
            if file["labels"].shape != shape or file["review"].shape != shape or len(shape) != 3:
                raise ProjectError(
                    f"{path}: damaged correction file (image, labels and review differ in shape)"
                )
            name = str(attrs["name"])
            if name != path.name[: -len(".h5")] or not CORRECTION_NAME.match(name):
                raise ProjectError(
                    f"{path}: damaged correction file (its recorded name {name!r} is not its file name)"
                )
            return CorrectionInfo(
                name=name,
                path=path,
                shape=shape,  # type: ignore[arg-type]
                saved=str(attrs["saved"]),
                source=str(attrs.get("source", "")),
                revision=str(attrs["revision"]),
                reviewed_voxels=int(attrs.get("reviewed_voxels", 0)),
                geometry=Geometry.from_dict(json.loads(attrs["geometry"])),
                edited_voxels=int(attrs.get("edited_voxels", attrs.get("reviewed_voxels", 0))),
                format_version=int(attrs.get("format_version", 1)),
                image_fingerprint=str(attrs.get("image_fingerprint", "")),
            )
    except ProjectError:
        raise
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ProjectError(f"{path}: damaged correction file ({first_line(error)})") from None
