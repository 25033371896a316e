"""One HDF5 file holding the normalised volumes of a training data set.

Layout (format version 1)::

    /                       attrs: format, format_version, class_names (JSON list, index =
                                   class id, 0 = background), class_colors (JSON RGB lists),
                                   normalization (JSON), created (ISO 8601 UTC),
                                   training_scope (JSON, optional: what the raw images were
                                   before normalisation, cgs_engine.scope.TrainingScope)
    /volumes/<name>/image   float32 [z, y, x], already normalised, one chunk per z slice
    /volumes/<name>/label   uint8 class ids, same shape and chunks (labeled and val only)
    /volumes/<name>/review  uint8, 1 where the label is trusted; absent = fully trusted
                            attrs of <name>: split, geometry (JSON), spacing_known,
                                             original_dtype, source, sampling_weight
                                             (optional, default 1: how often training
                                             draws this volume's slices relative to others)

Volumes keep their own shape, so 2D slice data sets whose slices differ in size per patient
fit as they are; the training loop resizes slices to its input size.

Volumes are listed in sorted name order everywhere. ``slice_index(split)`` and
``load_split_to_memory(split)`` index into ``volume_names(split)``.

Safety: ``create`` writes to a hidden ``.partial`` file next to the target and moves it into
place on ``close()``. An existing file is replaced only with ``overwrite=True``. A ``with``
block that raises discards the partial file. So a failed import never leaves a half-written
store, and it never damages the previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from cgs_engine.classes.checks import ClassTableError, check_class_names, check_colors
from cgs_engine.durable import GuardedFile, check_written, remove_stale_temp_files, temp_path_for
from cgs_engine.h5_durable import foreign_link, hdf5_problem
from cgs_engine.normalize import Normalization
from cgs_engine.store._checks import (
    SliceStoreError,
    check_image,
    check_label,
    check_review,
    check_volume_name,
)
from cgs_engine.volume import Geometry

FORMAT_NAME = "napari-cgs-slice-store"
FORMAT_VERSION = 1
SCOPE_ATTRIBUTE = "training_scope"
SPLITS = ("labeled", "unlabeled", "val")

# Slices are deflate-compressed (gzip level 1), the standard HDF5 filter that every HDF5 tool
# reads (lzf is h5py-only). Measured per slice chunk, CPU time, on SegTHOR (256x256), ACDC
# (native 154-512 px) and windowed OpenKBP CT (128x128):
#   none   read 65 / 80 / 38 us,      size 100 %
#   lzf    read 941 / 903 / 166 us,   size 18 / 46 / 8 %
#   gzip1  read 554 / 955 / 132 us,   size 13 / 31 / 6 %
# The training loop reads each volume once into RAM, so decoding costs about 1-3 s per run
# (ACDC 331 MB, SegTHOR 820 MB of float32) and the files are 3-16x smaller than raw.
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 1
FINGERPRINT_IMAGE_SLICES = 4
_HASH_BLOCK_SLICES = 64

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "SliceStore",
    "SliceStoreError",
    "StoredSlice",
    "StoredVolume",
    "VolumeInfo",
]


@dataclass(frozen=True)
class VolumeInfo:
    """Metadata of one stored volume (read without touching the voxel data)."""

    name: str
    shape: tuple[int, int, int]
    split: str
    geometry: Geometry
    spacing_known: bool
    original_dtype: str
    source: str
    has_label: bool
    has_review: bool
    sampling_weight: float = 1.0


class StoredVolume(NamedTuple):
    image: np.ndarray
    label: np.ndarray | None
    review: np.ndarray | None
    geometry: Geometry
    split: str


class StoredSlice(NamedTuple):
    image: np.ndarray
    label: np.ndarray | None
    review: np.ndarray | None


class SliceStore:
    """A slice store file; make one with :meth:`create` or :meth:`open`, not the constructor."""

    def __init__(
        self,
        file: h5py.File,
        path: Path,
        partial_path: Path | None,
        overwrite: bool,
        guard: GuardedFile | None = None,
    ) -> None:
        self._file = file
        self._guard = guard  # the disk under a new store's file (see cgs_engine.h5_durable)
        self.path = path
        self._partial_path = partial_path
        self._overwrite = overwrite
        self._closed = False
        self._datasets: dict[str, tuple[h5py.Dataset, h5py.Dataset | None, h5py.Dataset | None]] = {}
        self._fingerprint: str | None = None
        self._read_root_metadata()
        self._volumes = {name: self._read_volume_info(name, group) for name, group in file["volumes"].items()}

    # ----------------------------------------------------------------- create / open / close
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        class_names: Sequence[str],
        normalization: Normalization,
        colors: Sequence[Sequence[int]] | None = None,
        overwrite: bool = False,
    ) -> SliceStore:
        """A new, empty, writable store; it appears at ``path`` on :meth:`close`."""
        path = Path(path)
        if path.is_dir():
            raise SliceStoreError(f"{path}: is a directory, not a slice store file")
        if path.exists() and not overwrite:
            raise SliceStoreError(f"{path}: already exists; not replacing it without overwrite")
        if not path.parent.is_dir():
            raise SliceStoreError(f"{path}: folder {path.parent} does not exist")
        try:
            names = check_class_names(class_names)
            colors = check_colors(colors, len(names))
        except ClassTableError as error:
            raise SliceStoreError(str(error)) from None
        if not isinstance(normalization, Normalization):
            raise SliceStoreError(
                f"{path}: normalization must be a Normalization, got {type(normalization).__name__}"
            )
        remove_stale_temp_files(path.parent, name=path.name)
        partial = temp_path_for(path)
        try:
            guard = GuardedFile(partial)
        except OSError as error:
            raise SliceStoreError(f"{path}: cannot write ({_first_line(error)})") from None
        try:
            file = h5py.File(guard, "w")
        except OSError as error:
            guard.close()
            partial.unlink(missing_ok=True)
            raise SliceStoreError(f"{path}: cannot write ({_first_line(error)})") from None
        try:
            file.attrs["format"] = FORMAT_NAME
            file.attrs["format_version"] = FORMAT_VERSION
            file.attrs["class_names"] = json.dumps(names)
            file.attrs["class_colors"] = json.dumps(colors)
            file.attrs["normalization"] = normalization.to_json()
            file.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            file.create_group("volumes")
            return cls(file, path, partial, overwrite, guard)
        except BaseException:
            file.close()
            guard.close()
            partial.unlink(missing_ok=True)
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> SliceStore:
        """Open an existing store read-only (``"r"``) or for adding volumes (``"a"``)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not path.exists():
            raise SliceStoreError(f"{path}: no such slice store file")
        if path.is_dir():
            raise SliceStoreError(f"{path}: is a directory, not a slice store file")
        if not h5py.is_hdf5(path):
            raise SliceStoreError(f"{path}: not an HDF5 file, so not a napari-cgs slice store")
        try:
            file = h5py.File(path, "r" if mode == "r" else "r+")
        except OSError as error:
            raise SliceStoreError(f"{path}: cannot open ({_first_line(error)})") from None
        try:
            return cls(file, path, None, False)
        except OSError as error:  # HDF5 could not read its own metadata: a damaged file
            file.close()
            raise SliceStoreError(f"{path}: damaged slice store ({_first_line(error)})") from None
        except Exception:
            file.close()
            raise

    def close(self) -> None:
        """Flush and close; a newly created store is moved to its final path here."""
        if self._closed:
            return
        self._closed = True
        self._datasets.clear()
        self._file.close()
        if self._partial_path is not None:
            self._check_partial()
            self._commit_partial()

    def abort(self) -> None:
        """Close without keeping a newly created store (an opened store is just closed)."""
        if self._closed:
            return
        self._closed = True
        self._datasets.clear()
        self._file.close()
        if self._guard is not None:
            self._guard.close()
        if self._partial_path is not None:
            self._partial_path.unlink(missing_ok=True)

    def __enter__(self) -> SliceStore:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __reduce__(self):
        # DataLoader workers get their own read-only handle: HDF5 handles do not survive a fork.
        if self._partial_path is not None or self._file.mode != "r":
            raise TypeError(f"{self.path}: only stores opened read-only can be pickled")
        return (SliceStore.open, (str(self.path), "r"))

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._volumes)} volumes"
        return f"SliceStore({str(self.path)!r}, {state})"

    # ----------------------------------------------------------------------- metadata
    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def class_colors(self) -> list[list[int]]:
        return [list(color) for color in self._class_colors]

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def normalization(self) -> Normalization:
        return self._normalization

    @property
    def scope(self) -> dict:
        """The training scope recorded at import (``TrainingScope.to_dict()``); ``{}`` when none was."""
        return json.loads(json.dumps(self._scope))

    def set_scope(self, scope: dict) -> None:
        """Record what the raw images were (measured by the importer before normalising them)."""
        self._require_writable()
        if not isinstance(scope, dict):
            raise SliceStoreError(f"{self.path}: a training scope must be a dict, got {type(scope).__name__}")
        self._file.attrs[SCOPE_ATTRIBUTE] = json.dumps(scope)
        self._scope = json.loads(json.dumps(scope))

    @property
    def format_version(self) -> int:
        return self._format_version

    @property
    def created(self) -> str:
        return self._created

    @property
    def writable(self) -> bool:
        return not self._closed and self._file.mode == "r+"

    def __len__(self) -> int:
        return len(self._volumes)

    def __contains__(self, name: object) -> bool:
        return name in self._volumes

    def volume_names(self, split: str | None = None) -> list[str]:
        if split is not None:
            _check_split(split)
        return sorted(name for name, info in self._volumes.items() if split is None or info.split == split)

    def volume_info(self, name: str) -> VolumeInfo:
        return self._info(name)

    # ------------------------------------------------------------------------ writing
    def add_volume(
        self,
        name: str,
        image: np.ndarray,
        label: np.ndarray | None = None,
        review: np.ndarray | None = None,
        geometry: Geometry | None = None,
        split: str = "unlabeled",
        source: str | None = None,
        original_dtype: str | None = None,
        sampling_weight: float = 1.0,
    ) -> VolumeInfo:
        """Add one normalised volume [z, y, x].

        ``labeled`` and ``val`` volumes need a label; ``unlabeled`` ones must not carry one, so
        that no label can leak into the unsupervised part of training. ``geometry=None``
        stores a unit geometry and records ``spacing_known=False``. ``sampling_weight`` makes
        training draw this volume's slices that many times as often as a weight-1 volume's.
        """
        self._require_writable()
        check_volume_name(name)
        _check_split(split, context=f"volume {name!r}: ")
        if name in self._volumes:
            raise SliceStoreError(f"volume {name!r} already exists in {self.path}")
        image = check_image(name, image)
        if split == "unlabeled" and label is not None:
            raise SliceStoreError(f"volume {name!r}: unlabeled volumes must not carry a label")
        if split != "unlabeled" and label is None:
            raise SliceStoreError(f"volume {name!r}: {split} volumes need a label")
        if label is not None:
            label = check_label(name, label, image.shape, self.num_classes)
        if review is not None:
            if label is None:
                raise SliceStoreError(f"volume {name!r}: a review mask needs a label")
            review = check_review(name, review, image.shape)
        if not (
            isinstance(sampling_weight, (int, float)) and np.isfinite(sampling_weight) and sampling_weight > 0
        ):
            raise SliceStoreError(f"volume {name!r}: sampling_weight must be a positive number")
        spacing_known = geometry is not None
        if geometry is None:
            geometry = Geometry()
        elif not isinstance(geometry, Geometry):
            raise SliceStoreError(
                f"volume {name!r}: geometry must be a Geometry, got {type(geometry).__name__}"
            )
        original = original_dtype if original_dtype is not None else str(image.dtype)
        group = self._file["volumes"].create_group(name)
        try:
            chunks = (1, *image.shape[1:])
            group.create_dataset("image", data=image, **_slice_layout(chunks))
            if label is not None:
                group.create_dataset("label", data=label, **_slice_layout(chunks))
            if review is not None:
                group.create_dataset("review", data=review, **_slice_layout(chunks))
            group.attrs["split"] = split
            group.attrs["geometry"] = json.dumps(geometry.to_dict())
            group.attrs["spacing_known"] = spacing_known
            group.attrs["original_dtype"] = str(original)
            group.attrs["source"] = "" if source is None else str(source)
            if sampling_weight != 1:
                group.attrs["sampling_weight"] = float(sampling_weight)
        except BaseException:
            del self._file["volumes"][name]
            raise
        info = self._read_volume_info(name, group)
        self._volumes[name] = info
        self._fingerprint = None
        return info

    # ------------------------------------------------------------------------ reading
    def read_volume(self, name: str) -> StoredVolume:
        info = self._info(name)
        with self._damage_reported(name):
            image, label, review = self._handles(name)
            return StoredVolume(
                image=image[()],
                label=None if label is None else label[()],
                review=None if review is None else review[()],
                geometry=info.geometry,
                split=info.split,
            )

    @contextmanager
    def _damage_reported(self, name: str) -> Iterator[None]:
        """HDF5 read failures (a flipped bit fails a chunk's checksum or its gzip stream) in one line."""
        try:
            yield
        except (OSError, KeyError) as error:
            raise SliceStoreError(
                f"{self.path}: volume {name!r} is damaged and cannot be read ({_first_line(error)})"
            ) from None

    def read_slice(self, name: str, z: int) -> StoredSlice:
        info = self._info(name)
        if not 0 <= z < info.shape[0]:
            raise IndexError(f"slice {z} is outside volume {name!r} with {info.shape[0]} slices")
        with self._damage_reported(name):
            image, label, review = self._handles(name)
            return StoredSlice(
                image=image[z],
                label=None if label is None else label[z],
                review=None if review is None else review[z],
            )

    def slice_index(self, split: str) -> np.ndarray:
        """int64 array of rows ``(volume_idx, z)``; volume_idx indexes ``volume_names(split)``."""
        depths = [self._volumes[name].shape[0] for name in self.volume_names(split)]
        if not depths:
            return np.zeros((0, 2), dtype=np.int64)
        volume_idx = np.repeat(np.arange(len(depths), dtype=np.int64), depths)
        z = np.concatenate([np.arange(depth, dtype=np.int64) for depth in depths])
        return np.stack([volume_idx, z], axis=1)

    def load_split_to_memory(self, split: str) -> list[StoredVolume]:
        """Every volume of ``split`` as in-RAM arrays, in ``volume_names(split)`` order."""
        return [self.read_volume(name) for name in self.volume_names(split)]

    def fingerprint(self) -> str:
        """sha256 identifying the training content; stable across reopening.

        Covers class names, normalization, and per volume: name, split, shape, geometry, all
        label and review bytes, and the bytes of up to 4 evenly spaced image slices. It is
        cheap, so it samples the image instead of hashing all of it.
        """
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    # ----------------------------------------------------------------------- internals
    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256()
        header = {
            "format_version": self._format_version,
            "class_names": self._class_names,
            "normalization": self._normalization.to_dict(),
        }
        digest.update(json.dumps(header, sort_keys=True).encode())
        for name in self.volume_names():
            info = self._volumes[name]
            summary = [
                name,
                info.split,
                list(info.shape),
                info.geometry.to_dict(),
                info.has_label,
                info.has_review,
            ]
            if info.sampling_weight != 1:  # appended only when set, so older fingerprints stay valid
                summary.append(info.sampling_weight)
            digest.update(json.dumps(summary, sort_keys=True).encode())
            with self._damage_reported(name):
                image, label, review = self._handles(name)
                for dataset in (label, review):
                    if dataset is not None:
                        for start in range(0, info.shape[0], _HASH_BLOCK_SLICES):
                            digest.update(dataset[start : start + _HASH_BLOCK_SLICES].tobytes())
                sample_count = min(info.shape[0], FINGERPRINT_IMAGE_SLICES)
                for z in np.unique(np.linspace(0, info.shape[0] - 1, sample_count).round().astype(int)):
                    digest.update(image[int(z)].tobytes())
        return digest.hexdigest()

    def _read_root_metadata(self) -> None:
        attrs = self._file.attrs
        if _as_str(attrs.get("format")) != FORMAT_NAME:
            raise SliceStoreError(f"{self.path}: HDF5 file is not a napari-cgs slice store")
        version = attrs.get("format_version")
        if not _is_int_equal(version, FORMAT_VERSION):
            raise SliceStoreError(
                f"{self.path}: slice store format version {version} is not supported "
                f"(this napari-cgs reads version {FORMAT_VERSION})"
            )
        try:
            self._format_version = int(version)
            self._class_names = check_class_names(json.loads(_as_str(attrs["class_names"])))
            self._class_colors = check_colors(
                json.loads(_as_str(attrs["class_colors"])), len(self._class_names)
            )
            self._normalization = Normalization.from_json(_as_str(attrs["normalization"]))
            self._created = _as_str(attrs.get("created", ""))
            self._scope = json.loads(_as_str(attrs[SCOPE_ATTRIBUTE])) if SCOPE_ATTRIBUTE in attrs else {}
            if not isinstance(self._scope, dict):
                raise ValueError(f"{SCOPE_ATTRIBUTE} is not a JSON object")
            if "volumes" not in self._file:
                raise KeyError("volumes")
        except (KeyError, ValueError, TypeError) as error:
            raise SliceStoreError(
                f"{self.path}: damaged slice store metadata ({_first_line(error)})"
            ) from None
        linked = foreign_link(self._file)
        if linked:
            raise SliceStoreError(f"{self.path}: {linked}; a slice store holds its own data and no links")

    def _read_volume_info(self, name: str, group: h5py.Group) -> VolumeInfo:
        try:
            attrs = group.attrs
            return VolumeInfo(
                name=name,
                shape=tuple(int(n) for n in group["image"].shape),  # type: ignore[arg-type]
                split=_as_str(attrs["split"]),
                geometry=Geometry.from_dict(json.loads(_as_str(attrs["geometry"]))),
                spacing_known=bool(attrs.get("spacing_known", True)),
                original_dtype=_as_str(attrs.get("original_dtype", "")),
                source=_as_str(attrs.get("source", "")),
                has_label="label" in group,
                has_review="review" in group,
                sampling_weight=float(attrs.get("sampling_weight", 1.0)),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise SliceStoreError(f"{self.path}: damaged volume {name!r} ({_first_line(error)})") from None

    def _info(self, name: str) -> VolumeInfo:
        self._require_open()
        try:
            return self._volumes[name]
        except KeyError:
            raise KeyError(f"no volume {name!r} in {self.path}") from None

    def _handles(self, name: str) -> tuple[h5py.Dataset, h5py.Dataset | None, h5py.Dataset | None]:
        handles = self._datasets.get(name)
        if handles is None:
            group = self._file["volumes"][name]
            handles = (group["image"], group.get("label"), group.get("review"))
            self._datasets[name] = handles
        return handles

    def _require_open(self) -> None:
        if self._closed:
            raise SliceStoreError(f"{self.path}: slice store is closed")

    def _require_writable(self) -> None:
        self._require_open()
        if self._file.mode != "r+":
            raise SliceStoreError(
                f"{self.path}: slice store is open read-only; open it with mode='a' to add volumes"
            )

    def _check_partial(self) -> None:
        """The new store reached the disk whole (no refused write, and it reads back), or WriteError."""
        partial = self._partial_path
        assert partial is not None and self._guard is not None
        self._guard.close()
        try:
            self._guard.raise_if_failed(self.path)
            check_written(partial, self.path, hdf5_problem)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _commit_partial(self) -> None:
        partial = self._partial_path
        assert partial is not None
        if self._overwrite:
            os.replace(partial, self.path)
            return
        try:
            # A hard link fails if the target exists, so a file created meanwhile is never clobbered.
            os.link(partial, self.path)
        except FileExistsError:
            raise SliceStoreError(
                f"{self.path}: appeared while this store was written; the new store is kept at {partial}"
            ) from None
        except OSError:
            if self.path.exists():
                raise SliceStoreError(
                    f"{self.path}: appeared while this store was written; the new store is kept at {partial}"
                ) from None
            os.replace(partial, self.path)
            return
        partial.unlink()


def _slice_layout(chunks: tuple[int, ...]) -> dict:
    # fletcher32: each chunk carries a checksum, so damage is reported instead of read as data
    return {
        "chunks": chunks,
        "compression": COMPRESSION,
        "compression_opts": COMPRESSION_LEVEL,
        "fletcher32": True,
    }


def _check_split(split: str, context: str = "") -> None:
    if split not in SPLITS:
        raise SliceStoreError(f"{context}unknown split {split!r}; use one of {SPLITS}")


def _is_int_equal(value: object, expected: int) -> bool:
    try:
        return int(value) == expected  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def _as_str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
