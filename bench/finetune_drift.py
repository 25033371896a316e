"""Why does fine-tuning the shipped model lose on new patients? Ablations on its OWN training data.

The retrain recipe (``cgs_engine.retrain``: AdamW lr 1e-4, warm-up, frozen BatchNorm,
pseudo-labels from the frozen start model, teacher at 0.999...) fine-tunes the bundled model on
nothing but what it was trained on: the 6 OpenKBP ``labeled_train`` patients (its prior data) plus
unlabeled scans. No new patient, no other institution's convention goes in, so a sound recipe
should stay where it is; whatever it loses on the 6 ``val`` patients is the recipe's own doing.
Each variant keeps the student and the teacher every --every steps; each snapshot is scored in 3D
on the val patients (scored only: nothing is selected on them).

    python bench/finetune_drift.py --iterations 600 --every 150 --variants base mirror-swap sgd
    python bench/finetune_drift.py --variants base --set lr=3e-4          # any TrainConfig override

Variants (on top of the retrain recipe): base (mirror "keep" and Dice over absent classes: how
every retrain ran until now), mirror-swap (mirrored slices swap the parotids), mirror-off (no mirror
images), sgd (SGD with momentum, lr 1e-3, instead of a fresh AdamW), no-unlabeled (lambda_max 0),
adamw-lr1e-5, batch8 (8 + 8 instead of 4 + 4), bn-train (BatchNorm statistics trained),
dice-skip (classes absent from a batch left out of the Dice mean), fixed (dice-skip + mirror swap).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import ROOT, save_results, shared_data

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
OLD = {"mirror": "keep", "dice_absent": "include"}  # how every retrain ran before this benchmark
VARIANTS = {
    "base": OLD,
    "mirror-swap": {**OLD, "mirror": "swap"},
    "mirror-off": {**OLD, "mirror": "off"},
    "sgd": {**OLD, "optimizer": "sgd", "lr": 1e-3},
    "no-unlabeled": {**OLD, "lambda_max": 0.0},
    "adamw-lr1e-5": {**OLD, "lr": 1e-5},
    "batch8": {**OLD, "batch_labeled": 8, "batch_unlabeled": 8},
    "bn-train": {**OLD, "freeze_batchnorm": False},
    "dice-skip": {**OLD, "dice_absent": "skip"},
    "dice-skip-sgd": {**OLD, "dice_absent": "skip", "optimizer": "sgd", "lr": 1e-3},
    "fixed": {"mirror": "swap", "dice_absent": "skip"},
}


def build_store(work: Path, data: Path, split: dict, unlabeled: int) -> Path:
    from cgs_engine.checkpoint import load_checkpoint
    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.normalize import Normalization
    from cgs_engine.store.importers import import_nifti

    store = work / "store.h5"
    if store.exists():
        return store
    normalization = Normalization.from_dict(load_checkpoint(MODEL).normalization)
    import_nifti(
        [data / "images" / f"{p}.nii.gz" for p in split["labeled_train"]],
        [data / "labels" / f"{p}.nii.gz" for p in split["labeled_train"]],
        [data / "unlabeled" / f"{p}.nii.gz" for p in split["unlabeled"][:unlabeled]],
        store,
        class_names=openkbp_class_names(),
        normalization=normalization,
        val_images=[data / "images" / f"{p}.nii.gz" for p in split["val"]],
        val_labels=[data / "labels" / f"{p}.nii.gz" for p in split["val"]],
    )
    return store


def recipe(overrides: dict, iterations: int, every: int, threads: int):
    from cgs_engine.checkpoint import load_checkpoint
    from cgs_engine.retrain.recipe import FINE_TUNING_DEFAULTS, INHERITED_SETTINGS, RETRAIN_DEFAULTS
    from cgs_engine.train.config import TrainConfig

    checkpoint = load_checkpoint(MODEL)
    values = dict(RETRAIN_DEFAULTS)
    values.update({k: v for k, v in (checkpoint.train_config or {}).items() if k in INHERITED_SETTINGS})
    values.update(FINE_TUNING_DEFAULTS)
    values.update(
        iterations=iterations,
        max_iterations=None,
        snapshot_every=every,
        val_every=10**9,  # validation would only score the val patients; snapshots are scored below
        threads=threads,
        init_checkpoint=str(MODEL),
        input_size=checkpoint.input_size,
        widths=list(checkpoint.model_config.widths),
        dropouts=list(checkpoint.model_config.dropouts),
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


def score(model: Path, store: Path) -> dict[str, dict[str, float | None]]:
    """Per val patient, per organ: 3D Dice in percent."""
    import torch

    from cgs_engine.checkpoint import build_network, load_checkpoint
    from cgs_engine.evaluate.metrics import dice_per_class
    from cgs_engine.infer.slices import predict_label_volume
    from cgs_engine.runtime import resolve_runtime
    from cgs_engine.store import SliceStore

    torch.set_num_threads(1)
    checkpoint = load_checkpoint(model)
    network = build_network(checkpoint, model).eval()
    runtime = resolve_runtime("cpu", "auto", 1)
    names = checkpoint.class_names
    out = {}
    with SliceStore.open(store) as opened:
        for name in opened.volume_names("val"):
            stored = opened.read_volume(name)
            predicted = predict_label_volume(network, stored.image, checkpoint.input_size, runtime)
            dice = dice_per_class(predicted, np.asarray(stored.label), len(names))
            out[name] = {
                n: (None if not np.isfinite(d) else round(100 * float(d), 2))
                for n, d in zip(names[1:], dice[1:], strict=True)
            }
    return out


def mean_dice(per_patient: dict) -> float:
    return float(
        np.mean([np.mean([v for v in organs.values() if v is not None]) for organs in per_patient.values()])
    )


def organ_means(per_patient: dict) -> dict[str, float]:
    organs = next(iter(per_patient.values())).keys()
    return {
        o: round(float(np.mean([p[o] for p in per_patient.values() if p[o] is not None])), 2) for o in organs
    }


def run_variant(name: str, args, store: Path) -> Path:
    from cgs_engine.train.loop import train

    run = args.work / name
    if (run / "final.pt").exists():
        return run
    if run.exists():
        import shutil

        shutil.rmtree(run)
    config = recipe({**VARIANTS[name], **args.settings}, args.iterations, args.every, args.threads)
    started = time.perf_counter()
    train(store, run, config)
    (run / "seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    return run


def train_in_subprocess(variant: str, work: Path) -> None:
    command = [sys.executable, __file__, "--train-only", variant, *sys.argv[1:]]
    with open(work / f"{variant}.log", "a") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--every", type=int, default=150)
    parser.add_argument("--variants", nargs="+", default=["base", "mirror-swap"], choices=sorted(VARIANTS))
    parser.add_argument("--unlabeled", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--train-only", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-finetune-drift"))
    args = parser.parse_args()
    args.settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    data = shared_data() / "openkbp"
    split = json.loads((data / "split.json").read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    store = build_store(args.work, data, split, args.unlabeled)
    if args.train_only:
        run_variant(args.train_only, args, store)
        return
    # One process per variant (threads of one process would share the GIL).
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda v: train_in_subprocess(v, args.work), args.variants))
    runs = {variant: args.work / variant for variant in args.variants}

    before = score(MODEL, store)
    report = {"iterations": args.iterations, "settings": args.settings, "shipped": before, "variants": {}}
    print(f"shipped model on the 6 val patients: {mean_dice(before):.2f}  {organ_means(before)}")
    for name, run in runs.items():
        curve = {}
        for role in ("student", "teacher"):
            for snapshot in sorted((run / "snapshots").glob(f"{role}-*.pt")):
                step = int(snapshot.stem.split("-")[1])
                scored = score(snapshot, store)
                curve.setdefault(step, {})[role] = scored
                print(
                    f"{name:14s} step {step:5d} {role:7s} {mean_dice(scored):6.2f} "
                    f"({mean_dice(scored) - mean_dice(before):+.2f})  {organ_means(scored)}"
                )
        report["variants"][name] = {"overrides": VARIANTS[name], "curve": curve}
    save_results("finetune_drift", report)


if __name__ == "__main__":
    main()
