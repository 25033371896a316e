"""A seeded fuzzer of DICOM series headers, and the promise each case is held to.

Each case copies a good 8-slice CT series and damages one to three things at random: Image
Position / Orientation (Patient), Pixel Spacing, Slice Thickness, Rows, Columns, Bits Allocated,
Rescale Slope / Intercept (sensible values, extreme ones, NaN, text, wrong counts), deleted tags,
truncated, removed or duplicated files, another series UID. Then ``cgs convert`` reads the folder
(in this process, stderr captured at the file descriptor, so ITK's own prints count too) and the
outcome must be one of

* ``ok``: exit 0, and the volume written explains every slice in the folder: each file's position
  is a voxel plane of the output (within 5 % of a voxel), orientation and pixel spacing are the
  output's, and its pixels (decoded by pydicom, rescaled) are that plane's values;
* ``refused``: exit 2 with exactly one line on stderr, ``cgs convert: error: <path>: <problem>``;

and never a traceback, a crash, a hang (each case has CASE_SECONDS), output on stderr beside the
one line, or a changed file that existed before (the series, and the earlier output a refusal
must keep). ``read_series`` (the RT commands' reader) must accept and refuse exactly the same.

    python tests/reliability/dicom_fuzz.py --cases 300 --seed 0 --out results.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import struct
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

ENGINE_TESTS = Path(__file__).resolve().parents[1] / "engine"
if str(ENGINE_TESTS) not in sys.path:
    sys.path.insert(0, str(ENGINE_TESTS))

import pydicom  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from dicom_series_cases import good_series  # noqa: E402
from pydicom.datadict import dictionary_VR, tag_for_keyword  # noqa: E402
from pydicom.dataelem import RawDataElement  # noqa: E402

CASE_SECONDS = 60  # wall-clock: generous, since the tests share two cores with other work
GRID_TOLERANCE = 0.051  # of a voxel (the check allows 0.05)
JUNK = ["nan", "inf", "-inf", "abc", "", "1e309", "-0"]
DELETABLE = [
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "PixelData",
    "SOPInstanceUID",
    "SOPClassUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "Modality",
    "InstanceNumber",
]


class Hang(Exception):
    pass


# --- damaging a series ----------------------------------------------------------------------------


def set_raw(dataset: pydicom.Dataset, keyword: str, value: str | int) -> None:
    """Store ``value`` as ``keyword``'s bytes as they are, valid or not (pydicom would refuse some)."""
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if vr == "US":  # binary: a number is packed (wrapping), anything else is one odd byte
        data = struct.pack("<H", value % 65536) if isinstance(value, int) else b"x"
    else:
        data = str(value).encode("latin-1")
        data += b" " * (len(data) % 2)
    dataset[tag] = RawDataElement(pydicom.tag.Tag(tag), vr, len(data), data, 0, True, True)


def _numbers(values) -> str:
    return "\\".join(f"{float(v):.6g}" for v in values)


# Each maker draws its change once and returns it as dataset -> new value, so that a change made
# "in every slice" is the same change everywhere.
def _position(rng):
    if rng.random() < 0.25:
        junk = str(rng.choice(JUNK + ["1\\2", "0\\0\\0\\0"]))
        return lambda dataset: junk
    axis, size = int(rng.integers(3)), float(rng.choice([0.0005, 0.01, 0.05, 0.2, 1.0, 2.5, 10.0, 300.0]))
    offset = size * rng.choice([-1, 1])

    def shifted(dataset):
        position = [float(v) for v in dataset.ImagePositionPatient]
        position[axis] += offset
        return _numbers(position)

    return shifted


def _orientation(rng):
    choice = rng.random()
    if choice < 0.25:
        value = str(rng.choice(JUNK + ["1\\0\\0\\0\\1", "0\\0\\0\\0\\0\\0"]))
    elif choice < 0.5:
        value = _numbers(rng.normal(0, 1, 6))
    else:
        axis = rng.normal(0, 1, 3)
        axis /= np.linalg.norm(axis)
        angle = np.radians(float(rng.choice([0.001, 0.01, 0.5, 5.0, 90.0])))
        cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
        value = _numbers(np.concatenate([rotation[:, 0], rotation[:, 1]]))
    return lambda dataset: value


def _pixel_spacing(rng):
    if rng.random() < 0.4:
        value = str(rng.choice(JUNK + ["0\\0", "-1\\1", "1", "1\\2\\3"]))
    else:
        value = _numbers(rng.uniform(0.05, 5.0, 2))
    return lambda dataset: value


def _slice_thickness(rng):
    value = str(rng.choice(JUNK + ["0", "-3", "2.5", "100"]))
    return lambda dataset: value


def _size(keyword: str):
    def maker(rng):
        change = rng.choice(["0", "1", "-1", "+1", "*2", "65535", "x"])

        def value(dataset):
            size = int(dataset.get(keyword) or 0)
            return {"-1": size - 1, "+1": size + 1, "*2": 2 * size, "x": "x"}.get(change, int(change))

        return value

    return maker


def _bits_allocated(rng):
    value = int(rng.choice([1, 8, 12, 16, 32, 64, 0]))
    return lambda dataset: value


def _rescale(keyword: str):
    def maker(rng):
        values = (
            [0.5, 2, 1e-3, 0, -1, 1e30, "nan", "abc", ""] if keyword == "RescaleSlope" else [-1024, 0.5, 1e30]
        )
        value = str(rng.choice([*values, "nan", "x"]))
        return lambda dataset: value

    return maker


FIELDS = {
    "ImagePositionPatient": _position,
    "ImageOrientationPatient": _orientation,
    "PixelSpacing": _pixel_spacing,
    "SliceThickness": _slice_thickness,
    "Rows": _size("Rows"),
    "Columns": _size("Columns"),
    "BitsAllocated": _bits_allocated,
    "RescaleSlope": _rescale("RescaleSlope"),
    "RescaleIntercept": _rescale("RescaleIntercept"),
}
FILE_CHANGES = ["delete", "truncate", "remove", "duplicate", "series", "rename"]


def damage(folder: Path, rng: np.random.Generator) -> list[str]:
    """Damage the series in ``folder`` in 1-3 random ways; returns what was done."""
    done = []
    for _ in range(int(rng.integers(1, 4))):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if not files:
            break
        kind = str(rng.choice([*FIELDS, *FIELDS, *FILE_CHANGES]))
        every = rng.random() < 0.3  # the same change in every slice
        targets = files if every else [files[int(rng.integers(len(files)))]]
        where = "every slice" if every else targets[0].name
        if kind in ("truncate", "remove", "duplicate", "rename"):
            done.append(_file_change(kind, targets[0], folder, rng))
            continue
        if kind == "delete":
            keyword = str(rng.choice(DELETABLE))
            change, describe = (
                (lambda dataset, keyword=keyword: _delete(dataset, keyword)),
                f"delete {keyword}",
            )
        elif kind == "series":
            uid = pydicom.uid.generate_uid()
            change = lambda dataset, uid=uid: setattr(dataset, "SeriesInstanceUID", uid)  # noqa: E731
            describe = "new series UID"
        else:
            value_of = FIELDS[kind](rng)
            values = []

            def change(dataset, value_of=value_of, values=values, kind=kind):
                try:
                    value = value_of(dataset)
                except Exception:  # noqa: BLE001 - the field was damaged before
                    value = "abc"
                values.append(value)
                set_raw(dataset, kind, value)

            describe = f"{kind} changed"
        for path in targets:
            try:
                dataset = pydicom.dcmread(path)
            except Exception:  # noqa: BLE001 - already damaged beyond reading: leave it so
                continue
            change(dataset)
            dataset.save_as(path)
        if kind in FIELDS:
            describe = f"{kind} = {values[0]!r}" if values else describe
        done.append(f"{describe} in {where}")
    return done


def _delete(dataset: pydicom.Dataset, keyword: str) -> None:
    if keyword in dataset:
        del dataset[keyword]


def _file_change(kind: str, path: Path, folder: Path, rng) -> str:
    if kind == "truncate":
        data = path.read_bytes()
        anywhere, in_header, near_end = (
            rng.integers(len(data) + 1),
            rng.integers(120, 600),
            len(data) - rng.integers(1, 600),
        )
        cut = max(0, int(rng.choice([anywhere, in_header, near_end])))
        path.write_bytes(data[:cut])
        return f"truncate {path.name} to {cut} bytes"
    if kind == "remove":
        path.unlink()
        return f"remove {path.name}"
    if kind == "rename":  # valid: the positions, not the names, order the slices
        new = folder / f"IM{rng.integers(10**6):06d}"
        path.rename(new)
        return f"rename {path.name} to {new.name}"
    copy = folder / f"copy-{rng.integers(10**6)}-{path.name}"
    shutil.copy(path, copy)
    return f"duplicate {path.name}"


# --- judging the outcome --------------------------------------------------------------------------


def explains_every_slice(folder: Path, output: Path) -> str | None:
    """None if the written volume holds every slice of ``folder`` where its header puts it; else why not."""
    image = sitk.ReadImage(str(output))
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    to_index = np.linalg.inv(direction @ np.diag(spacing))
    planes = set()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array.astype(np.float64)
            slope, intercept = (
                _or(dataset.get("RescaleSlope"), 1.0),
                _or(dataset.get("RescaleIntercept"), 0.0),
            )
            position = _floats(dataset.ImagePositionPatient, 3)
            orientation = _floats(dataset.ImageOrientationPatient, 6)
            pixel_spacing = _floats(dataset.PixelSpacing, 2)
        except Exception as error:  # noqa: BLE001 - a slice the reader accepted but pydicom cannot use
            return f"{path.name} was accepted but cannot be decoded ({type(error).__name__}: {error})"[:300]
        index = to_index @ (position - origin)
        plane = int(round(index[2]))
        if np.abs(index - [0, 0, plane]).max() > GRID_TOLERANCE or not 0 <= plane < array.shape[0]:
            return f"{path.name} at {position} is not on a plane of the output (index {index.round(3)})"
        if np.abs(orientation - direction[:, :2].T.ravel()).max() > 1e-3:
            return f"{path.name} orientation {orientation} is not the output's"
        if not np.allclose(pixel_spacing, spacing[[1, 0]], rtol=1e-3):
            return f"{path.name} pixel spacing {pixel_spacing} is not the output's {spacing[[1, 0]]}"
        if pixels.shape != array.shape[1:] or not np.allclose(
            array[plane], pixels * slope + intercept, rtol=1e-5, atol=1e-3
        ):
            return f"{path.name}: the output's plane {plane} does not hold its pixels"
        planes.add(plane)
    if planes != set(range(array.shape[0])):
        return f"output planes {sorted(set(range(array.shape[0])) - planes)} come from no slice"
    return None


def _floats(values, count: int) -> np.ndarray:
    numbers = np.array([float(v) for v in values], dtype=float)
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise ValueError(f"{count} finite numbers expected, got {list(values)}")
    return numbers


def _or(value, default: float) -> float:
    """A rescale value; absent or empty means the default (no rescale)."""
    return default if value is None or value == "" else float(value)


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@contextlib.contextmanager
def captured_stderr():
    """Everything written to file descriptor 2 (Python and C++ alike) meanwhile, as a StringIO."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        text = io.StringIO()
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.write(sink.read().decode("utf-8", "replace"))


def run_case(number: int, seed: int, good: Path, work: Path) -> dict:
    from cgs_engine.cli.main import main
    from cgs_engine.dicom import read_series
    from cgs_engine.errors import CGSError

    rng = np.random.default_rng([seed, number])
    folder = work / f"case-{number:04d}"
    shutil.copytree(good, folder)
    row: dict = {"case": number, "damage": damage(folder, rng)}
    output = work / "out.nii.gz"
    earlier = output.read_bytes()
    before = fingerprint(folder)
    signal.alarm(CASE_SECONDS)
    try:
        with captured_stderr() as stderr, contextlib.redirect_stdout(io.StringIO()):
            code = main(["convert", str(folder), str(output), "--overwrite"])
        try:
            read_series(folder)
            rt_accepts = True
        except CGSError:
            rt_accepts = False
    except Hang:
        row.update(verdict="hang", detail=f"more than {CASE_SECONDS} s")
        return row
    except BaseException as error:  # noqa: BLE001 - this is what the fuzz counts
        row.update(verdict="traceback", detail=f"{type(error).__name__}: {error}"[:300])
        return row
    finally:
        signal.alarm(0)
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    row.update(exit=code, stderr=lines[-3:])
    if fingerprint(folder) != before:
        row.update(verdict="changed", detail="the series' files changed")
    elif code == 2:
        one_line = len(lines) == 1 and lines[0].startswith(f"cgs convert: error: {folder}")
        kept = output.read_bytes() == earlier
        row.update(verdict="refused" if one_line and kept else "unclear", detail=lines[-1] if lines else "")
        if not kept:
            row["detail"] = "the earlier output was changed by a refusal"
    elif code == 0:
        with warnings.catch_warnings():  # pydicom's remarks on the damaged files: the verdict says it
            warnings.simplefilter("ignore")
            wrong = explains_every_slice(folder, output)
        row.update(
            verdict="wrong" if wrong else ("chatter" if lines else "ok"), detail=wrong or " ".join(lines)
        )
    else:
        row.update(verdict="unclear", detail=f"exit {code}")
    if row["verdict"] in ("ok", "refused") and rt_accepts != (code == 0):
        row.update(verdict="disagree", detail=f"convert exit {code}, read_series accepts: {rt_accepts}")
    shutil.rmtree(folder, ignore_errors=True)
    return row


def _alarm(signum, frame):
    raise Hang()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per case (and a start line)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    work = Path(tempfile.mkdtemp(prefix="cgs-dicom-fuzz-", dir=args.work))
    try:
        good = good_series(work / "good")
        (work / "out.nii.gz").write_bytes(b"an earlier result, which a refusal must keep")
        with open(args.out, "a", encoding="utf-8") as results:
            for number in range(args.cases):
                results.write(json.dumps({"start": number}) + "\n")  # a crash shows which case
                results.flush()
                results.write(json.dumps(run_case(number, args.seed, good, work)) + "\n")
                results.flush()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
