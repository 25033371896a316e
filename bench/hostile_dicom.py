"""Hostile DICOM input (issue 22): damaged series folders against every command that reads a
series, damaged RTSTRUCT / SEG files against the imports, awkward names against the exports,
and a seeded fuzz of series headers. Each case is counted as in ``hostile_inputs.py``; a damaged
series that a command accepts (exit 0) is counted as silent wrong geometry.

    python bench/hostile_dicom.py [--work /tmp/cgs-hostile-dicom] [--fuzz 1000]

``hostile_inputs.py`` also runs the series folders and the RT cases among its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for helpers in (ROOT / "tests" / "engine", ROOT / "tests" / "reliability", ROOT / "bench"):
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))

AWKWARD_NAMES = ["Parótida_D 腮腺", "two\nlines", "back\\slash", "L" * 70, "", "two lines"]


def damaged_series(folder: Path) -> dict[str, Path]:
    """Name -> a DICOM series folder: every damaged kind (``dicom-...``) and the valid variations."""
    from dicom_series_cases import BROKEN, VALID, damaged_copy, good_series

    folder.mkdir(parents=True, exist_ok=True)
    good = good_series(folder / "dicom-good")
    found = {"dicom-good": good}
    for name, (damage, _) in BROKEN.items():
        found[f"dicom-{name}"] = damaged_copy(good, folder / f"dicom-{name}", damage)
    for name, damage in VALID.items():
        found[f"dicom-valid-{name}"] = damaged_copy(good, folder / f"dicom-valid-{name}", damage)
    return found


def rt_cases(folder: Path) -> list[tuple[str, list[str]]]:
    """RTSTRUCT / SEG imports of damaged files and exports with awkward class names, on a good series."""
    from dicom_rt_cases import DAMAGED_RT, rt_files
    from dicom_series_cases import good_series

    folder.mkdir(parents=True, exist_ok=True)
    series = good_series(folder / "rt-series")
    files = rt_files(series, folder / "rt-files")
    out = folder / "rt-out"
    out.mkdir(exist_ok=True)
    found = []
    for name, (source, *_rest) in DAMAGED_RT.items():
        verb = "seg" if source == "SEG" else "rtstruct"
        found.append(
            (
                f"{verb} import {name}",
                [verb, "import", str(files[name]), "--dicom", str(series), "-o", str(out / f"{name}.nii.gz")],
            )
        )
    table = folder / "awkward_classes.json"
    entries = [{"id": i + 1, "name": n, "color": [200, 100, 50]} for i, n in enumerate(AWKWARD_NAMES)]
    table.write_text(json.dumps({"classes": entries}))
    labels = _awkward_labels(series, folder / "awkward_labels.nii.gz")
    for verb in ("rtstruct", "seg"):
        argv = [
            verb,
            "export",
            str(labels),
            "--dicom",
            str(series),
            "--classes",
            str(table),
            "-o",
            str(out / f"awkward-{verb}.dcm"),
        ]
        found.append((f"{verb} export awkward names", argv))
    return found


def _awkward_labels(series: Path, path: Path, classes: int = len(AWKWARD_NAMES)) -> Path:
    """A label map on the series' grid with one box per class 1..``classes``."""
    from dicom_series_cases import SHAPE

    from cgs_engine.io import read_volume, write_volume

    array = np.zeros(SHAPE, np.uint8)
    for index in range(classes):
        array[1 + index, 2:8, 3 + 4 * index : 6 + 4 * index] = index + 1
    return write_volume(read_volume(series).like(array, "labels"), path)


def run_fuzz(cases: int, seed: int, work: Path) -> dict:
    results = work / "fuzz.jsonl"
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "reliability" / "dicom_fuzz.py"),
            "--cases",
            str(cases),
            "--seed",
            str(seed),
            "--out",
            str(results),
        ],
        check=False,
    )
    rows = [json.loads(line) for line in results.read_text().splitlines() if '"verdict"' in line]
    verdicts: dict[str, int] = {}
    for row in rows:
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    bad = [row for row in rows if row["verdict"] not in ("ok", "refused")]
    return {
        "cases": cases,
        "finished": len(rows),
        "seed": seed,
        "verdicts": verdicts,
        "seconds": round(time.perf_counter() - started, 1),
        "not_ok": bad[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-hostile-dicom"))
    parser.add_argument("--fuzz", type=int, default=1000, help="fuzz cases (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from common import save_results
    from dicom_series_cases import BROKEN, SERIES_VERBS, series_command
    from hostile_runs import run_in_process, snapshot
    from test_project import tiny_base_model

    from cgs_engine.cli.main import main as cgs

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    model = tiny_base_model(args.work / "model.pt")
    assert cgs(["project", "create", str(args.work / "project"), "--base-model", str(model)]) == 0
    folders = damaged_series(args.work / "series")
    labels = _awkward_labels(folders["dicom-good"], args.work / "labels.nii.gz", classes=1)
    cases = [
        (f"{verb} {name}", series_command(verb, folder, args.work, model, labels))
        for name, folder in folders.items()
        for verb in SERIES_VERBS
    ]
    for folder in folders.values():
        (args.work / "out" / folder.name).mkdir(parents=True, exist_ok=True)
    cases += rt_cases(args.work / "rt")
    rows, silent_wrong, changed = [], [], []
    for name, argv in cases:
        before = snapshot(args.work / "series")
        kind, code, line = run_in_process(argv)
        if snapshot(args.work / "series") != before:
            changed.append(name)
        damaged = name.split(" ")[-1].removeprefix("dicom-") in BROKEN
        if damaged and kind == "handled":
            silent_wrong.append(name)
        rows.append({"case": name, "outcome": kind, "exit": code, "message": line})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    rt = len(rows) - len(folders) * len(SERIES_VERBS)
    print(f"cases: {len(rows)} ({len(folders)} series folders x {len(SERIES_VERBS)} commands, {rt} RT files)")
    for kind in ("clean error", "handled", "traceback", "crash", "unclear"):
        print(f"  {kind:12s} {counts.get(kind, 0)}")
    print(f"  silent wrong geometry (a damaged series accepted): {len(silent_wrong)} {silent_wrong[:5]}")
    print(f"  files changed that existed before: {len(changed)} {changed[:5]}")
    for row in rows:
        if row["outcome"] in ("traceback", "crash", "unclear"):
            print(f"  {row['outcome']}: {row['case']}: {row['message']}")
    fuzz = run_fuzz(args.fuzz, args.seed, args.work) if args.fuzz else None
    if fuzz:
        done = f"{fuzz['finished']} of {fuzz['cases']} cases (seed {fuzz['seed']}, {fuzz['seconds']} s)"
        print(f"fuzz: {done}: {fuzz['verdicts']}")
    path = save_results(
        "hostile-dicom",
        {"counts": counts, "silent_wrong": silent_wrong, "changed": changed, "rows": rows, "fuzz": fuzz},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
