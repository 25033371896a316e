"""Recipe of the bundled default model: CGS on OpenKBP head-and-neck CT, with a supervised baseline.

labeled = OpenKBP's 6 `labeled_train` patients, unlabeled = its 40 unlabeled scans, model
selection and reporting on its 6 `val` patients (3D, per patient, Dice and HD95 in mm). Both
methods get the same settings, seed and wall-time budget. With --install the CGS model is written
in half precision to napari_cgs/models/default.pt with its metrics, the baseline's metrics and
this recipe in its metadata.

    python scripts/train_default_model.py --minutes 25 --work /tmp/cgs-default [--install]

On a GPU, the two methods can train side by side with equal wall time (the shipped model:
--minutes 5.5 on one H100, beside the supervised run and three other variants; bench/gpu_session.sh):

    python scripts/train_default_model.py --methods cgs --minutes 5.5 --set device='"cuda"' &
    python scripts/train_default_model.py --methods supervised --minutes 5.5 --set device='"cuda"'; wait
    python scripts/train_default_model.py --methods --install

The same training through the CLI, on the store this script builds (WORK/openkbp.h5):

    cgs train WORK/openkbp.h5 -o runs/default --method cgs --minutes 5.5 \
        --config scripts/default_model_config.json --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import evaluate_on_val, train_method  # noqa: E402

# The recipe's settings, also usable as `cgs train STORE --config scripts/default_model_config.json`
SETTINGS = json.loads((ROOT / "scripts" / "default_model_config.json").read_text())
SMALLEST = ("Esophagus", "RightParotid", "LeftParotid")  # fewest voxels per patient (measured)
EXTRA_SETTINGS = ("device", "precision", "widths", "lambda_max", "tau", "gate_tau", "threads")


def import_openkbp(data: Path, store: Path) -> None:
    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.store.importers import import_nifti

    split = json.loads((data / "split.json").read_text())

    def paths(folder: str, ids: list[str]) -> list[Path]:
        return [data / folder / f"{i}.nii.gz" for i in ids]

    import_nifti(
        paths("images", split["labeled_train"]),
        paths("labels", split["labeled_train"]),
        paths("unlabeled", split["unlabeled"]),
        store,
        class_names=openkbp_class_names(),
        val_images=paths("images", split["val"]),
        val_labels=paths("labels", split["val"]),
    )


def per_class(evaluation: dict, metric: str) -> dict[str, float | None]:
    return {c["name"]: c["metrics"][metric]["mean"] for c in evaluation["json"]["classes"]}


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE settings (VALUE parsed as JSON where it can be) that replace the recipe's."""
    overrides = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in SETTINGS and key not in EXTRA_SETTINGS:
            sys.exit(f"--set {pair}: unknown setting {key!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def train_and_evaluate(method: str, store: Path, work: Path, minutes: float, settings: dict) -> None:
    run = train_method(store, work / f"run-{method}", method, minutes, settings)
    run["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    run["evaluation"] = evaluate_on_val(Path(run["checkpoint"]), store, spacing_known=True)
    print(
        f"\n== {method}: {run['steps_done']} iterations in {run['wall_minutes']:.1f} min\n"
        f"{run['evaluation']['table']}\n",
        flush=True,
    )
    (work / f"result-{method}.json").write_text(json.dumps(run, indent=2))


def summarise(work: Path, minutes: float, settings: dict) -> dict:
    runs = {m: json.loads((work / f"result-{m}.json").read_text()) for m in ("cgs", "supervised")}
    dice = {m: per_class(r["evaluation"], "dice") for m, r in runs.items()}
    means = {m: r["evaluation"]["json"]["mean"]["dice"]["mean"] for m, r in runs.items()}
    wins = {name: dice["cgs"][name] > dice["supervised"][name] for name in SMALLEST}
    print("per-class val Dice (%):  class  CGS  supervised")
    for name in dice["cgs"]:
        print(f"  {name:13s} {100 * dice['cgs'][name]:6.2f} {100 * dice['supervised'][name]:6.2f}")
    print(f"  {'mean':13s} {100 * means['cgs']:6.2f} {100 * means['supervised']:6.2f}")
    print(f"CGS wins on the mean: {means['cgs'] > means['supervised']}; on the smallest organs: {wins}")
    summary = {
        "recipe": {
            "summarised_by": " ".join(sys.argv),
            "train_commands": {m: r.get("command") for m, r in runs.items()},
            "settings": settings,
            "minutes": minutes,
            "cgs_config": runs["cgs"]["config"],
        },
        "methods": {
            m: {
                "iterations": r["steps_done"],
                "dice": dice[m],
                "hd95_mm": per_class(r["evaluation"], "hd95_mm"),
                "mean_dice": means[m],
                "checkpoint": r["checkpoint"],
            }
            for m, r in runs.items()
        },
        "cgs_wins": {"mean": bool(means["cgs"] > means["supervised"]), **wins},
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=25, help="wall-time budget per method")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-default"))
    parser.add_argument(
        "--methods",
        nargs="*",
        default=["cgs", "supervised"],
        choices=["cgs", "supervised"],
        help="train these (one process each can run side by side on a GPU); none: only summarise",
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--install", action="store_true", help="write napari_cgs/models/default.pt")
    args = parser.parse_args()
    settings = {**SETTINGS, **parse_overrides(args.set)}
    data = Path(os.environ.get("CGS_SHARED_DATA", ROOT.parent / "shared" / "data")) / "openkbp"
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / "openkbp.h5"
    if not store.exists():
        import_openkbp(data, store)
    for method in args.methods:
        train_and_evaluate(method, store, args.work, args.minutes, settings)
    if all((args.work / f"result-{m}.json").exists() for m in ("cgs", "supervised")):
        summary = summarise(args.work, args.minutes, settings)
        if args.install:
            install(Path(summary["methods"]["cgs"]["checkpoint"]), summary)


def install(checkpoint_path: Path, summary: dict) -> None:
    from cgs_engine.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint.metrics = {
        **checkpoint.metrics,
        "openkbp_val": summary["methods"],
        "recipe": summary["recipe"],
        "installed": time.strftime("%Y-%m-%d"),
    }
    target = ROOT / "napari_cgs" / "models" / "default.pt"
    save_checkpoint(checkpoint, target, half=True)
    print(f"installed {target} ({target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
