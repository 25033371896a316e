"""Build slice stores from the data sets we train on.

Every importer writes through :meth:`SliceStore.create` inside a ``with`` block: the store
goes to a hidden partial file and appears at ``out`` only once the import has finished. An
existing ``out`` is replaced only with ``overwrite=True``, and a failed or interrupted import
leaves nothing behind. Errors are one line and name the file that caused them.

Normalisation of the 2D benchmark sets
--------------------------------------
ACDC (SSL4MIS) images are already min-max normalised per volume to [0, 1], and the SegTHOR
PNGs were min-max scaled per volume to 0..255 upstream. The importers keep those
intensities (SegTHOR is only divided by 255) and record ``minmax`` as the store's
normalisation. That is the transform that puts a *new raw* volume on the training
scale. On the stored volumes themselves it changes nothing (ACDC volumes span exactly
[0, 1]). ``identity`` would be correct only for inputs that someone has already
normalised, and it would silently feed raw MR or CT values to a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk

from cgs_engine.classes.files import ForeignClassFileError, find_class_file, read_class_file
from cgs_engine.classes.relabel import in_receiver_classes, same_organ
from cgs_engine.classes.table import derive_class_table
from cgs_engine.errors import CGSError, first_line
from cgs_engine.h5_durable import foreign_link
from cgs_engine.io import read_volume
from cgs_engine.io.errors import VolumeIOError, require_utf8_path
from cgs_engine.io.formats import strip_image_suffix
from cgs_engine.io.validate import label_map_problem
from cgs_engine.normalize import Normalization, guess_normalization
from cgs_engine.orientation import Reorientation, canonical_volume
from cgs_engine.scope import ScopeMeter
from cgs_engine.store.dataset import SliceStore, SliceStoreError
from cgs_engine.volume import Geometry

Progress = Callable[[int, int], None] | None

ACDC_CLASS_NAMES = ["background", "RV", "Myo", "LV"]
SEGTHOR_CLASS_NAMES = ["background", "esophagus", "heart", "trachea", "aorta"]
SEGTHOR_GT_STEP = 63  # gt PNG grey value = class id * 63
_ACDC_SLICE_ID = re.compile(r"^(?P<volume>(?P<patient>patient\d+)_frame\d+)_slice_(?P<index>\d+)$")
_SEGTHOR_PNG = re.compile(r"^(?P<patient>Patient_\d+)_(?P<z>\d+)\.png$")
_NNUNET_CHANNEL = re.compile(r"_0000$")
MAX_STORE_ID = 255  # labels are stored as uint8


class DatasetImportError(CGSError, ValueError):
    """An import failed; the one-line message names the file that caused it."""


# --------------------------------------------------------------------------------- ACDC
@dataclass(frozen=True)
class AcdcTrainVolume:
    """One train volume of the SSL4MIS ACDC list: its slice files in z order."""

    volume_id: str
    patient: str
    slice_ids: tuple[str, ...]


def read_acdc_train_volumes(root: str | os.PathLike) -> list[AcdcTrainVolume]:
    """Train volumes from ``train_slices.list``, in order of their first appearance there.

    Slice ids are ``patientXXX_frameYY_slice_N``. The N of one volume must be consecutive. In the
    SSL4MIS files they run from 1 (not 0) to the slice count.
    """
    list_path = Path(root) / "train_slices.list"
    slices: dict[str, dict[int, str]] = {}
    patients: dict[str, str] = {}
    for line_number, slice_id in _list_entries(list_path):
        match = _ACDC_SLICE_ID.match(slice_id)
        if match is None:
            raise DatasetImportError(f"{list_path}: line {line_number} is not a slice id: {slice_id!r}")
        volume_slices = slices.setdefault(match["volume"], {})
        index = int(match["index"])
        if index in volume_slices:
            raise DatasetImportError(f"{list_path}: slice {slice_id} is listed twice")
        volume_slices[index] = slice_id
        patients[match["volume"]] = match["patient"]
    volumes = []
    for volume_id, by_index in slices.items():
        first = min(by_index)
        if sorted(by_index) != list(range(first, first + len(by_index))):
            raise DatasetImportError(
                f"{list_path}: slices of {volume_id} are not consecutive: {sorted(by_index)}"
            )
        ordered = tuple(by_index[index] for index in sorted(by_index))
        volumes.append(AcdcTrainVolume(volume_id, patients[volume_id], ordered))
    return volumes


def acdc_labeled_patients(volumes: Sequence[AcdcTrainVolume], labeled_patients: int) -> list[str]:
    """The first N patients in order of first appearance (the SSL4MIS "N labeled cases")."""
    order = list(dict.fromkeys(volume.patient for volume in volumes))
    if not 1 <= labeled_patients <= len(order):
        raise DatasetImportError(
            f"--labeled-patients must be in 1..{len(order)} (the patients in train_slices.list), "
            f"got {labeled_patients}"
        )
    return order[:labeled_patients]


def import_acdc(
    root: str | os.PathLike,
    out: str | os.PathLike,
    labeled_patients: int = 3,
    overwrite: bool = False,
    progress: Progress = None,
) -> Path:
    """SSL4MIS ACDC (``train_slices.list``, ``val.list``, ``data/*.h5``) into a slice store.

    Labeled: the volumes of the first ``labeled_patients`` patients of ``train_slices.list``
    (3 -> 68 slices, 7 -> 136). All other train volumes are stored unlabeled, without their
    labels. The 20 volumes of ``val.list`` are stored as ``val``. Spacing is not in the files,
    so geometry is unit spacing with ``spacing_known=False``.
    """
    root = Path(root)
    volumes = read_acdc_train_volumes(root)
    labeled = set(acdc_labeled_patients(volumes, labeled_patients))
    val_ids = [volume_id for _, volume_id in _list_entries(root / "val.list")]
    total = len(volumes) + len(val_ids)
    _check_output_is_no_input(
        out,
        [root / "train_slices.list", root / "val.list"]
        + [root / "data" / f"{slice_id}.h5" for volume in volumes for slice_id in volume.slice_ids]
        + [root / "data" / f"{volume_id}.h5" for volume_id in val_ids],
    )
    with SliceStore.create(out, ACDC_CLASS_NAMES, Normalization(mode="minmax"), overwrite=overwrite) as store:
        for done, volume in enumerate(volumes, start=1):
            with_label = volume.patient in labeled
            image, label = _read_acdc_slices(root / "data", volume, with_label)
            source = str(root / "data" / f"{volume.volume_id}_slice_*.h5")
            split = "labeled" if with_label else "unlabeled"
            _add(store, source, volume.volume_id, image, label, None, split, "float32")
            _report(progress, done, total)
        for done, volume_id in enumerate(val_ids, start=len(volumes) + 1):
            path = root / "data" / f"{volume_id}.h5"
            image, label = _read_h5_pair(path, ndim=3, with_label=True)
            _add(store, path, volume_id, image, label, None, "val", "float32")
            _report(progress, done, total)
    return Path(out)


def _read_acdc_slices(
    folder: Path, volume: AcdcTrainVolume, with_label: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    images, labels = [], []
    for slice_id in volume.slice_ids:
        path = folder / f"{slice_id}.h5"
        image, label = _read_h5_pair(path, ndim=2, with_label=with_label)
        if images and image.shape != images[0].shape:
            raise DatasetImportError(
                f"{path}: slice shape {image.shape} differs from {images[0].shape} of its volume"
            )
        images.append(image)
        labels.append(label)
    label_volume = np.stack(labels) if with_label else None
    return np.stack(images), label_volume


def _read_h5_pair(path: Path, ndim: int, with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise DatasetImportError(f"{path}: file is missing")
    try:
        with h5py.File(path, "r") as file:
            link = foreign_link(file)
            if link is not None:  # HDF5 would read another file, anywhere on the disk
                raise DatasetImportError(f"{path}: {link}; a data set's file must hold its own data")
            image = _h5_numbers(file, "image", path).astype(np.float32)
            label = _h5_numbers(file, "label", path) if with_label else None
    except (OSError, KeyError) as error:
        raise DatasetImportError(f"{path}: cannot read image/label ({first_line(error)})") from None
    if image.ndim != ndim or (label is not None and label.shape != image.shape):
        found = f"image {image.shape}" + ("" if label is None else f", label {label.shape}")
        raise DatasetImportError(f"{path}: expected {ndim}D image and label of the same shape, got {found}")
    return image, label


def _h5_numbers(file: h5py.File, key: str, path: Path) -> np.ndarray:
    """``file[key]`` as real numbers: a group, strings or complex values there are no image."""
    item = file[key]
    if not isinstance(item, h5py.Dataset):
        raise DatasetImportError(f"{path}: {key!r} is a {type(item).__name__.lower()}, not an array")
    if item.dtype.kind not in "biuf":  # numpy would drop an imaginary part with only a warning
        raise DatasetImportError(f"{path}: {key!r} holds {item.dtype} values; real numbers are needed")
    return np.asarray(item[()])


# ------------------------------------------------------------------------------ SegTHOR
def import_segthor_png(
    root: str | os.PathLike,
    out: str | os.PathLike,
    labeled_patients: int = 3,
    overwrite: bool = False,
    progress: Progress = None,
) -> Path:
    """SegTHOR 2D PNG slices (``{train,val}/{img,gt}/Patient_XX_ZZZZ.png``) into a slice store.

    Each patient's slices ``z = 0..N-1`` are stacked into a [z, row, col] volume. Images are
    divided by 255; labels are ``gt // 63`` after checking that gt holds only 0, 63, 126, 189,
    252. Labeled: the first ``labeled_patients`` train patients in sorted id order; other
    train patients go in unlabeled, val patients as ``val``.

    Geometry: a PNG row runs along the original NIfTI x axis and a column along y (see the data
    README). Spacing is halved resolution (512 -> 256), so array axis ``col`` has spacing 2*dy,
    ``row`` 2*dx and z dz. The direction matrix swaps x and y, which maps the array axes back
    to the original volume axes. The original origin and direction are not available, so the
    origin is 0 and the axes are taken as the world axes.
    """
    root = Path(root)
    spacing_path = root / "spacing_original_mm.json"
    spacings = _read_json(spacing_path)
    train = _segthor_patients(root / "train" / "img")
    val = _segthor_patients(root / "val" / "img")
    order = sorted(train)
    if not 1 <= labeled_patients <= len(order):
        raise DatasetImportError(
            f"{root / 'train' / 'img'}: --labeled-patients must be in 1..{len(order)} (its patients), "
            f"got {labeled_patients}"
        )
    labeled = set(order[:labeled_patients])
    plan = [(p, "labeled" if p in labeled else "unlabeled", train[p]) for p in order]
    plan += [(p, "val", val[p]) for p in sorted(val)]
    read = [spacing_path, *(png for _, _, pngs in plan for png in pngs)]
    labeled_pngs = (png for _, split, pngs in plan if split != "unlabeled" for png in pngs)
    read += [png.parent.parent / "gt" / png.name for png in labeled_pngs]
    _check_output_is_no_input(out, read)
    with SliceStore.create(
        out, SEGTHOR_CLASS_NAMES, Normalization(mode="minmax"), overwrite=overwrite
    ) as store:
        for done, (patient, split, pngs) in enumerate(plan, start=1):
            if patient not in spacings:
                raise DatasetImportError(f"{spacing_path}: no spacing for {patient}")
            image = _stack_slices(pngs, _read_png).astype(np.float32) / np.float32(255)
            label = None
            if split != "unlabeled":
                label = _stack_segthor_labels(pngs)
            geometry = _segthor_geometry(spacings[patient], spacing_path)
            source = pngs[0].parent / f"{patient}_*.png"
            _add(store, source, patient, image, label, geometry, split, "uint8")
            _report(progress, done, len(plan))
    return Path(out)


def read_segthor_label(split_root: str | os.PathLike, patient: str) -> np.ndarray:
    """One patient's SegTHOR label volume from ``split_root/gt``, in the canonical layout the
    importer stores its image in: the labels of patients imported as unlabeled, for scoring on them."""
    slices = _segthor_patients(Path(split_root) / "img")
    if patient not in slices:
        raise DatasetImportError(f"{Path(split_root) / 'img'}: no slices of {patient}")
    (label,) = Reorientation.of(Geometry(direction=SEGTHOR_DIRECTION)).canonical_copies(
        _stack_segthor_labels(slices[patient])
    )
    return label


def _stack_segthor_labels(image_pngs: list[Path]) -> np.ndarray:
    """The ground truth of these image slices (same names under ../gt), stacked."""
    return _stack_slices([path.parent.parent / "gt" / path.name for path in image_pngs], _segthor_label)


def _segthor_patients(folder: Path) -> dict[str, list[Path]]:
    if not folder.is_dir():
        raise DatasetImportError(f"{folder}: folder is missing")
    slices: dict[str, dict[int, Path]] = {}
    for path in folder.glob("*.png"):
        match = _SEGTHOR_PNG.match(path.name)
        if match is None:
            raise DatasetImportError(f"{path}: name does not follow Patient_XX_ZZZZ.png")
        slices.setdefault(match["patient"], {})[int(match["z"])] = path
    patients = {}
    for patient, by_z in slices.items():
        if sorted(by_z) != list(range(len(by_z))):
            raise DatasetImportError(f"{folder}: slices of {patient} are not z = 0..{len(by_z) - 1}")
        patients[patient] = [by_z[z] for z in range(len(by_z))]
    return patients


def _stack_slices(paths: list[Path], read) -> np.ndarray:
    """One volume from 2D slices, which must all have the first slice's size."""
    slices = []
    for path in paths:
        array = read(path)
        if slices and array.shape != slices[0].shape:
            raise DatasetImportError(
                f"{path}: slice size {array.shape} differs from {slices[0].shape} of {paths[0].name}"
            )
        slices.append(array)
    return np.stack(slices)


def _read_png(path: Path) -> np.ndarray:
    try:
        require_utf8_path(path)
    except VolumeIOError as error:
        raise DatasetImportError(str(error)) from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise DatasetImportError(f"{path}: cannot read PNG ({first_line(error)})") from None
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() != 1 or array.ndim != 2 or array.dtype != np.uint8:
        raise DatasetImportError(f"{path}: expected an 8-bit grey PNG, got {array.dtype} {array.shape}")
    return array


def _segthor_label(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetImportError(f"{path}: ground-truth PNG is missing")
    gt = _read_png(path)
    values = np.unique(gt)
    bad = values[
        (values % SEGTHOR_GT_STEP != 0) | (values > SEGTHOR_GT_STEP * (len(SEGTHOR_CLASS_NAMES) - 1))
    ]
    if bad.size:
        raise DatasetImportError(
            f"{path}: unexpected ground-truth values {bad.tolist()} (allowed 0, 63, 126, 189, 252)"
        )
    return (gt // SEGTHOR_GT_STEP).astype(np.uint8)


# Array axes fastest first: PNG column = original y, PNG row = original x, then z.
SEGTHOR_DIRECTION = (0, 1, 0, 1, 0, 0, 0, 0, 1)


def _segthor_geometry(spacing_xyz: Sequence[float], spacing_path: Path) -> Geometry:
    try:
        dx, dy, dz = (float(value) for value in spacing_xyz)
        # Array axes fastest first: PNG column = original y, PNG row = original x, then z.
        return Geometry(spacing=(2 * dy, 2 * dx, dz), direction=SEGTHOR_DIRECTION)
    except (TypeError, ValueError) as error:
        raise DatasetImportError(
            f"{spacing_path}: bad spacing {spacing_xyz!r} ({first_line(error)})"
        ) from None


# ------------------------------------------------------------------------------- NIfTI
def import_nifti(
    images: Sequence[str | os.PathLike],
    labels: Sequence[str | os.PathLike] | None,
    unlabeled: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    normalization: Normalization | None = None,
    val_images: Sequence[str | os.PathLike] | None = None,
    val_labels: Sequence[str | os.PathLike] | None = None,
    overwrite: bool = False,
    progress: Progress = None,
    body_region: str = "",
) -> Path:
    """Image/label volume files (NIfTI, MHA, NRRD; whatever ``cgs_engine.io`` reads) into a store.

    ``images`` pair with ``labels`` by file name (``pt_1.nii.gz`` with ``pt_1.nii.gz``; an
    nnU-Net channel suffix ``_0000`` on the image is ignored), as do ``val_images`` with
    ``val_labels``. Each label must lie on its image's grid. ``normalization`` defaults to
    :func:`guess_normalization` of the first image. ``class_names`` default to background
    plus ``class_1..class_K`` for the largest label id K found.

    The store records the training scope (:mod:`cgs_engine.scope`) of the labeled and unlabeled
    images, measured on their raw intensities before normalisation, with ``body_region`` as
    its free-text body region; training copies it into the model.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise SliceStoreError(f"{out}: already exists; not replacing it without overwrite")
    plan = [(image, label, "labeled") for image, label in _pair_by_name(images, labels or [], "labels")]
    plan += [(Path(path), None, "unlabeled") for path in unlabeled]
    plan += [
        (image, label, "val")
        for image, label in _pair_by_name(val_images or [], val_labels or [], "val labels")
    ]
    if not plan:
        raise DatasetImportError(f"{out}: nothing to import (no images given)")
    _check_unique_names([image for image, _, _ in plan])
    _check_output_is_no_input(out, [path for image, label, _ in plan for path in (image, label) if path])
    label_paths = [label for _, label, _ in plan if label is not None]
    named_by_user = class_names is not None
    if class_names is None:
        class_names = _class_names_from_files(label_paths) or _default_class_names(label_paths, read_volume)
    receiver = derive_class_table(list(class_names))
    first = _read_scan(plan[0][0])
    guessed = normalization is None
    if normalization is None:
        normalization = guess_normalization(first.array)
    meter = ScopeMeter()
    seen: dict[str, tuple[Path, str]] = {}  # image fingerprint -> (first file, its split)
    with SliceStore.create(out, class_names, normalization, overwrite=overwrite) as store:
        for done, (image_path, label_path, split) in enumerate(plan, start=1):
            volume = first if done == 1 else _read_scan(image_path)
            if guessed and done > 1:
                _check_same_normalization(image_path, volume, plan[0][0], normalization)
            _check_not_in_two_splits(image_path, volume, split, seen)
            if split != "val":
                meter.add(volume)
            label = None
            if label_path is not None:
                label = read_volume(label_path, kind="labels")
                _check_same_grid(image_path, volume, label_path, label)
            normalised = normalization.apply(volume.array)
            # ids as the class file beside the map names them (another tool's or an export's
            # numbering), not taken as the store's own: Mandible 1 was stored as Brainstem
            label_array = (
                None if label is None else _in_store_classes(label, label_path, receiver, named_by_user)
            )
            _check_ids_in_classes(label_array, label_path, class_names)
            name = _volume_name(image_path)
            _add(
                store,
                image_path,
                name,
                normalised,
                label_array,
                volume.geometry,
                split,
                str(volume.array.dtype),
            )
            _report(progress, done, len(plan))
        if len(meter):
            store.set_scope(meter.scope(body_region).to_dict())
    return out


def _check_not_in_two_splits(path: Path, volume, split: str, seen: dict[str, tuple[Path, str]]) -> None:
    """One scan in two splits (a renamed copy of a training scan given as --val-images, a copy of a
    validation scan as --unlabeled): best.pt was then picked on a volume it was trained on."""
    # in the canonical layout the store keeps: the same scan saved in another axis order (x
    # reversed, the direction flipped to match) is the same voxels on the same world grid
    canonical, _ = canonical_volume(volume)
    array = np.asarray(canonical.array)
    # to 1 um: the canonical origin of a reversed axis is computed, not read, so it differs in
    # the last bits from the same origin as the other file stores it
    grid = {key: [round(v, 3) + 0.0 for v in values] for key, values in canonical.geometry.to_dict().items()}
    digest = hashlib.sha256(f"{array.shape}{sorted(grid.items())}".encode())
    # by value, not by byte: a copy saved as float32 of an int16 scan is the same scan
    sample = array.ravel()[:: max(1, array.size // 1_000_000)]
    digest.update(np.ascontiguousarray(sample, dtype=np.float64).tobytes())
    fingerprint = digest.hexdigest()
    earlier = seen.setdefault(fingerprint, (path, split))
    if earlier[1] != split and {earlier[1], split} & {"val"}:
        raise DatasetImportError(
            f"{path}: the same scan as {earlier[0]} ({earlier[1]}); a scan validated on must not be "
            "trained on: give it to one split only"
        )


def _check_same_normalization(path: Path, volume, first_path: Path, chosen: Normalization) -> None:
    """One store, one intensity normalisation, guessed from the first image: an MR imported beside
    CTs was windowed as CT (38 % of its voxels saturated) into the training data without a word."""
    own = guess_normalization(volume.array)
    if own.mode == chosen.mode:
        return
    if chosen.mode == "ct-window" and _soft_tissue_ct(volume.array):
        return  # a CT cropped to soft tissue (no air): see _soft_tissue_ct
    raise DatasetImportError(
        f"{path}: its intensities call for {own.describe()}, but {first_path.name} (the first image) "
        f"set {chosen.describe()} for the whole store (a CT and an MR together?); import them into "
        "separate stores, or choose --normalization for all"
    )


# A CT cropped to soft tissue, without air: some voxels below 0 HU (fat, or CSF and its noise in a
# brain crop) and a spread of tens of HU between tissues. A z-scored MR (values about -3 to 5) has
# no such spread, and a magnitude MR with a negative voxel or two left by resampling no such share;
# "any voxel below 0" let both be CT-windowed into the store.
# Its middle half lies where fat and soft tissue lie in HU (water is 0 by definition; fat about
# -100, organs and muscle 20-60): the TotalSegmentator example MR (values -47..833, 1.3 % below 0
# from resampling, 1st-99th percentile spread 660) passed the first two tests and was CT-windowed,
# 38 % of its voxels saturated; its middle half is 14..365.
MIN_NEGATIVE_SHARE = 0.005
MIN_HU_SPREAD = 30.0  # between the 1st and 99th percentile
SOFT_TISSUE_HU = (-200.0, 200.0)  # where the 25th and 75th percentiles of such a crop lie


def _soft_tissue_ct(array: np.ndarray) -> bool:
    flat = np.asarray(array).ravel()
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return False
    low, quarter, three_quarters, high = np.percentile(sample, [1, 25, 75, 99])
    return bool(
        np.mean(sample < 0) >= MIN_NEGATIVE_SHARE
        and high - low >= MIN_HU_SPREAD
        and SOFT_TISSUE_HU[0] <= quarter
        and three_quarters <= SOFT_TISSUE_HU[1]
    )


def _pair_by_name(
    images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike], what: str
) -> list[tuple[Path, Path]]:
    if images and not labels:
        raise DatasetImportError(
            f"{Path(images[0])}: labeled images need {what}; pass label-free images as unlabeled"
        )
    by_name: dict[str, Path] = {}
    for label in map(Path, labels):
        key = _volume_name(label)
        if key in by_name:
            raise DatasetImportError(f"{label}: a second label for volume {key!r} (first: {by_name[key]})")
        by_name[key] = label
    pairs = []
    for image in map(Path, images):
        key = _volume_name(image)
        label = by_name.pop(key, None) or by_name.pop(_NNUNET_CHANNEL.sub("", key), None)
        if label is None:
            raise DatasetImportError(f"{image}: no label file with the same name among the {what}")
        pairs.append((image, label))
    if by_name:
        leftover = next(iter(by_name.values()))
        raise DatasetImportError(f"{leftover}: label has no image with the same name")
    return pairs


def _check_unique_names(paths: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in paths:
        name = _volume_name(path)
        if name in seen:
            raise DatasetImportError(f"{path}: volume name {name!r} is already used by {seen[name]}")
        seen[name] = path


def _read_scan(path: Path):
    """An image to train on; a label map given in its place (an export saved beside the scans) is
    refused, as `cgs project add-unlabeled` refuses it: trained on, it is organ-shaped plateaus."""
    volume = read_volume(path, kind="image")
    problem = label_map_problem(volume.array)
    if problem is not None:
        raise DatasetImportError(f"{path}: {problem}")
    return volume


def _in_store_classes(label, label_path: Path, receiver, named_by_user: bool) -> np.ndarray:
    """The map's ids as the store's: renumbered by the class file beside it. A class file of another
    map (a prediction renamed to pair with its scan) is set aside where the user named the classes
    (--classes: the ids are theirs), as its message offers; without names it is refused."""
    try:
        return in_receiver_classes(label.array, label_path, receiver, "the store").labels
    except ForeignClassFileError:
        if named_by_user:
            return label.array
        raise


def _class_names_from_files(label_paths: Sequence[Path]) -> list[str] | None:
    """Without --classes: the organs the label maps' class files name, the first file's in id order
    and then those only later files name (a gap in the ids closes up; the maps are renumbered by
    name), or None when no map has one. Maps with and without class files cannot be told apart by
    organ: refused."""
    tables = {path: find_class_file(path) for path in label_paths}
    with_file = [path for path, record in tables.items() if record is not None]
    if not with_file:
        return None
    without = [path for path, record in tables.items() if record is None]
    if without:
        raise DatasetImportError(
            f"{without[0]}: has no class file beside it, but {tables[with_file[0]].name} names the organs "
            f"of {with_file[0].name}: its ids cannot be matched by organ; name the classes with --classes"
        )
    names: list[str] = ["background"]
    for path in with_file:
        for entry in read_class_file(tables[path]).table.entries:
            if same_organ(entry, derive_class_table(names)) is None:
                names.append(entry.name)
    return names


def _check_ids_in_classes(label: np.ndarray | None, label_path: Path, class_names: Sequence[str]) -> None:
    """Ids the class table has no name for, said of the label map (the store named the image)."""
    if label is None or not label.size:
        return
    outside = np.unique(label[label >= len(class_names)])
    if outside.size:
        shown = ", ".join(str(int(v)) for v in outside[:5]) + (", ..." if outside.size > 5 else "")
        raise DatasetImportError(
            f"{label_path}: label ids {shown} have no class (the classes are 0..{len(class_names) - 1}: "
            f"{', '.join(class_names[1:])}); name them with --classes"
        )


def _default_class_names(label_paths: Sequence[Path], read_volume) -> list[str]:
    largest = 1
    for path in label_paths:
        array = read_volume(path, kind="labels").array
        top = int(array.max()) if array.size else 0
        if top > MAX_STORE_ID:
            raise DatasetImportError(
                f"{path}: holds label id {top}; a store's ids run 0..{MAX_STORE_ID} (is it a label map?)"
            )
        largest = max(largest, top)
    return ["background"] + [f"class_{index}" for index in range(1, largest + 1)]


def _check_same_grid(image_path: Path, image, label_path: Path, label) -> None:
    if label.shape != image.shape:
        raise DatasetImportError(
            f"{label_path}: label shape {label.shape} differs from image shape {image.shape}"
        )
    if not label.geometry.is_close(image.geometry):
        raise DatasetImportError(
            f"{label_path}: label grid ({label.geometry.describe()}) differs from its image "
            f"{image_path.name} ({image.geometry.describe()})"
        )


def _volume_name(path: str | os.PathLike) -> str:
    return strip_image_suffix(Path(path).name)


# ------------------------------------------------------------------------------ shared
def _add(
    store: SliceStore,
    source: str | os.PathLike,
    name: str,
    image: np.ndarray,
    label: np.ndarray | None,
    geometry: Geometry | None,
    split: str,
    original_dtype: str,
) -> None:
    try:  # add_volume stores the canonical layout the network reads (cgs_engine.orientation)
        store.add_volume(
            name,
            image,
            label=label,
            geometry=geometry,
            split=split,
            source=str(source),
            original_dtype=original_dtype,
        )
    except SliceStoreError as error:
        raise DatasetImportError(f"{source}: {error}") from None


def _list_entries(path: Path) -> list[tuple[int, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise DatasetImportError(f"{path}: cannot read list ({first_line(error)})") from None
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetImportError(f"{path}: cannot read JSON ({first_line(error)})") from None
    if not isinstance(record, dict):
        raise DatasetImportError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def _check_output_is_no_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """``-o`` naming a file the import reads (or a link to one): with ``overwrite`` the store
    replaced it, a label map or a data set's slice became an HDF5 store. Refused before any work."""
    try:
        target = os.stat(out)
    except OSError:
        return  # nothing there yet, so nothing to replace
    for source in inputs:
        try:
            stat = os.stat(source)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) == (target.st_dev, target.st_ino):
            named = "" if str(source) == str(out) else f" ({source})"
            raise DatasetImportError(
                f"{out}: is one of this import's inputs{named}; -o must name another file"
            )


def _report(progress: Progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
