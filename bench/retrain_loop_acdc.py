"""Does a clinic's retraining make its next patients better? ACDC, one centre, one convention.

Protocol (issue 21; splits in bench/acdc_data.py, none of them chosen on the reported volumes):
  base     CGS trained by `cgs train` on the 3 labeled patients (the rest unlabeled, the dev
           patients as its validation data) for --base-iterations; trained once, reused.
  folds    k = 1, 3, 5 patients of the pool added to a project made from the base model as fully
           corrected volumes (both frames); the other train patients' volumes as unlabeled scans.
  retrain  `cgs retrain PROJECT` as a user runs it (--modes quick, and thorough = --thorough).
  score    every model on the 20 `val` volumes (3D Dice per class), which nothing is selected on:
           the base, each new version whether or not the gate activated it, and the model the
           project ends with after the gate.
  yardstick  CGS from scratch on the same 3 + k labeled patients for base + retrain iterations
           (--scratch; one fold per k unless --scratch-all).
  control  --length-control: the base trained on with a thorough retrain's recipe and steps on its
           own data, no patient added: how much of the thorough gain is length alone.

    python bench/retrain_loop_acdc.py --work /tmp/acdc-loop                 # everything
    python bench/retrain_loop_acdc.py --k 1 --folds 0 --modes quick          # one experiment
    python bench/retrain_loop_acdc.py --report-only --work /tmp/acdc-loop    # what is finished
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from acdc import SETTINGS as BASE_SETTINGS  # the project's CPU recipe for ACDC-sized data
from acdc_data import acdc_split, build_store, score, summary, write_volume_files
from common import cgs_cli, save_results, shared_data

FOLDS = {
    1: [[0], [1], [2]],
    3: [[0, 1, 2], [3, 4, 5], [6, 7, 8]],
    5: [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [0, 2, 4, 6, 8]],
}


def train_run(store: Path, run: Path, iterations: int, settings: dict, log: Path) -> Path:
    """`cgs train` with the base recipe (once: an existing best.pt is reused)."""
    if not (run / "best.pt").exists():
        config = run.parent / f"{run.name}-config.json"
        config.write_text(json.dumps({**BASE_SETTINGS, **settings}))
        cgs_cli(
            ["train", str(store), "-o", str(run), "--iterations", str(iterations), "--config", str(config)],
            log,
        )
    return run / "best.pt"


def make_project(folder: Path, base: Path, split, added: list[str], args, log: Path) -> Path:
    from cgs_engine.project import Project

    project_dir = folder / "project"
    cgs_cli(["project", "create", str(project_dir), "--base-model", str(base)], log)
    volumes = args.work / "volumes"
    for volume_id in split.volume_ids(added):
        image, labels = write_volume_files(split, volume_id, volumes)
        cgs_cli(
            ["project", "add-correction", str(project_dir), "--image", str(image), "--labels", str(labels)],
            log,
        )
    others = [p for p in split.pool + split.rest if p not in added]
    scans = [write_volume_files(split, v, volumes)[0] for v in split.volume_ids(others)]
    Project.open(project_dir).add_unlabeled(scans)
    project = Project.open(project_dir)
    project_level = {k: v for k, v in args.settings.items() if k in project.settings and k != "train"}
    train_level = {k: v for k, v in args.settings.items() if k not in project.settings}
    project.update_settings(train={"threads": args.threads, **train_level}, **project_level)
    return project_dir


def run_fold(k: int, index: int, mode: str, base: Path, split, args) -> dict:
    from cgs_engine.project import Project

    folder = args.work / f"{mode}-k{k}-fold{index}"
    result_file = folder / "result.json"
    if result_file.exists() or args.report_only:
        return json.loads(result_file.read_text()) if result_file.exists() else {}
    added = [split.pool[i] for i in FOLDS[k][index]]
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "log.txt"
    project_dir = make_project(folder, base, split, added, args, log)
    started = time.perf_counter()
    cgs_cli(["retrain", str(project_dir), *(["--thorough"] if mode == "thorough" else [])], log)
    project = Project.open(project_dir)
    new = project.versions()[-1]
    result = {
        "k": k,
        "fold": index,
        "mode": mode,
        "added": added,
        "activated": project.active_version().id == new.id,
        "reason": new.reason,
        "steps": new.record.get("steps"),
        "retrain_minutes": round((time.perf_counter() - started) / 60, 2),
        "gate_new": (new.metrics.get("new") or {}).get("dice_mean"),
        "gate_active": (new.metrics.get("active") or {}).get("dice_mean"),
        "new_model": str(new.model_path),
        "new_scores": score(new.model_path, split),
        "new_dev": summary(score(new.model_path, split, split.volume_ids(split.dev))),
    }
    result_file.write_text(json.dumps(result, indent=2))
    return result


def scratch_run(k: int, index: int, split, iterations: int, args) -> dict:
    folder = args.work / f"scratch-k{k}-fold{index}"
    result_file = folder / "result.json"
    if result_file.exists() or args.report_only:
        return json.loads(result_file.read_text()) if result_file.exists() else {}
    folder.mkdir(parents=True, exist_ok=True)
    added = [split.pool[i] for i in FOLDS[k][index]]
    others = [p for p in split.pool + split.rest if p not in added]
    store = build_store(
        split, folder / "store.h5", split.labeled + added, others, split.volume_ids(split.dev)
    )
    best = train_run(store, folder / "run", iterations, {"threads": args.threads}, folder / "log.txt")
    result = {"k": k, "fold": index, "iterations": iterations, "scores": score(best, split)}
    result_file.write_text(json.dumps(result, indent=2))
    return result


def length_control(base: Path, base_store: Path, split, args) -> dict:
    """The base trained on with a finished thorough retrain's exact recipe and length, on the base's
    own data (the added patients stay unlabeled scans): what the thorough gain owes to length alone."""
    folder = args.work / "length-control"
    result_file = folder / "result.json"
    if result_file.exists() or args.report_only:
        return json.loads(result_file.read_text()) if result_file.exists() else {}
    runs = sorted(args.work.glob("thorough-k*-fold*/project/runs/*/train/config.json"))
    if not runs:
        raise SystemExit("--length-control needs a finished thorough retrain in the work folder")
    recorded = json.loads(runs[0].read_text())["config"]
    steps = int(recorded["max_iterations"] or recorded["iterations"])
    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    if not (run / "final.pt").exists():
        config = folder / "config.json"
        recipe = {**recorded, "init_checkpoint": str(base), "minutes": None, "max_iterations": None}
        config.write_text(json.dumps({**recipe, "iterations": steps, "threads": args.threads}))
        train = ["train", str(base_store), "-o", str(run), "--config", str(config), "--no-error-model"]
        cgs_cli(train, folder / "log.txt")
    result = {
        "recipe_from": str(runs[0]),
        "steps": steps,
        "scores": score(run / "final.pt", split),
        "dev": summary(score(run / "final.pt", split, split.volume_ids(split.dev))),
    }
    result_file.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-iterations", type=int, default=3000)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], choices=sorted(FOLDS))
    parser.add_argument("--folds", type=int, nargs="+", help="only these fold indices")
    parser.add_argument(
        "--modes",
        nargs="*",
        default=["quick", "thorough"],
        choices=["quick", "thorough"],
        help="retrain modes to run (none: only the base and, with --scratch, the yardstick)",
    )
    parser.add_argument("--scratch", action="store_true", help="also the from-scratch 3 + k yardstick")
    parser.add_argument("--scratch-all", action="store_true", help="the yardstick for every fold")
    parser.add_argument(
        "--scratch-iterations",
        type=int,
        help="the yardstick's iterations (default: base + the quick retrains' mean steps of this run)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="retrains side by side")
    parser.add_argument("--threads", type=int, default=1, help="threads per retrain")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--length-control",
        action="store_true",
        help="also train the base on for a thorough retrain's steps with its recipe, without corrections",
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-acdc-loop"))
    args = parser.parse_args()
    args.settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    split = acdc_split(shared_data() / "acdc_ssl4mis_h5")
    args.work.mkdir(parents=True, exist_ok=True)

    base_store = build_store(
        split, args.work / "base.h5", split.labeled, split.pool + split.rest, split.volume_ids(split.dev)
    )
    base = train_run(base_store, args.work / "base", args.base_iterations, {}, args.work / "base.log")
    base_file = args.work / "base_scores.json"
    if not base_file.exists():
        base_file.write_text(json.dumps(score(base, split), indent=2))
    base_scores = json.loads(base_file.read_text())
    dev_file = args.work / "base_dev.json"
    if not dev_file.exists():
        dev_file.write_text(json.dumps(summary(score(base, split, split.volume_ids(split.dev))), indent=2))
    base_dev = json.loads(dev_file.read_text())

    jobs = [
        (k, i, mode)
        for k in args.k
        for i in range(len(FOLDS[k]))
        if not args.folds or i in args.folds
        for mode in args.modes
    ]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda job: run_fold(*job, base, split, args), jobs))

    report = {
        "base_iterations": args.base_iterations,
        "settings": args.settings,
        "base": base_scores,
        "folds": [],
    }
    base_mean = summary(base_scores)
    print(f"base ({args.base_iterations} iterations, 3 labeled patients) on the 20 val volumes: {base_mean}")
    print(f"  and on the dev patients (selection data): {base_dev}")
    for result in [r for r in results if r]:
        new = summary(result["new_scores"])
        after_gate = new if result["activated"] else base_mean
        line = {
            **{
                key: result[key]
                for key in ("k", "fold", "mode", "added", "activated", "steps", "retrain_minutes")
            },
            "gate": [result["gate_active"], result["gate_new"]],
            "new": new,
            "dev": result["new_dev"],
            "after_gate": after_gate,
            "better": new["mean"] > base_mean["mean"],
        }
        report["folds"].append(line)
        print(
            f"{result['mode']:8s} k={result['k']} fold {result['fold']}: new {new['mean']:.2f} "
            f"({new['mean'] - base_mean['mean']:+.2f}), gate {_pct(result['gate_active'])} -> "
            f"{_pct(result['gate_new'])}, {'activated' if result['activated'] else 'kept inactive'}, "
            f"after the gate {after_gate['mean'] - base_mean['mean']:+.2f}; {result['steps']} steps, "
            f"{result['retrain_minutes']} min; dev {result['new_dev']['mean']:.2f} "
            f"({result['new_dev']['mean'] - base_dev['mean']:+.2f})"
        )
    if args.scratch or args.scratch_all:
        report["scratch"] = []
        for k in args.k:
            steps = [r["steps"] for r in results if r and r["k"] == k and r["mode"] == "quick"]
            iterations = args.scratch_iterations or args.base_iterations + (
                int(np.mean(steps)) if steps else 0
            )
            indices = range(len(FOLDS[k])) if args.scratch_all else args.folds or [0]
            for i in indices:
                yard = scratch_run(k, i, split, iterations, args)
                if yard:
                    report["scratch"].append({**yard, "summary": summary(yard["scores"])})
                    print(f"scratch  k={k} fold {i}: {summary(yard['scores'])} ({iterations} iterations)")
    if args.length_control:
        control = length_control(base, base_store, split, args)
        if control:
            report["length_control"] = {**control, "summary": summary(control["scores"])}
            print(
                f"length control ({control['steps']} more steps on the base's data, no corrections): "
                f"{summary(control['scores'])}; dev {control['dev']}"
            )
    for mode in args.modes:
        for k in args.k:
            rows = [f for f in report["folds"] if f["mode"] == mode and f["k"] == k]
            if rows:
                gain = np.mean([r["new"]["mean"] - base_mean["mean"] for r in rows])
                gated = np.mean([r["after_gate"]["mean"] - base_mean["mean"] for r in rows])
                right = sum(r["activated"] == r["better"] for r in rows)
                print(
                    f"{mode} k={k}: mean change {gain:+.2f} (every version), {gated:+.2f} after the gate; "
                    f"gate right in {right}/{len(rows)}"
                )
    print(f"results: {save_results('retrain_loop_acdc', report)}")


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    main()
