"""How long should a retrain run? Learning curves of the retrained model on new patients.

The protocol of bench/retrain_from_default.py (the bundled model, k of the 6 OpenKBP `val` patients
added as fully corrected volumes, 40 unlabeled scans), one `cgs retrain --iterations N` per fold
with the teacher and the student kept every --every steps (`snapshot_every`). Each snapshot is
scored in 3D on the val patients not added; printed: mean Dice and per-organ change against the
bundled model, and the held-out Dice the activation rule saw at the same steps.

    python bench/retrain_curve.py --k 5 --folds 0 1 --iterations 1200 --every 150 --set poly_power=0
    python bench/retrain_curve.py --report-only --work /tmp/cgs-bench-retrain-curve   # score what is there

--set poly_power=0 holds the learning rate constant after the warm-up, so the snapshot at step s is
what s steps of training give, not a point on a schedule meant for N.
"""

from __future__ import annotations

import argparse
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import save_results, shared_data
from retrain_from_default import MODEL, cgs_cli, folds_of, make_project, organ_mean, score


def run_fold(k: int, index: int, added: list[str], args, data: Path, split: dict) -> Path:
    folder = args.work / f"k{k}-fold{index}"
    project_dir = folder / "project"
    if args.report_only or (folder / "done").exists():
        return project_dir
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "retrain.log"
    make_project(project_dir, added, args, data, split, log)
    cgs_cli(["retrain", str(project_dir), "--iterations", str(args.iterations)], log)
    (folder / "done").write_text("")
    return project_dir


def heldout_curve(project_dir: Path) -> dict[int, float]:
    """Step -> held-out Dice (percent) from the retrain's training log."""
    logs = sorted(project_dir.glob("runs/*/train/log.jsonl"))
    if not logs:
        return {}
    records = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    return {
        r["step"]: round(100 * r["dice_mean"], 2) for r in records if r["kind"] == "val" and "dice_mean" in r
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=5, choices=[1, 3, 5])
    parser.add_argument("--folds", type=int, nargs="+", help="fold indices (default: all)")
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--every", type=int, default=150, help="snapshot and validate every N steps")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unlabeled", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-retrain-curve"))
    args = parser.parse_args()
    args.settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    args.settings.update(snapshot_every=args.every, val_every=args.every)
    data = shared_data() / "openkbp"
    split = json.loads((data / "split.json").read_text())
    val = split["val"]
    folds = [(i, added) for i, added in enumerate(folds_of(args.k, val)) if not args.folds or i in args.folds]
    args.work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        projects = list(pool.map(lambda fold: run_fold(args.k, *fold, args, data, split), folds))

    before = score(MODEL, val, data)
    organs = list(next(iter(before.values())))
    report = {
        "k": args.k,
        "iterations": args.iterations,
        "settings": args.settings,
        "before": before,
        "folds": [],
    }
    gains: dict[str, list[float]] = {}
    for (index, added), project_dir in zip(folds, projects, strict=True):
        scored = [p for p in val if p not in added]
        snapshots = sorted(project_dir.glob("runs/*/train/snapshots/*.pt"))
        if not snapshots:
            print(f"k={args.k} fold {index}: no snapshots in {project_dir}")
            continue
        heldout = heldout_curve(project_dir)
        base = organ_mean(before, scored, "mean")
        print(f"\nk={args.k} fold {index}: scored {', '.join(scored)}; bundled model {base:.2f}")
        print(f"  {'snapshot':16s} {'held-out':>8s} {'mean':>6s} {'change':>7s}   per organ")
        fold = {"fold": index, "added": added, "heldout": heldout, "snapshots": {}}
        for path in snapshots:
            after = score(path, scored, data)
            step = int(path.stem.split("-")[1])
            mean = organ_mean(after, scored, "mean")
            change = mean - base
            gains.setdefault(path.stem, []).append(change)
            organ_changes = {o: organ_mean(after, scored, o) - organ_mean(before, scored, o) for o in organs}
            fold["snapshots"][path.stem] = after
            shown = heldout.get(step)
            print(
                f"  {path.stem:16s} {'-' if shown is None else f'{shown:.2f}':>8s} "
                f"{mean:6.2f} {change:+7.2f}   "
                + " ".join(f"{o[:5]} {v:+.1f}" for o, v in organ_changes.items())
            )
        report["folds"].append(fold)
    print(f"\nk={args.k}, mean change over {len(report['folds'])} fold(s), per snapshot:")
    for name, values in sorted(gains.items(), key=lambda item: (item[0].split("-")[1], item[0])):
        print(
            f"  {name:16s} {sum(values) / len(values):+.2f}  (folds: {' '.join(f'{v:+.2f}' for v in values)})"
        )
    report["mean_change"] = {name: sum(v) / len(v) for name, v in gains.items()}
    print(f"results: {save_results('retrain_curve', report)}")


if __name__ == "__main__":
    main()
