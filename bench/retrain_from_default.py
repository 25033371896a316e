"""Does retraining the shipped model on a clinician's corrections make it better on new patients?

For k = 1, 3 and 5: a project is made from the bundled model (v0001, with its prior data: the 6
OpenKBP patients it was trained on), k of the 6 OpenKBP `val` patients are added as fully
corrected volumes (their clinical contours, every voxel the user's own) plus the 40 unlabeled
scans, and `cgs retrain PROJECT --minutes M` runs on the CPU. The val patients not added are
scored (3D Dice per organ) with the shipped model and with the new version, whether or not the
activation rule (the gate) activated it. Folds rotate so that every val patient is scored:
k = 1: 2 folds, k = 3: 2 folds (halves), k = 5: 6 folds (leave one out).

    python bench/retrain_from_default.py --minutes 20 --jobs 2 --work /tmp/b-rfd
    python bench/retrain_from_default.py --k 5 --folds 0 --minutes 10 --set lr=3e-4   # one experiment
    python bench/retrain_from_default.py --report-only --work /tmp/b-rfd   # folds finished so far
                                     (give the same --minutes and --set as the run, for the record)

--jobs N runs N retrains side by side, each on one thread (threads=1 in the project settings).
--set KEY=VALUE (JSON values) overrides a project setting (correction_share, heldout_fraction...) or
a retraining setting (the project's "train" settings: lr, lambda_max...).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, cgs_cli, save_results, shared_data

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
FOLDS = {1: [[0], [1]], 3: [[0, 1, 2], [3, 4, 5]], 5: [[j for j in range(6) if j != i] for i in range(6)]}


def folds_of(k: int, val: list[str]) -> list[list[str]]:
    return [[val[i] for i in fold] for fold in FOLDS[k]]


def score(model: Path, patients: list[str], data: Path) -> dict[str, dict[str, float | None]]:
    """Per patient, per organ: 3D Dice in percent (None where neither has the organ)."""
    from cgs_engine.evaluate.metrics import dice_per_class
    from cgs_engine.infer import Predictor
    from cgs_engine.io import read_volume

    predictor = Predictor(model, device="cpu")
    names = predictor.class_names
    scores = {}
    for patient in patients:
        image = read_volume(data / "images" / f"{patient}.nii.gz")
        truth = read_volume(data / "labels" / f"{patient}.nii.gz", kind="labels").array
        predicted = predictor.predict(image, maps=False).labels.array
        dice = dice_per_class(predicted, truth, len(names))
        scores[patient] = {name: _percent(dice[i]) for i, name in enumerate(names) if i}
    return scores


def _percent(value: float) -> float | None:
    return None if not np.isfinite(value) else round(100 * float(value), 2)


def make_project(project_dir: Path, added: list[str], args, data: Path, split: dict, log: Path) -> None:
    """The bundled model as v0001; the `added` val patients as fully corrected volumes; unlabeled scans."""
    from cgs_engine.io import read_volume
    from cgs_engine.project import Project
    from cgs_engine.project.settings import DEFAULT_SETTINGS

    cgs_cli(["project", "create", str(project_dir), "--base-model", str(MODEL)], log)
    project = Project.open(project_dir)
    for patient in added:
        labels = read_volume(data / "labels" / f"{patient}.nii.gz", kind="labels").array
        project.add_correction(patient, read_volume(data / "images" / f"{patient}.nii.gz"), labels)
    project.add_unlabeled([data / "unlabeled" / f"{i}.nii.gz" for i in split["unlabeled"][: args.unlabeled]])
    project_level = {key: value for key, value in args.settings.items() if key in DEFAULT_SETTINGS}
    train_level = {key: value for key, value in args.settings.items() if key not in DEFAULT_SETTINGS}
    project.update_settings(train={"threads": args.threads, **train_level}, **project_level)


def run_fold(k: int, index: int, added: list[str], args, data: Path, split: dict) -> dict:
    from cgs_engine.project import Project

    folder = args.work / f"k{k}-fold{index}"
    log = args.work / f"k{k}-fold{index}.log"
    project_dir = folder / "project"
    if not (folder / "result.json").exists():
        shutil.rmtree(folder, ignore_errors=True)  # a fold that stopped half-way starts again
        folder.mkdir(parents=True)
        make_project(project_dir, added, args, data, split, log)
        started = time.perf_counter()
        budget = ["--minutes", str(args.minutes)]
        if args.iterations:
            budget = ["--iterations", str(args.iterations)]
        cgs_cli(["retrain", str(project_dir), *budget], log)
        project = Project.open(project_dir)
        new = project.versions()[-1]
        result = {
            "k": k,
            "fold": index,
            "added": added,
            "version": new.id,
            "activated": project.active_version().id == new.id,
            "reason": new.reason,
            "steps": new.record.get("steps"),
            "retrain_minutes": round((time.perf_counter() - started) / 60, 2),
            "heldout": new.metrics.get("heldout"),
            "heldout_new": (new.metrics.get("new") or {}).get("dice_mean"),
            "heldout_active": (new.metrics.get("active") or {}).get("dice_mean"),
            "model": str(new.model_path),
        }
        (folder / "result.json").write_text(json.dumps(result, indent=2))
    return json.loads((folder / "result.json").read_text())


def mean_of(values) -> float | None:
    values = [v for v in values if v is not None]
    return None if not values else float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--iterations", type=int, help="a fixed number of steps instead of --minutes")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], choices=sorted(FOLDS))
    parser.add_argument("--folds", type=int, nargs="+", help="only these fold indices (experiments)")
    parser.add_argument("--jobs", type=int, default=2, help="retrains side by side (one thread each)")
    parser.add_argument("--threads", type=int, default=1, help="threads per retrain")
    parser.add_argument("--unlabeled", type=int, default=40, help="how many unlabeled scans to add")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--report-only", action="store_true", help="score and report the folds already finished in --work"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-retrain-from-default"))
    args = parser.parse_args()
    args.settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    data = shared_data() / "openkbp"
    split = json.loads((data / "split.json").read_text())
    val = split["val"]
    args.work.mkdir(parents=True, exist_ok=True)

    before_file = args.work / "before.json"
    if not before_file.exists():
        before_file.write_text(json.dumps(score(MODEL, val, data), indent=2))
    before = json.loads(before_file.read_text())

    jobs = [
        (k, index, added)
        for k in args.k
        for index, added in enumerate(folds_of(k, val))
        if args.folds is None or index in args.folds
    ]
    if args.report_only:
        jobs = [job for job in jobs if (args.work / f"k{job[0]}-fold{job[1]}" / "result.json").exists()]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_fold(*job, args, data, split), jobs))

    organs = list(next(iter(before.values())))
    report = {"minutes": args.minutes, "settings": args.settings, "before": before, "folds": []}
    summary: dict[int, list] = {}
    for result in results:
        scored = [p for p in val if p not in result["added"]]
        after = score(Path(result["model"]), scored, data)
        result["after"] = after
        report["folds"].append(result)
        print(
            f"\nk={result['k']} fold {result['fold']}: added {', '.join(result['added'])}; "
            f"{result['steps']} iterations; {result['version']} "
            f"{'ACTIVATED' if result['activated'] else 'not activated'} ({result['reason']})"
        )
        print(f"  {'organ':14s} {'before':>7s} {'after':>7s}   (mean over {', '.join(scored)})")
        for organ in organs + ["mean"]:
            b, a = (organ_mean(source, scored, organ) for source in (before, after))
            print(f"  {organ:14s} {_fmt(b):>7s} {_fmt(a):>7s}")
        summary.setdefault(result["k"], []).append((scored, after, result["activated"]))

    print("\nper k, over every (fold, scored patient) pair: mean Dice before -> after; organs")
    report["summary"] = {}
    for k, entries in sorted(summary.items()):
        pairs = [(p, after) for scored, after, _ in entries for p in scored]
        row = {}
        for organ in organs + ["mean"]:
            b = mean_of(organ_mean(before, [p], organ) for p, _ in pairs)
            a = mean_of(organ_mean(after, [p], organ) for p, after in pairs)
            row[organ] = (b, a)
        activated = sum(1 for *_, on in entries if on)
        better = [_fold_gain(before, scored, after) > 0 for scored, after, _ in entries]
        right = sum(1 for good, (*_, on) in zip(better, entries, strict=True) if good == on)
        # what the project ends with: the new version where the gate activated it, else the old one
        with_gate = mean_of(
            organ_mean(after if on else before, [p], "mean") for scored, after, on in entries for p in scored
        )
        report["summary"][k] = {
            "dice": row,
            "mean_with_gate": with_gate,
            "activated": f"{activated}/{len(entries)}",
            "better_on_new_patients": f"{sum(better)}/{len(entries)}",
            "gate_right": f"{right}/{len(entries)}",
        }
        organs_text = "  ".join(f"{o} {_fmt(b)}->{_fmt(a)}" for o, (b, a) in row.items() if o != "mean")
        b, a = row["mean"]
        print(
            f"  k={k}: mean {_fmt(b)} -> {_fmt(a)} ({a - b:+.2f}); better on new patients in "
            f"{sum(better)}/{len(entries)} folds; gate activated {activated}/{len(entries)}, "
            f"right (activated exactly the better ones) in {right}/{len(entries)}; "
            f"the active model after the gate: {_fmt(with_gate)} ({with_gate - b:+.2f})"
        )
        print(f"        {organs_text}")
    print(f"results: {save_results('retrain_from_default', report)}")


def _fold_gain(before: dict, scored: list[str], after: dict) -> float:
    return organ_mean(after, scored, "mean") - organ_mean(before, scored, "mean")


def organ_mean(scores: dict, patients: list[str], organ: str) -> float | None:
    if organ == "mean":
        return mean_of(mean_of(scores[p].values()) for p in patients)
    return mean_of(scores[p][organ] for p in patients)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
