"""Hostile files and failed writes (issue 22), replayed by ``bench/hostile_inputs.py``.

Each case is a `cgs` command on a file made to break it: a full disk under every kind of write
(a real small tmpfs when run as root, else a file-size limit), detached headers naming files
outside their folder, pipes and devices, headers the image library would reinterpret (and valid
ones it must read exactly), damaged checkpoint metadata, hostile class tables, HDF5 stores with
external links, absurd tool parameters, and commands whose outputs could replace their inputs.

Each outcome is one of: clean error (exit 2, one line naming the problem), handled (exit 0, and
where the case says what is right, checked), traceback, crash, hang (every case is bounded), or
unclear. Besides, a case is counted when it changed a file that existed before, read outside
its input's folder, accepted a header with silently wrong geometry, or let raw library output
(ITK, niftilib, MetaIO, HDF5) through.

    python bench/hostile_files.py [--work /tmp/cgs-hostile-files]    # these cases alone
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
for helpers in (ROOT / "tests" / "engine", ROOT / "tests" / "reliability"):
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))

from file_makers import write_metaimage, write_nifti, write_nrrd  # noqa: E402

RAW_CHATTER = re.compile(
    r"WARNING: In |ERROR: In |\*\* ERROR|MetaImage:|MetaIO|HDF5-DIAG|Exception ignored|NiftiImageIO|nifti_|"
    r"itk::|GDCM|Traceback"
)
OUTCOMES = ("clean error", "handled", "traceback", "crash", "hang", "unclear")
FLAGS = (
    "changed existing file",
    "read outside",
    "wrong geometry",
    "raw library output",
    "wrongly refused",
    "output before refusal",
)


@dataclass
class Case:
    name: str
    group: str
    argv: list[str]
    expect: str = "error"  # "error": refusing is right; "ok": it must succeed; "either"
    child: bool = False  # run in a fresh process (it may hang or crash, or needs a small disk)
    check: Callable[[], str | None] | None = None  # after exit 0: None when the result is right
    check_always: Callable[[], str | None] | None = None  # after any outcome: None when right
    outside: bool = False  # an exit 0 would have read a file outside the input's folder
    wrong_geometry: bool = False  # an exit 0 would have accepted a reinterpreted header
    watch: list[Path] = field(default_factory=list)  # files that existed before and must not change
    target: Path | None = None  # the one watched file a successful run may replace (--overwrite)
    before: Callable[[], None] | None = None  # runs just before the command (fill the disk, ...)
    file_size_limit: int | None = None  # RLIMIT_FSIZE for the child: a short write without root
    timeout: float = 180.0


def ct(seed: int = 0, shape=(4, 16, 16), dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 0.1, shape).astype(dtype)


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def same_geometry_and_voxels(output: Path, array: np.ndarray, spacing, origin, direction) -> Callable:
    """A check: ``output`` holds ``array`` on exactly this geometry."""

    def check() -> str | None:
        image = sitk.ReadImage(str(output))
        got = sitk.GetArrayFromImage(image)
        if got.shape != array.shape or not np.allclose(got, array, rtol=1e-6, atol=1e-6):
            return "voxels differ"
        if not np.allclose(image.GetSpacing(), spacing, rtol=1e-5):
            return f"spacing {image.GetSpacing()} instead of {spacing}"
        if not np.allclose(image.GetOrigin(), origin, atol=1e-3):
            return f"origin {image.GetOrigin()} instead of {origin}"
        if not np.allclose(image.GetDirection(), np.ravel(direction), atol=1e-5):
            return "direction differs"
        return None

    return check


# ------------------------------------------------------------------------------------ the files
def detached_cases(folder: Path, model: Path) -> list[Case]:
    """Headers naming data files outside their folder, devices and pipes; inputs that are not files."""
    folder.mkdir(parents=True, exist_ok=True)
    outside = folder / "outside"
    outside.mkdir(exist_ok=True)
    inside = folder / "scans"
    inside.mkdir(exist_ok=True)
    array = np.zeros((4, 4, 4), np.uint8)
    secret = outside / "secret.raw"
    secret.write_bytes(bytes(range(64)))  # exactly the 64 voxels the headers ask for
    (inside / "link.raw").symlink_to(secret)
    (inside / "zero.raw").symlink_to("/dev/zero")
    os.mkfifo(inside / "pipe.raw")
    (inside / "folder.raw").mkdir(exist_ok=True)
    files = {
        "mhd data /etc/passwd": write_metaimage(inside / "passwd.mhd", array, "/etc/passwd"),
        "mhd data ../../etc/hostname": write_metaimage(
            inside / "up.mhd", array, "../../../../../../etc/hostname"
        ),
        "mhd data ../outside": write_metaimage(inside / "sibling.mhd", array, "../outside/secret.raw"),
        "mhd data symlink out": write_metaimage(inside / "link.mhd", array, "link.raw"),
        "mhd data /dev/urandom": write_metaimage(inside / "urandom.mhd", array, "/dev/urandom"),
        "mhd data symlink /dev/zero": write_metaimage(inside / "zero.mhd", array, "zero.raw"),
        "mhd data a folder": write_metaimage(inside / "folder.mhd", array, "folder.raw"),
        "mhd data LIST outside": _list_header(inside / "list.mhd", array),
        "mhd data pattern outside": write_metaimage(
            inside / "pattern.mhd", array, "../outside/slice%d.raw 1 4 1", ElementDataFile=None
        ),
        "nhdr data ../outside": write_nrrd(inside / "sibling.nhdr", array, "../outside/secret.raw"),
        "nhdr data absolute": write_nrrd(inside / "absolute.nhdr", array, str(secret)),
        "nhdr data /dev/urandom": write_nrrd(inside / "urandom.nhdr", array, "/dev/urandom"),
        "nhdr data LIST outside": _nrrd_list(inside / "list.nhdr", array),
    }
    for number in range(1, 5):
        (outside / f"slice{number}.raw").write_bytes(bytes(16))
    cases: list[Case] = []
    for name, path in files.items():
        for verb, argv in _readers(path, folder / "out", model, name):
            cases.append(Case(f"{verb} {name}", "detached header", argv, outside=True))
    (inside / "urandom.nii.gz").symlink_to("/dev/urandom")
    os.mkfifo(inside / "pipe.nii.gz")
    os.mkfifo(inside / "pipe.mha")
    piped = write_metaimage(inside / "pipe-data.mhd", array, "pipe.raw")
    for name, path in (
        ("/dev/urandom as a scan", Path("/dev/urandom")),
        ("symlink to /dev/urandom", inside / "urandom.nii.gz"),
        ("named pipe .nii.gz", inside / "pipe.nii.gz"),
        ("named pipe .mha", inside / "pipe.mha"),
        ("mhd data a named pipe", piped),
    ):
        for verb, argv in _readers(path, folder / "out", model, name):
            cases.append(Case(f"{verb} {name}", "not a file", argv, child=True, timeout=60))
    return cases


def _list_header(path: Path, array: np.ndarray) -> Path:
    from file_makers import metaimage_header

    text = metaimage_header(array, "LIST 2D") + "".join(f"../outside/slice{n}.raw\n" for n in range(1, 5))
    path.write_text(text)
    return path


def _nrrd_list(path: Path, array: np.ndarray) -> Path:
    from file_makers import nrrd_header

    text = nrrd_header(array, "LIST 2") + "".join(f"../outside/slice{n}.raw\n" for n in range(1, 5))
    path.write_text(text)
    return path


def _readers(path: Path, out: Path, model: Path, name: str) -> list[tuple[str, list[str]]]:
    safe = re.sub(r"[^A-Za-z0-9]+", "_", name)
    return [
        ("info", ["info", str(path)]),
        ("convert", ["convert", str(path), str(out / f"{safe}.nii.gz")]),
        ("predict", ["predict", str(model), str(path), "-o", str(out / f"pred_{safe}")]),
    ]


def header_cases(folder: Path) -> list[Case]:
    """Headers the reader would reinterpret (refused) and unusual but valid ones (read exactly)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    out.mkdir(exist_ok=True)
    a = ct(3, (4, 6, 8))
    shear = ((1.0, 0.5, 0, 0), (0, 1.0, 0, 0), (0, 0, 1.0, 0))
    refused = {
        "nii sheared sform, valid qform": write_nifti(folder / "shear.nii", a, srow=shear),
        "nii sheared sform only": write_nifti(folder / "shear-only.nii", a, srow=shear, qform_code=0),
        "nii.gz sheared sform": write_nifti(folder / "shear.nii.gz", a, srow=shear),
        "nii vox_offset 0": write_nifti(folder / "vox0.nii", a, vox_offset=0.0),
        "nii vox_offset NaN": write_nifti(folder / "voxnan.nii", a, vox_offset=float("nan")),
        "nii vox_offset 352.5": write_nifti(folder / "voxhalf.nii", a, vox_offset=352.5),
        "nii vox_offset 200": write_nifti(folder / "vox200.nii", a, vox_offset=200.0),
        "nii dim[3] = 0": write_nifti(folder / "dim0.nii", a, dims=(3, 8, 6, 0, 1, 1, 1, 1)),
        "nii dim[0] = 9": write_nifti(folder / "dim9.nii", a, dims=(9, 8, 6, 4, 1, 1, 1, 1)),
        "nii dim[2] = -6": write_nifti(folder / "dimneg.nii", a, dims=(3, 8, -6, 4, 1, 1, 1, 1)),
        "nii pixdim 0": write_nifti(folder / "pix0.nii", a, pixdim=(1, 0.0, 1, 1, 0, 0, 0, 0), sform_code=0),
        "nii pixdim NaN": write_nifti(folder / "pixnan.nii", a, pixdim=(1, 1, float("nan"), 1, 0, 0, 0, 0)),
        "nii pixdim inf": write_nifti(folder / "pixinf.nii", a, pixdim=(1, 1, 1, float("inf"), 0, 0, 0, 0)),
        "nii pixdim -2": write_nifti(
            folder / "pixneg.nii", a, pixdim=(1, -2, 1, 1, 0, 0, 0, 0), sform_code=0
        ),
        "nii quaternion longer than 1": write_nifti(
            folder / "quat.nii", a, quatern=(0.9, 0.9, 0), sform_code=0
        ),
        "nii qform and sform disagree": write_nifti(
            folder / "qs.nii", a, srow=((1.0, 0, 0, 50), (0, 1.0, 0, 0), (0, 0, 1.0, 0))
        ),
        "nii sform sizes vs pixdim": write_nifti(
            folder / "sizes.nii", a, qform_code=0, pixdim=(1, 2, 2, 2, 0, 0, 0, 0)
        ),
        "nii scl_slope NaN": write_nifti(folder / "slopenan.nii", a, scl_slope=float("nan")),
        "nii scl_slope 0, scl_inter 5": write_nifti(folder / "slope0.nii", a, scl_slope=0.0, scl_inter=5.0),
        "nii bitpix vs datatype": write_nifti(folder / "bitpix.nii", a, bitpix=16),
        "nii unknown datatype": write_nifti(folder / "dtype.nii", a, datatype=3),
        "nii two-file magic ni1": write_nifti(folder / "ni1.nii", a, magic=b"ni1\x00"),
        "nii sform NaN": write_nifti(
            folder / "snan.nii", a, srow=((float("nan"), 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0))
        ),
        "nii qform_code 99": write_nifti(folder / "code99.nii", a, qform_code=99),
        "mha TransformMatrix sheared": write_metaimage(
            folder / "shear.mha", a, TransformMatrix="1 0.5 0 0 1 0 0 0 1"
        ),
        "mha TransformMatrix scaled": write_metaimage(
            folder / "scaled.mha", a, TransformMatrix="2 0 0 0 2 0 0 0 2"
        ),
        "mha Offset nan": write_metaimage(folder / "offnan.mha", a, Offset="nan 0 0"),
        "mha ElementSpacing 0": write_metaimage(folder / "sp0.mha", a, ElementSpacing="0 1 1"),
        "mha ElementSpacing nan": write_metaimage(folder / "spnan.mha", a, ElementSpacing="1 nan 1"),
        "mha ElementSpacing -1": write_metaimage(folder / "spneg.mha", a, ElementSpacing="1 1 -1"),
        "mha DimSize 0": write_metaimage(folder / "dim0.mha", a, DimSize="8 6 0"),
        "mha DimSize two values": write_metaimage(folder / "dim2.mha", a, DimSize="8 6"),
        "mha two origins": write_metaimage(folder / "origins.mha", a, Origin="5 5 5"),
        "mha ElementType bogus": write_metaimage(folder / "etype.mha", a, ElementType="MET_BOGUS"),
        "mhd.gz offset inf": write_metaimage(folder / "offinf.mha", a, compress=True, Offset="0 inf 0"),
        "nrrd spacing nan": write_nrrd(
            folder / "spnan.nrrd", a, **{"space directions": None, "spacings": "1 nan 1"}
        ),
        "nrrd spacing 0": write_nrrd(
            folder / "sp0.nrrd", a, **{"space directions": None, "spacings": "0 1 1"}
        ),
        "nrrd directions sheared": write_nrrd(
            folder / "shear.nrrd", a, **{"space directions": "(1,0,0) (0.5,1,0) (0,0,1)"}
        ),
        "nrrd direction zero": write_nrrd(
            folder / "zero.nrrd", a, **{"space directions": "(0,0,0) (0,1,0) (0,0,1)"}
        ),
        "nrrd origin nan": write_nrrd(folder / "orgnan.nrrd", a, **{"space origin": "(nan,0,0)"}),
        "nrrd sizes 0": write_nrrd(folder / "size0.nrrd", a, sizes="8 6 0"),
        "nrrd spacings and directions": write_nrrd(folder / "both.nrrd", a, spacings="2 2 2"),
        "nrrd unknown encoding": write_nrrd(folder / "enc.nrrd", a, encoding="rot13"),
    }
    cases = []
    for name, path in refused.items():
        safe = re.sub(r"[^A-Za-z0-9]+", "_", name)
        cases.append(Case(f"info {name}", "header reinterpreted", ["info", str(path)], wrong_geometry=True))
        cases.append(
            Case(
                f"convert {name}",
                "header reinterpreted",
                ["convert", str(path), str(out / f"{safe}.nii.gz")],
                wrong_geometry=True,
            )
        )
    cases += valid_header_cases(folder, out)
    return cases


def valid_header_cases(folder: Path, out: Path) -> list[Case]:
    """Valid files that must read exactly: the geometry the header states, the voxels it holds."""
    from file_makers import geometry_fields_for_nifti

    cases = []
    counts = np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8) - 100
    scaled = write_nifti(folder / "scaled_int16.nii", counts, scl_slope=0.5, scl_inter=-1024.0)
    cases.append(
        _valid(
            "int16 .nii with scl_slope/scl_inter",
            scaled,
            out,
            counts.astype(np.float32) * 0.5 - 1024,
            (1, 1, 1),
            (0, 0, 0),
            np.diag([-1, -1, 1.0]),
        )
    )
    rotation = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]) @ _rotation_x(17)
    spacing, origin = (0.8, 1.25, 3.0), (-100.0, 42.5, 7.0)
    a = ct(4, (4, 6, 8))
    fields = geometry_fields_for_nifti(spacing, origin, rotation.ravel())
    oblique = write_nifti(folder / "oblique.nii.gz", a, **fields)
    cases.append(_valid("oblique qform = sform .nii.gz", oblique, out, a, spacing, origin, rotation))
    sform_only = write_nifti(folder / "oblique_sform.nii", a, **{**fields, "qform_code": 0})
    cases.append(_valid("oblique sform only .nii", sform_only, out, a, spacing, origin, rotation))
    late = write_nifti(folder / "late.nii", a, **{**fields, "vox_offset": 1024.0})
    cases.append(_valid("vox_offset 1024 .nii", late, out, a, spacing, origin, rotation))
    matrix = " ".join(f"{v:.17g}" for v in rotation.T.ravel())
    mha = write_metaimage(
        folder / "oblique.mha",
        a,
        TransformMatrix=matrix,
        Offset=" ".join(map(str, origin)),
        ElementSpacing=" ".join(map(str, spacing)),
    )
    cases.append(_valid("oblique .mha", mha, out, a, spacing, origin, rotation))
    mhd = write_metaimage(
        folder / "oblique.mhd",
        a,
        "oblique.zraw",
        compress=True,
        TransformMatrix=matrix,
        Offset=" ".join(map(str, origin)),
        ElementSpacing=" ".join(map(str, spacing)),
    )
    cases.append(_valid("oblique .mhd + zlib data file", mhd, out, a, spacing, origin, rotation))
    vectors = " ".join(
        "(" + ",".join(f"{v:.17g}" for v in rotation[:, i] * spacing[i]) + ")" for i in range(3)
    )
    nrrd = write_nrrd(
        folder / "oblique.nrrd",
        a,
        encoding="gzip",
        **{"space directions": vectors, "space origin": "(" + ",".join(map(str, origin)) + ")"},
    )
    cases.append(_valid("oblique .nrrd gzip", nrrd, out, a, spacing, origin, rotation))
    ras = np.diag([-1.0, -1, 1]) @ rotation
    ras_vectors = " ".join(
        "(" + ",".join(f"{v:.17g}" for v in ras[:, i] * spacing[i]) + ")" for i in range(3)
    )
    ras_origin = np.diag([-1.0, -1, 1]) @ np.asarray(origin)
    nhdr = write_nrrd(
        folder / "oblique_ras.nhdr",
        a,
        "oblique_ras.raw",
        space="right-anterior-superior",
        **{"space directions": ras_vectors, "space origin": "(" + ",".join(map(str, ras_origin)) + ")"},
    )
    cases.append(_valid("oblique RAS .nhdr + raw data file", nhdr, out, a, spacing, origin, rotation))
    return cases


def _rotation_x(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def _valid(name, path, out, array, spacing, origin, direction) -> Case:
    target = out / (re.sub(r"[^A-Za-z0-9]+", "_", name) + ".nii.gz")
    check = same_geometry_and_voxels(target, array, spacing, origin, direction)
    return Case(
        f"convert {name}", "valid header", ["convert", str(path), str(target)], expect="ok", check=check
    )


def checkpoint_cases(folder: Path, model: Path, scan: Path) -> list[Case]:
    """Checkpoints whose weights or metadata are wrong, some with a recomputed checksum."""
    from cgs_engine.checkpoint import weights_digest

    folder.mkdir(parents=True, exist_ok=True)
    original = torch.load(model, weights_only=True)

    def variant(name: str, change: Callable[[dict], None], rehash: bool = True) -> Path:
        payload = {**original, "state_dict": {k: v.clone() for k, v in original["state_dict"].items()}}
        change(payload)
        if rehash and isinstance(payload.get("state_dict"), dict):
            with contextlib.suppress(Exception):
                payload["weights_sha256"] = weights_digest(payload["state_dict"])
        path = folder / f"{name}.pt"
        torch.save(payload, path)
        return path

    def poison(value: float) -> Callable[[dict], None]:
        def change(payload: dict) -> None:
            key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
            payload["state_dict"][key].view(-1)[0] = value

        return change

    def setter(key: str, value) -> Callable[[dict], None]:
        def change(payload: dict) -> None:
            payload[key] = value

        return change

    def nested(key: str, inner: str, value) -> Callable[[dict], None]:
        def change(payload: dict) -> None:
            payload[key] = {**payload[key], inner: value}

        return change

    colors = original.get("class_colors") or [[0, 0, 0]] * len(original["class_names"])
    bad_table = [{"id": 1, "name": "big", "tg263": {"x": 1}}]
    variants = {
        "NaN weights, checksum recomputed": variant("nan", poison(float("nan"))),
        "inf weights, checksum recomputed": variant("inf", poison(float("inf"))),
        "unknown normalisation mode": variant("norm", nested("normalization", "mode", "zscore-ish")),
        "normalisation not a table": variant("normtype", setter("normalization", "ct-window")),
        "string spacing in the scope": variant("spacing", setter("scope", {"spacing_mm": "1 x 1 mm"})),
        "string window in the normalisation": variant(
            "window", nested("normalization", "window_width", "400")
        ),
        "future format version": variant("future", setter("format_version", 99)),
        "format version as text": variant("version_text", setter("format_version", "2")),
        "negative width": variant("width", nested("model_config", "widths", [-4, 8, 16])),
        "zero classes": variant("classes0", nested("model_config", "num_classes", 0)),
        "colours above 255": variant("colors", setter("class_colors", [[300, 0, 0]] + colors[1:])),
        "colours below 0": variant("colors_neg", setter("class_colors", [[-1, 0, 0]] + colors[1:])),
        "colours as text": variant("colors_text", setter("class_colors", ["red"] * len(colors))),
        "class names as numbers": variant(
            "names", setter("class_names", list(range(len(original["class_names"]))))
        ),
        "class table with a tg263 object": variant("table", setter("class_table", bad_table)),
        "input size as text": variant("size", setter("input_size", "32")),
        "metrics not a table": variant("metrics", setter("metrics", [1, 2])),
        "train_config not a table": variant("train_config", setter("train_config", "fast")),
    }
    cases = []
    project_root = folder / "projects"
    project_root.mkdir(exist_ok=True)
    for name, path in variants.items():
        cases.append(
            Case(
                f"predict {name}", "checkpoint", ["predict", str(path), str(scan), "-o", str(folder / "out")]
            )
        )
        target = project_root / re.sub(r"[^A-Za-z0-9]+", "_", name)
        cases.append(
            Case(
                f"project create {name}",
                "checkpoint",
                ["project", "create", str(target), "--base-model", str(path)],
            )
        )
    return cases


def class_table_cases(folder: Path) -> list[Case]:
    """Class tables (``*_classes.json``) with wrong types and absurd sizes, read by evaluate,
    review, edit and seg export."""
    from dicom_cases import make_series

    folder.mkdir(parents=True, exist_ok=True)
    series_folder = folder / "series"
    _, labels = make_series("head_first", series_folder)
    from cgs_engine.io import write_volume

    tables = {
        "tg263 object": [{"id": 1, "name": "Brainstem", "tg263": {"name": "x"}}],
        "integer names": [{"id": 1, "name": 5}, {"id": 2, "name": 6}],
        "id as text": [{"id": "one", "name": "Brainstem"}],
        "id 1.5": [{"id": 1.5, "name": "Brainstem"}],
        "colour out of range": [{"id": 1, "name": "Brainstem", "color": [300, -4, 0]}],
        "snomed as text": [{"id": 1, "name": "Brainstem", "tg263": "Brainstem", "snomed": "119238007"}],
        "classes not a list": {"classes": "Brainstem"},
        "100,000 entries": [{"id": i, "name": f"organ{i}"} for i in range(1, 100_001)],
    }
    cases = []
    for name, table in tables.items():
        safe = re.sub(r"[^A-Za-z0-9]+", "_", name)
        case_folder = folder / safe
        case_folder.mkdir(exist_ok=True)
        labels_path = case_folder / "scan_labels.nii.gz"
        write_volume(labels, labels_path, overwrite=True)
        data = table if isinstance(table, dict) else {"classes": [{"id": 0, "name": "background"}, *table]}
        table_path = case_folder / "scan_classes.json"
        table_path.write_text(json.dumps(data))
        gt = case_folder / "gt"
        gt.mkdir(exist_ok=True)
        write_volume(labels, gt / "scan_labels.nii.gz", overwrite=True)
        cases += [
            Case(
                f"seg export, table {name}",
                "class table",
                [
                    "seg",
                    "export",
                    str(labels_path),
                    "--dicom",
                    str(series_folder),
                    "-o",
                    str(case_folder / "seg.dcm"),
                ],
                timeout=120,
                child=name == "100,000 entries",
            ),
            Case(
                f"rtstruct export --classes, table {name}",
                "class table",
                [
                    "rtstruct",
                    "export",
                    str(labels_path),
                    "--dicom",
                    str(series_folder),
                    "--classes",
                    str(table_path),
                    "-o",
                    str(case_folder / "rs.dcm"),
                ],  # fmt: skip
                timeout=120,
                child=name == "100,000 entries",
            ),
            Case(
                f"evaluate, table {name}",
                "class table",
                ["evaluate", "--pred", str(case_folder), "--gt", str(gt)],
                expect="either",
            ),
            Case(
                f"edit --class by name, table {name}",
                "class table",
                [
                    "edit",
                    "keep-largest",
                    str(labels_path),
                    "--class",
                    "Brainstem",
                    "-o",
                    str(case_folder / "e.nii.gz"),
                ],
                expect="either",
            ),
        ]
    return cases


def store_and_train_cases(folder: Path, store: Path, labels: Path) -> list[Case]:
    """Training stores with HDF5 external links, resumed runs with empty settings, bad settings,
    and segment-editor tools with parameters beyond any volume."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = folder / "linked.h5"
    shutil.copy(store, linked)
    (folder / "elsewhere").mkdir(exist_ok=True)
    with h5py.File(folder / "elsewhere" / "other.h5", "w") as other:
        other.create_dataset("image", data=np.zeros((4, 32, 32), np.float32))
    with h5py.File(linked, "r+") as file:
        name = next(iter(file["volumes"]))
        del file["volumes"][name]["image"]
        file["volumes"][name]["image"] = h5py.ExternalLink("elsewhere/other.h5", "/image")
    soft = folder / "softlink.h5"
    shutil.copy(store, soft)
    with h5py.File(soft, "r+") as file:
        name = next(iter(file["volumes"]))
        file["volumes"]["loop"] = h5py.SoftLink(f"/volumes/{name}")
    cases = [
        Case(
            "train store with an HDF5 external link",
            "store",
            ["train", str(linked), "-o", str(folder / "r1"), "--iterations", "1"],
            outside=True,
        ),
        Case(
            "train store with an HDF5 soft link",
            "store",
            ["train", str(soft), "-o", str(folder / "r1s"), "--iterations", "1"],
        ),
    ]
    resumes = (("{}", "{}"), ("[]", "[]"), ('"fast"', "text"), ('{"config": {"lr": -1}}', "lr -1"))
    for number, (content, tag) in enumerate(resumes):
        run = folder / f"resume-{number}"
        run.mkdir(exist_ok=True)
        (run / "config.json").write_text(content)
        (run / "state.pt").write_bytes(b"")
        cases.append(
            Case(
                f"train --resume, config.json {tag}",
                "store",
                ["train", str(store), "-o", str(run), "--resume"],
            )
        )
    for content, tag in (
        ('{"lr": -1}', "lr -1"),
        ('{"lr": "fast"}', "lr text"),
        ('{"batch_labeled": 1e9}', "batch 1e9"),
        ("[1, 2]", "a list"),
    ):
        config = folder / f"config-{re.sub(r'[^a-z0-9]+', '', tag)}.json"
        config.write_text(content)
        cases.append(
            Case(
                f"train --config {tag}",
                "store",
                [
                    "train",
                    str(store),
                    "-o",
                    str(folder / f"c-{config.stem}"),
                    "--config",
                    str(config),
                    "--iterations",
                    "1",
                ],
            )
        )
    out = folder / "edits"
    out.mkdir(exist_ok=True)
    for tool, option, value in (
        ("smooth", "--mm", "1e9"), ("grow", "--mm", "1e9"), ("shrink", "--mm", "1e9"),
        ("smooth", "--mm", "nan"), ("grow", "--mm", "-3"), ("smooth", "--mm", "inf"),
        ("remove-islands", "--ml", "1e300"), ("remove-islands", "--ml", "nan"),
    ):  # fmt: skip
        target = out / f"{tool}-{value}.nii.gz"
        cases.append(
            Case(
                f"edit {tool} {option} {value}",
                "tool parameter",
                ["edit", tool, str(labels), "--class", "1", option, value, "-o", str(target)],
                expect="either",
                timeout=120,
            )
        )
    for case in cases:  # a regression here allocates without bound: keep it out of this process
        case.child = True
    return cases


def output_cases(folder: Path, model: Path, scan: Path) -> list[Case]:
    """Commands whose outputs could be read as inputs or replace them."""
    folder.mkdir(parents=True, exist_ok=True)
    scans = folder / "scans"
    scans.mkdir(exist_ok=True)
    shutil.copy(scan, scans / "a.nii.gz")
    second = [
        "predict", str(model), str(scans), "-o", str(scans), "--maps", "--overwrite",
    ]  # fmt: skip

    def no_outputs_of_outputs() -> str | None:
        names = sorted(p.name for p in scans.iterdir())
        nested = [
            n
            for n in names
            if "_labels_" in n or "_map_" in n and n.count("_map_") > 1 or "disagreement_" in n
        ]
        return f"segmented its own outputs: {nested[:3]}" if nested else None

    cases = [
        Case("predict DIR -o DIR --maps, first run", "own outputs", second[:-1], expect="ok"),
        Case(
            "predict DIR -o DIR --maps, second run",
            "own outputs",
            second[:-1],
            expect="either",
            check=no_outputs_of_outputs,
        ),
        Case(
            "predict DIR -o DIR --maps --overwrite, third run",
            "own outputs",
            second,
            expect="either",
            check=no_outputs_of_outputs,
        ),
    ]
    pred, gt = folder / "pred", folder / "gt"
    for path in (pred, gt):
        path.mkdir(exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8)), str(path / "a.nii.gz"))
    cases.append(
        Case(
            "evaluate --json onto its own reference --overwrite",
            "own outputs",
            ["evaluate", "--pred", str(pred), "--gt", str(gt), "--json", str(gt / "a.nii.gz"), "--overwrite"],
            watch=[gt / "a.nii.gz"],
        )
    )
    cases.append(
        Case(
            "evaluate --json onto its own prediction --overwrite",
            "own outputs",
            [
                "evaluate",
                "--pred",
                str(pred),
                "--gt",
                str(gt),
                "--json",
                str(pred / "a.nii.gz"),
                "--overwrite",
            ],
            watch=[pred / "a.nii.gz"],
        )
    )
    maps = folder / "maps"
    maps.mkdir(exist_ok=True)
    disagreement = maps / "a_disagreement.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8)), str(disagreement))
    cases.append(
        Case(
            "review --json onto its own input --overwrite",
            "own outputs",
            ["review", str(disagreement), "--json", str(disagreement), "--overwrite"],
            watch=[disagreement],
        )
    )
    mixed = folder / "mixed"
    mixed.mkdir(exist_ok=True)
    shutil.copy(scan, mixed / "a_good.nii.gz")
    data = (mixed / "a_good.nii.gz").read_bytes()
    (mixed / "b_bad.nii.gz").write_bytes(data[: len(data) // 2])
    mixed_out = folder / "mixed_out"

    def nothing_written() -> str | None:
        written = sorted(p.name for p in mixed_out.iterdir()) if mixed_out.exists() else []
        return f"wrote {written} before refusing" if written else None

    cases.append(
        Case(
            "predict a good then a damaged scan",
            "all inputs first",
            [
                "predict",
                str(model),
                str(mixed / "a_good.nii.gz"),
                str(mixed / "b_bad.nii.gz"),
                "-o",
                str(mixed_out),
            ],
            check_always=nothing_written,
        )
    )
    return cases


# ------------------------------------------------------------------------------- the full disk
def full_disk_cases(folder: Path, model: Path, store: Path, scan: Path, labels: Path) -> list[Case]:
    """Every kind of write onto a disk that is full (tmpfs, as root) or a file-size limit."""
    small = folder / "small-disk"
    small.mkdir(parents=True, exist_ok=True)
    mounted = _mount_small_disk(small)
    limit = None if mounted else 6000
    existing = small / "old.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ct(9, (2, 16, 16))), str(existing))
    old_mha = small / "old.mha"
    sitk.WriteImage(sitk.GetImageFromArray(ct(9, (2, 16, 16))), str(old_mha))
    old_json = small / "old.json"
    old_json.write_text('{"keep": true}\n')
    big_scan = folder / "big.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ct(1, (48, 96, 96))), str(big_scan))
    big_labels = folder / "big_labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray((ct(1, (48, 96, 96)) > 0.3).astype(np.uint8)), str(big_labels))
    pred_gt = folder / "eval"
    for sub in ("pred", "gt"):
        (pred_gt / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(big_labels, pred_gt / sub / "a.nii.gz")
    fill = (lambda: _fill(small, keep=4096)) if mounted else None
    watch = [existing, old_mha, old_json]
    cases = [
        Case(
            "convert .nii.gz over an existing file",
            "full disk",
            ["convert", str(big_scan), str(existing), "--overwrite"],
        ),
        Case(
            "convert .nii (uncompressed) new file",
            "full disk",
            ["convert", str(big_scan), str(small / "new.nii")],
        ),
        Case(
            "convert .mha over an existing file",
            "full disk",
            ["convert", str(big_scan), str(old_mha), "--overwrite"],
        ),
        Case("convert .nhdr new file", "full disk", ["convert", str(big_scan), str(small / "new.nhdr")]),
        Case(
            "convert --labels .nrrd new file",
            "full disk",
            ["convert", "--labels", str(big_labels), str(small / "l.nrrd")],
        ),
        Case(
            "edit smooth onto a full disk",
            "full disk",
            ["edit", "smooth", str(big_labels), "--class", "1", "--mm", "2", "-o", str(small / "e.nii.gz")],
        ),
        Case(
            "predict --maps onto a full disk",
            "full disk",
            ["predict", str(model), str(big_scan), "-o", str(small / "pred"), "--maps"],
        ),
        Case(
            "evaluate --json over an existing file",
            "full disk",
            [
                "evaluate",
                "--pred",
                str(pred_gt / "pred"),
                "--gt",
                str(pred_gt / "gt"),
                "--json",
                str(old_json),
                "--overwrite",
            ],
        ),
        Case(
            "import nifti store onto a full disk",
            "full disk",
            [
                "import",
                "nifti",
                "--images",
                str(big_scan),
                "--labels",
                str(_paired_labels(folder, big_scan, big_labels)),
                "-o",
                str(small / "s.h5"),
            ],
        ),
        Case(
            "train onto a full disk",
            "full disk",
            ["train", str(store), "-o", str(small / "run"), "--iterations", "2", "--size", "32"],
        ),
        Case(
            "project create onto a full disk",
            "full disk",
            ["project", "create", str(small / "p"), "--base-model", str(model)],
        ),
    ]
    for case in cases:
        case.child, case.before, case.file_size_limit, case.watch = True, fill, limit, watch
        case.target = next((path for path in watch if str(path) in case.argv), None)
        case.timeout = 300
    project = folder / "project-on-small-disk"
    if mounted:
        project = small / "project"
        cases.append(_project_case(project, model, scan, labels, "retrain onto a full disk", fill))
        cases.append(_project_case(project, model, scan, labels, "add-correction onto a full disk", fill))
    return cases


def _project_case(project: Path, model: Path, scan: Path, labels: Path, name: str, fill) -> Case:
    def before() -> None:
        (project.parent / "filler").unlink(missing_ok=True)
        if not project.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cgs_engine",
                    "project",
                    "create",
                    str(project),
                    "--base-model",
                    str(model),
                ],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cgs_engine",
                    "project",
                    "add-correction",
                    str(project),
                    "--image",
                    str(scan),
                    "--labels",
                    str(labels),
                ],
                check=True,
                capture_output=True,
            )
        fill()

    if name.startswith("retrain"):
        argv = ["retrain", str(project), "--iterations", "3"]
    else:
        argv = [
            "project",
            "add-correction",
            str(project),
            "--image",
            str(scan),
            "--labels",
            str(labels),
            "--name",
            "second",
        ]
    case = Case(name, "full disk", argv, child=True, before=before, timeout=300)
    case.watch = []  # the project's files are snapshotted separately (see run_cases)
    case.project = project  # type: ignore[attr-defined]
    return case


def _paired_labels(folder: Path, scan: Path, labels: Path) -> Path:
    target = folder / "paired" / scan.name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(labels, target)
    return target


def _mount_small_disk(folder: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    if os.path.ismount(folder):
        return True
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    return result.returncode == 0


def _fill(folder: Path, keep: int) -> None:
    """Leave about ``keep`` bytes free on ``folder``'s file system."""
    filler = folder / "filler"
    filler.unlink(missing_ok=True)
    info = os.statvfs(folder)
    free = info.f_bavail * info.f_frsize - keep
    if free > 0:
        with open(filler, "wb") as stream, contextlib.suppress(OSError):
            stream.write(b"\0" * free)


def unmount_small_disk(work: Path) -> None:
    small = work / "files" / "disk" / "small-disk"
    if os.path.ismount(small):
        subprocess.run(["umount", str(small)], capture_output=True)


# ------------------------------------------------------------------------------------ running
def run_in_process(argv: list[str]) -> tuple[str, int | None, str, str]:
    """(outcome, exit code, last line, everything on stderr, C-level output included)."""
    from cgs_engine.cli.main import main

    python_err = io.StringIO()
    with tempfile.TemporaryFile() as native:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        try:
            with contextlib.redirect_stderr(python_err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 2
        except BaseException as error:  # noqa: BLE001 - this is what the benchmark counts
            os.dup2(saved, 2)
            os.close(saved)
            return "traceback", None, f"{type(error).__name__}: {error}".splitlines()[0], ""
        os.dup2(saved, 2)
        os.close(saved)
        native.seek(0)
        text = native.read().decode("utf-8", "replace") + python_err.getvalue()
    return _classify(code, text)


def run_child(case: Case) -> tuple[str, int | None, str, str]:
    def limits() -> None:
        if case.file_size_limit:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write, not a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.file_size_limit, case.file_size_limit))

    try:
        result = subprocess.run(
            [sys.executable, "-m", "cgs_engine", *case.argv],
            capture_output=True,
            timeout=case.timeout,
            preexec_fn=limits,
        )
    except subprocess.TimeoutExpired:
        return "hang", None, f"no answer in {case.timeout:.0f} s", ""
    text = result.stderr.decode("utf-8", "replace")
    if result.returncode < 0:
        return "crash", result.returncode, f"signal {-result.returncode}", text
    return _classify(result.returncode, text)


def _classify(code, text: str) -> tuple[str, int | None, str, str]:
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "Traceback (most recent call last)" in text:
        return "traceback", code, last, text
    errors = [line for line in lines if ": error: " in line]
    if code == 2 and len(errors) == 1 and last == errors[0]:
        return "clean error", code, last, text
    if code == 0:
        return "handled", code, last, text
    return "unclear", code, last, text


def snapshot(paths: list[Path]) -> dict[str, str | None]:
    return {str(path): digest(path) for path in paths}


def project_snapshot(project: Path | None) -> dict[str, str | None]:
    if project is None or not project.exists():
        return {}
    return {str(p): digest(p) for p in sorted(project.rglob("*")) if p.is_file() and "runs" not in p.parts}


def run_cases(cases: list[Case], always_watch: list[Path]) -> list[dict]:
    rows = []
    for case in cases:
        if case.before is not None:
            case.before()
        project = getattr(case, "project", None)
        before = snapshot(case.watch + always_watch), project_snapshot(project)
        started = time.perf_counter()
        outcome, code, line, text = run_child(case) if case.child else run_in_process(case.argv)
        seconds = time.perf_counter() - started
        after = snapshot(case.watch + always_watch), project_snapshot(project)
        flags = []
        changed = {k for k, v in before[0].items() if after[0].get(k) != v}
        if outcome == "handled" and case.target is not None:
            changed.discard(str(case.target))  # replaced on purpose (--overwrite), and it succeeded
        if changed or any(after[1].get(k) != v for k, v in before[1].items()):
            flags.append("changed existing file")
        if outcome == "handled" and case.outside:
            flags.append("read outside")
        if outcome == "handled" and case.wrong_geometry:
            flags.append("wrong geometry")
        if outcome == "handled" and case.check is not None:
            problem = case.check()
            if problem:
                flags.append("wrong geometry" if case.group == "valid header" else "changed existing file")
                line = f"{line} [check: {problem}]"
        if case.check_always is not None:
            problem = case.check_always()
            if problem:
                flags.append("output before refusal")
                line = f"{line} [check: {problem}]"
        if RAW_CHATTER.search(text) and outcome != "traceback":
            flags.append("raw library output")
        if case.expect == "ok" and outcome != "handled":
            flags.append("wrongly refused")
        if (
            case.group == "full disk"
            and outcome == "clean error"
            and "could not be written" not in line
            and "No space" not in line
            and "File too large" not in line
        ):
            line = f"{line} [unexpected reason]"
        rows.append(
            {
                "case": case.name,
                "group": case.group,
                "outcome": outcome,
                "exit": code,
                "flags": flags,
                "message": line[:400],
                "seconds": round(seconds, 2),
            }
        )
    return rows


def build_cases(work: Path, model: Path, store: Path) -> list[Case]:
    folder = work / "files"
    folder.mkdir(parents=True, exist_ok=True)
    scan = folder / "scan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(ct(0, (4, 32, 32))), str(scan))
    labels = folder / "scan_labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray((ct(0, (4, 32, 32)) > 0.3).astype(np.uint8)), str(labels))
    return [
        *full_disk_cases(folder / "disk", model, store, scan, labels),
        *detached_cases(folder / "detached", model),
        *header_cases(folder / "headers"),
        *checkpoint_cases(folder / "checkpoints", model, scan),
        *class_table_cases(folder / "tables"),
        *store_and_train_cases(folder / "stores", store, labels),
        *output_cases(folder / "outputs", model, scan),
    ]


def summarise(rows: list[dict]) -> dict:
    outcomes = {kind: sum(row["outcome"] == kind for row in rows) for kind in OUTCOMES}
    flags = {flag: sum(flag in row["flags"] for row in rows) for flag in FLAGS}
    return {"cases": len(rows), "outcomes": outcomes, "flags": flags}


def print_summary(rows: list[dict], title: str = "hostile files") -> None:
    summary = summarise(rows)
    print(f"{title}: {summary['cases']} cases")
    for kind, count in summary["outcomes"].items():
        print(f"  {kind:22s} {count}")
    for flag, count in summary["flags"].items():
        print(f"  {flag:22s} {count}")
    for row in rows:
        if row["outcome"] not in ("clean error", "handled") or row["flags"]:
            print(f"  ! {row['case']}: {row['outcome']} {row['flags']} {row['message']}")


def run_all(work: Path, model: Path, store: Path, only: str | None = None) -> list[dict]:
    """Build every case under ``work`` (emptied first), run them, print and return the rows."""
    unmount_small_disk(work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        cases = build_cases(work, model, store)
        if only:
            cases = [case for case in cases if only in case.name]
        rows = run_cases(cases, always_watch=[model, store])
    finally:
        unmount_small_disk(work)
    print_summary(rows)
    (work / "report.json").write_text(json.dumps({"rows": rows, "summary": summarise(rows)}, indent=2))
    print(f"report: {work / 'report.json'}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-hostile-files"))
    parser.add_argument("--only", help="run only the cases whose name holds this text")
    args = parser.parse_args()
    from synthetic import make_store
    from test_project import tiny_base_model

    shared = args.work.with_name(args.work.name + "-inputs")
    shared.mkdir(parents=True, exist_ok=True)
    model = tiny_base_model(shared / "model.pt")
    store = make_store(shared / "store.h5", size=32)
    run_all(args.work, model, store, args.only)


if __name__ == "__main__":
    main()
