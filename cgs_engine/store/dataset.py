"""One HDF5 file holding the normalised volumes of a training data set.

The file layout and its metadata are in :mod:`cgs_engine.store.layout`.

Volumes keep their own shape, so 2D slice data sets whose slices differ in size per patient
fit as they are; the training loop resizes slices to its input size.

Volumes are stored in the canonical layout the network reads (:mod:`cgs_engine.orientation`:
axes permuted and flipped, never resampled, so the direction is closest to identity):
``add_volume`` turns what it is given, and ``read_volume`` / ``read_slice`` turn a volume that a
store written before this rule holds in its file's own layout (a SegTHOR import of then), so
training never learns from a layout that predictions do not use.

Volumes are listed in sorted name order everywhere. ``slice_index(split)`` and
``load_split_to_memory(split)`` index into ``volume_names(split)``.

Safety: ``create`` writes to a hidden ``.partial`` file next to the target and moves it into
place on ``close()``. An existing file is replaced only with ``overwrite=True``. A ``with``
block that raises discards the partial file. So a failed import never leaves a half-written
store, and it never damages the previous one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

from cgs_engine.classes.checks import ClassTableError, check_class_names, check_colors
from cgs_engine.durable import GuardedFile
from cgs_engine.normalize import Normalization
from cgs_engine.orientation import Reorientation
from cgs_engine.store._checks import (
    SliceStoreError,
    check_image,
    check_label,
    check_review,
    check_volume_name,
)
from cgs_engine.store.commit import check_partial, commit_partial, open_partial
from cgs_engine.store.fingerprint import Fingerprint
from cgs_engine.store.layout import (
    SCOPE_ATTRIBUTE,
    StoredSlice,
    StoredVolume,
    VolumeInfo,
    check_split,
    first_line,
    read_root_metadata,
    read_volume_info,
    slice_layout,
    write_root_metadata,
    write_volume_attributes,
)
from cgs_engine.volume import Geometry


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
        self._fingerprints: dict[bool, str] = {}
        metadata = read_root_metadata(file, path)
        self._format_version = metadata.format_version
        self._class_names = metadata.class_names
        self._class_colors = metadata.class_colors
        self._normalization = metadata.normalization
        self._created = metadata.created
        self._scope = metadata.scope
        self._volumes = {name: read_volume_info(path, name, group) for name, group in file["volumes"].items()}

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
        file, guard, partial = open_partial(path)
        try:
            created = datetime.now(timezone.utc).isoformat(timespec="seconds")
            write_root_metadata(file, names, colors, normalization, created)
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
            raise SliceStoreError(f"{path}: cannot open ({first_line(error)})") from None
        try:
            return cls(file, path, None, False)
        except OSError as error:  # HDF5 could not read its own metadata: a damaged file
            file.close()
            raise SliceStoreError(f"{path}: damaged slice store ({first_line(error)})") from None
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
            assert self._guard is not None
            check_partial(self._guard, self._partial_path, self.path)
            commit_partial(self._partial_path, self.path, self._overwrite)

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
            check_split(split)
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
        in_plane_mm: tuple[float, float] | None = None,
    ) -> VolumeInfo:
        """Add one normalised volume [z, y, x], turned into the canonical layout with its label,
        review mask and geometry (a no-op for volumes already in it).

        ``labeled`` and ``val`` volumes need a label; ``unlabeled`` ones must not carry one, so
        that no label can leak into the unsupervised part of training. ``geometry=None``
        stores a unit geometry and records ``spacing_known=False``; ``in_plane_mm`` (row,
        column) then still records the slices' pixel spacing (slices cut out of a scan, already
        canonical), so they are read at the field of view prediction reads them at
        (:mod:`cgs_engine.infer.field`). ``sampling_weight`` makes
        training draw this volume's slices that many times as often as a weight-1 volume's.
        """
        self._require_writable()
        check_volume_name(name)
        check_split(split, context=f"volume {name!r}: ")
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
        turn = Reorientation.of(geometry)
        if not turn.is_identity:
            geometry = turn.canonical_geometry(geometry, image.shape)
            image, label, review = turn.canonical_copies(image, label, review)
        original = original_dtype if original_dtype is not None else str(image.dtype)
        group = self._file["volumes"].create_group(name)
        try:
            chunks = (1, *image.shape[1:])
            group.create_dataset("image", data=image, **slice_layout(chunks))
            if label is not None:
                group.create_dataset("label", data=label, **slice_layout(chunks))
            if review is not None:
                group.create_dataset("review", data=review, **slice_layout(chunks))
            write_volume_attributes(
                group, split, geometry, spacing_known, original, source, sampling_weight, in_plane_mm
            )
        except BaseException:
            del self._file["volumes"][name]
            raise
        info = read_volume_info(self.path, name, group)
        self._volumes[name] = info
        self._fingerprints = {}
        return info

    # ------------------------------------------------------------------------ reading
    def read_volume(self, name: str) -> StoredVolume:
        """The volume in the canonical layout (see the module docstring), whatever wrote it."""
        info = self._info(name)
        with self._damage_reported(name):
            image, label, review = self._handles(name)
            arrays = [image[()], None if label is None else label[()], None if review is None else review[()]]
        if info.stored_turn is not None:  # written before stores held canonical volumes
            arrays = info.stored_turn.canonical_copies(*arrays)
        return StoredVolume(*arrays, geometry=info.geometry, split=info.split)

    @contextmanager
    def _damage_reported(self, name: str) -> Iterator[None]:
        """HDF5 read failures (a flipped bit fails a chunk's checksum or its gzip stream) in one line."""
        try:
            yield
        except (OSError, KeyError) as error:
            raise SliceStoreError(
                f"{self.path}: volume {name!r} is damaged and cannot be read ({first_line(error)})"
            ) from None

    def read_slice(self, name: str, z: int) -> StoredSlice:
        info = self._info(name)
        if not 0 <= z < info.shape[0]:
            raise IndexError(f"slice {z} is outside volume {name!r} with {info.shape[0]} slices")
        if info.stored_turn is not None:  # an older store's layout: turn the whole volume
            whole = self.read_volume(name)
            return StoredSlice(*[None if array is None else array[z] for array in whole[:3]])
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

    def fingerprint(self, sampled: bool = False) -> str:
        """sha256 identifying the training content; stable across reopening (see
        :mod:`cgs_engine.store.fingerprint`; ``sampled``: by the scheme before v2)."""
        if sampled not in self._fingerprints:
            fingerprint = Fingerprint(
                self._format_version, self._class_names, self._normalization.to_dict(), sampled=sampled
            )
            for name in self.volume_names():
                with self._damage_reported(name):
                    fingerprint.add_volume(self._volumes[name], *self._handles(name))
            self._fingerprints[sampled] = fingerprint.hexdigest()
        return self._fingerprints[sampled]

    # ----------------------------------------------------------------------- internals
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
