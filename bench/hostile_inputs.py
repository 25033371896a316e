"""How does `cgs` take bad input? Every damaged file against every verb that reads one, plus bad
arguments, each counted as: a clean one-line error (exit 2), handled (exit 0 and sensible),
a traceback, or a crash of the process; and whether any file that existed before was changed.

    python bench/hostile_inputs.py [--work /tmp/cgs-hostile]

Then the cases of ``hostile_files`` (issue 22: full disks, detached headers, reinterpreted
headers, checkpoints, class tables, stores, outputs that could replace inputs) in their own
folder; the results of both go to ``bench/results/hostile_inputs-*.json``.

Verbs run in this process through ``cgs_engine.cli.main.main`` (a traceback is an exception that
escapes it); cases that could abort the process (non-UTF-8 paths) run in a child process.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engine"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import hostile_dicom  # noqa: E402 - DICOM series folders and RT files (issue 22)
import hostile_files  # noqa: E402
from common import save_results  # noqa: E402
from hostile_runs import run_child, run_in_process, snapshot  # noqa: E402


def image(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def ct(seed: int = 0, shape=(4, 32, 32), dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 0.1, shape).astype(dtype)


def damaged_files(folder: Path) -> dict[str, Path]:
    """Name -> a bad image file (or folder)."""
    files: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        files[name] = path

    for extension in (".nii.gz", ".mha", ".nrrd"):
        tag = extension.strip(".").replace(".", "")
        for bad, label in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
            array = ct()
            array[1, 2, 3] = bad
            add(f"{label}-{tag}", image(folder / f"{label}{extension}", array))
        huge = ct(dtype=np.float64)
        huge[0, 0, 0] = 1e300
        add(f"float64-1e300-{tag}", image(folder / f"huge{extension}", huge))
        good = image(folder / f"good{extension}", ct())
        data = good.read_bytes()
        for cut in (0.3, 0.9):
            path = folder / f"cut{int(cut * 100)}{extension}"
            path.write_bytes(data[: int(len(data) * cut)])
            add(f"truncated{int(cut * 100)}-{tag}", path)
        flipped = bytearray(data)
        for index in np.random.default_rng(1).integers(len(data) // 2, len(data), 30):
            flipped[index] ^= 0xFF
        path = folder / f"flipped{extension}"
        path.write_bytes(bytes(flipped))
        add(f"bitflip-{tag}", path)
        empty = folder / f"empty{extension}"
        empty.write_bytes(b"")
        add(f"empty-{tag}", empty)
        junk = folder / f"junk{extension}"
        junk.write_bytes(os.urandom(2000))
        add(f"random-bytes-{tag}", junk)
    header = "NRRD0004\ntype: float\ndimension: 3\nsizes: {}\nencoding: {}\nendian: little\n\n"
    (folder / "bomb.nrrd").write_bytes(header.format("2000 2000 1000", "raw").encode() + b"\0" * 1000)
    add("size-bomb-nrrd", folder / "bomb.nrrd")
    (folder / "bomb-gz.nrrd").write_bytes(
        header.format("300 300 100", "gzip").encode() + gzip.compress(b"\0" * 1000)
    )
    add("size-bomb-gzip-nrrd", folder / "bomb-gz.nrrd")
    add("2d-image", image(folder / "flat.nii.gz", ct(shape=(32, 32))))
    add("4d-image", image(folder / "t4.nii.gz", ct(shape=(2, 3, 16, 16))))
    rgb = folder / "rgb.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 16, 16, 3), np.uint8), isVector=True), str(rgb))
    add("rgb-image", rgb)
    add("complex-image", _complex(folder))
    add("not-an-image-txt", _text(folder / "notes.nii.gz", "hello"))
    add("wrong-extension", _text(folder / "scan.png", "png?"))
    add("missing-file", folder / "missing.nii.gz")
    (folder / "empty-dir").mkdir(exist_ok=True)
    add("empty-folder", folder / "empty-dir")
    files.update(hostile_dicom.damaged_series(folder))
    return files


def _complex(folder: Path) -> Path:
    path = folder / "complex.mha"
    sitk.WriteImage(sitk.GetImageFromArray(ct().astype(np.complex64)), str(path))
    return path


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cases(folder: Path, model: Path, store: Path, files: dict[str, Path]) -> list[tuple[str, list[str]]]:
    good = image(folder / "ok.nii.gz", ct())
    labels = image(folder / "ok_labels.nii.gz", np.zeros((4, 32, 32), np.uint8))
    out = folder / "out"
    found: list[tuple[str, list[str]]] = []
    for name, path in files.items():
        p = str(path)
        found += [
            (f"info {name}", ["info", p]),
            (f"info --labels {name}", ["info", "--labels", p]),
            (f"convert {name}", ["convert", p, str(out / f"{name}.nii.gz")]),
            (f"predict {name}", ["predict", str(model), p, "-o", str(out / "pred")]),
            (
                f"import image {name}",
                [
                    "import",
                    "nifti",
                    "--images",
                    p,
                    "--labels",
                    str(_labels_named_like(path, folder)),
                    "-o",
                    str(out / f"{name}.h5"),
                ],
            ),
            (
                f"import labels {name}",
                ["import", "nifti", "--images", str(good), "--labels", p, "-o", str(out / f"{name}-l.h5")],
            ),
            (f"add-unlabeled {name}", ["project", "add-unlabeled", str(folder / "project"), p]),
            (
                f"add-correction {name}",
                ["project", "add-correction", str(folder / "project"), "--image", p, "--labels", str(labels)],
            ),
            (f"review {name}", ["review", p]),
            (f"train store {name}", ["train", p, "-o", str(out / f"run-{name}"), "--iterations", "1"]),
            (f"predict with model {name}", ["predict", p, str(good), "-o", str(out / "pm")]),
        ]
    locked = folder / "locked-file"
    locked.write_text("x")
    found += [
        ("predict -o a file", ["predict", str(model), str(good), "-o", str(locked)]),
        ("predict device cuda", ["predict", str(model), str(good), "-o", str(out / "c"), "--device", "cuda"]),
        ("train --size 0", ["train", str(store), "-o", str(out / "s0"), "--size", "0"]),
        ("train --iterations -1", ["train", str(store), "-o", str(out / "i1"), "--iterations", "-1"]),
        ("train --batch 0 0", ["train", str(store), "-o", str(out / "b0"), "--batch", "0", "0"]),
        ("train config missing", ["train", str(store), "-o", str(out / "cm"), "--config", "nope.json"]),
        ("train into a file", ["train", str(store), "-o", str(locked)]),
        ("evaluate missing folders", ["evaluate", "--pred", "nope", "--gt", "nope2"]),
        (
            "evaluate json missing folder",
            ["evaluate", "--pred", str(folder), "--gt", str(folder), "--json", str(folder / "no" / "r.json")],
        ),
        ("review threshold 2", ["review", str(good), "--threshold", "2"]),
        ("retrain missing project", ["retrain", str(folder / "nope")]),
        ("retrain resume nothing", ["retrain", str(folder / "project"), "--resume"]),
        ("activate unknown version", ["project", "activate", str(folder / "project"), "v0099"]),
        ("activate bad name", ["project", "activate", str(folder / "project"), "../x"]),
        ("remove-correction traversal", ["project", "remove-correction", str(folder / "project"), "../../x"]),
        ("remove-unlabeled unknown", ["project", "remove-unlabeled", str(folder / "project"), str(good)]),
        ("project create over a file", ["project", "create", str(locked), "--base-model", str(model)]),
        ("project create bad model", ["project", "create", str(out / "p2"), "--base-model", str(good)]),
        (
            "rtstruct export no dicom",
            [
                "rtstruct",
                "export",
                str(labels),
                "--dicom",
                str(folder),
                "-o",
                str(out / "rs.dcm"),
                "--classes",
                "openkbp",
            ],
        ),
        (
            "seg export no dicom",
            [
                "seg",
                "export",
                str(labels),
                "--dicom",
                str(folder),
                "-o",
                str(out / "s.dcm"),
                "--classes",
                "openkbp",
            ],
        ),
        ("import acdc missing", ["import", "acdc", str(folder / "nope"), "-o", str(out / "a.h5")]),
        ("import segthor missing", ["import", "segthor-png", str(folder / "nope"), "-o", str(out / "t.h5")]),
    ]
    return found + hostile_dicom.rt_cases(folder)


def _labels_named_like(path: Path, folder: Path) -> Path:
    """A valid label map with the damaged image's file name (the importer pairs them by name)."""
    target = folder / "labels-for" / path.name
    target.parent.mkdir(exist_ok=True)
    try:
        image(target, np.zeros((4, 32, 32), np.uint8))
    except RuntimeError:  # a name ITK cannot write (.png of the wrong size, a folder): any file will do
        target.write_bytes(b"")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-hostile"))
    args = parser.parse_args()
    from synthetic import make_store
    from test_project import tiny_base_model

    shutil.rmtree(args.work, ignore_errors=True)
    folder = args.work / "files"
    folder.mkdir(parents=True)
    model = tiny_base_model(args.work / "model.pt")
    store = make_store(args.work / "store.h5", size=32)
    assert (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cgs_engine",
                "project",
                "create",
                str(folder / "project"),
                "--base-model",
                str(model),
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    (folder / "out").mkdir()
    precious = folder / "out" / "earlier_result.nii.gz"
    image(precious, ct(5))
    files = damaged_files(folder)
    outcomes: dict[str, list[str]] = {}
    lost: list[str] = []
    rows = []
    for name, arguments in cases(folder, model, store, files):
        before = snapshot(folder / "project"), precious.read_bytes(), model.read_bytes()
        kind, code, line = run_in_process(arguments)
        after = snapshot(folder / "project"), precious.read_bytes(), model.read_bytes()
        changed_project = {k for k in before[0] if after[0].get(k) != before[0][k]}
        # a refused input must leave everything as it was; an accepted one may add to the project
        if before[1:] != after[1:] or (changed_project and kind != "handled"):
            lost.append(name)
        outcomes.setdefault(kind, []).append(name)
        rows.append({"case": name, "outcome": kind, "exit": code, "message": line})
    for verb in (b"info", b"convert"):
        bad = os.fsencode(folder) + b"/scan\xff.nii.gz"
        os.link(os.fsencode(folder / "ok.nii.gz"), bad) if not os.path.exists(bad) else None
        extra = [os.fsencode(folder / "out" / "x.nii.gz")] if verb == b"convert" else []
        kind, code, line = run_child([verb, bad, *extra])
        outcomes.setdefault(kind, []).append(f"{verb.decode()} non-utf8 path")
        rows.append(
            {"case": f"{verb.decode()} non-utf8 path", "outcome": kind, "exit": code, "message": line}
        )
    total = sum(len(v) for v in outcomes.values())
    print(f"inputs tried: {total}")
    for kind in ("clean error", "handled", "traceback", "crash", "unclear"):
        print(f"  {kind:12s} {len(outcomes.get(kind, []))}")
    print(f"  files changed that existed before: {len(lost)} {lost[:5]}")
    for kind in ("traceback", "crash", "unclear"):
        for case in outcomes.get(kind, []):
            row = next(r for r in rows if r["case"] == case)
            print(f"  {kind}: {case}: {row['message']}")
    (args.work / "report.json").write_text(json.dumps({"rows": rows, "lost": lost}, indent=2))
    print(f"report: {args.work / 'report.json'}")
    file_rows = hostile_files.run_all(args.work / "issue22", model, store)  # full disks, headers, ...
    save_results("hostile_inputs", {"inputs": {"rows": rows, "lost": lost}, "files": file_rows})


if __name__ == "__main__":
    main()
