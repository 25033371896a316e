"""Shared pieces of the benchmarks: locating ../shared/data, training runs, evaluating on val volumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The project's CPU recipe, the part every data set shares (each benchmark adds its own ramp,
# sampling and validation settings)
CPU_RECIPE = dict(input_size=128, batch_labeled=8, batch_unlabeled=8, optimizer="adamw", lr=2e-3, seed=0)

# OpenKBP training settings shared by the default-model recipe and the retrain benchmark
OPENKBP_SETTINGS = dict(
    **CPU_RECIPE,
    foreground_fraction=0.5,
    ramp_fraction=0.3,
    # Teacher confidence gate on the IHED and consensus masks (not in the reference): on OpenKBP
    # (H100, equal wall time) CGS 69.1 / 68.2 mean Dice with it (seeds 0 / 1), 62.1 without,
    # supervised 65.5 / 63.5.
    gate_tau=0.95,
    val_every=100,
)


def shared_data() -> Path:
    path = Path(os.environ.get("CGS_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        sys.exit(f"benchmark skipped: {path} is absent (set CGS_SHARED_DATA)")
    return path


def evaluate_on_val(checkpoint: Path, store_path: Path, spacing_known: bool) -> dict:
    """Per-class Dice/Jaccard/HD95/ASD of a checkpoint on the store's val volumes (3D, per volume)."""
    from cgs_engine.evaluate import evaluate_volume, format_table, summarise, to_json
    from cgs_engine.infer import Predictor
    from cgs_engine.store import SliceStore
    from cgs_engine.volume import Volume

    predictor = Predictor(checkpoint)
    names = predictor.class_names
    classes = {i: name for i, name in enumerate(names) if i > 0}
    per_volume = {}
    started = time.perf_counter()
    with SliceStore.open(store_path) as store:
        for name in store.volume_names("val"):
            stored = store.read_volume(name)
            volume = Volume(np.asarray(stored.image), stored.geometry)
            # stores keep images normalised: no second normalisation
            prediction = predictor.predict(volume, maps=False, normalized=True)
            spacing = stored.geometry.spacing[::-1] if spacing_known else (1.0, 1.0, 1.0)
            per_volume[name] = evaluate_volume(
                prediction.labels.array, np.asarray(stored.label), classes, spacing
            )
    summary = summarise(per_volume, classes)
    return {
        "table": format_table(summary),
        "json": to_json(summary),
        "seconds": time.perf_counter() - started,
    }


def train_method(store: Path, run_dir: Path, method: str, minutes: float, settings: dict) -> dict:
    from cgs_engine.train.config import TrainConfig
    from cgs_engine.train.loop import train

    config = TrainConfig(method=method, minutes=minutes, **settings)
    started = time.perf_counter()

    def show(event: dict) -> None:
        if event["kind"] == "val" and "dice_mean" in event:
            print(
                f"    [{method}] step {event['step']}: val mean Dice {100 * event['dice_mean']:.2f}",
                flush=True,
            )
        elif event["kind"] == "start":
            budget = f"{event['total']} iterations" if event["total"] else f"{minutes} min"
            print(f"    [{method}] {budget} on {event['runtime']}", flush=True)

    result = train(store, run_dir, config, on_event=show)
    return {
        "method": method,
        "iterations": result.total_steps,
        "steps_done": result.steps_done,
        "wall_minutes": (time.perf_counter() - started) / 60,
        "best_val_dice_during_training": result.best_dice,
        "checkpoint": str(result.best_checkpoint),
        "config": config.to_dict(),
    }


def save_results(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M")
    path, n = RESULTS / f"{name}-{stamp}.json", 1
    while True:  # two benchmarks finishing in the same minute must not overwrite each other
        try:
            with open(path, "x") as stream:
                stream.write(json.dumps(data, indent=2))
            return path
        except FileExistsError:
            n += 1
            path = RESULTS / f"{name}-{stamp}-{n}.json"


def machine() -> str:
    """The CPU model and the precision the engine picks on it, for every reported figure."""
    import platform

    import torch

    from cgs_engine.runtime import resolve_runtime

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return f"{cpu}, {torch.get_num_threads()} threads here; {resolve_runtime('cpu', 'auto', 1)}"


def mean_dice(evaluation: dict) -> float:
    return 100 * evaluation["json"]["mean"]["dice"]["mean"]


def compare_methods(
    name: str,
    store: Path,
    work: Path,
    methods: list[str],
    minutes_for,
    settings: dict,
    spacing_known: bool,
    extra: dict | None = None,
) -> dict:
    """Train each method on the same store and budget rule, evaluate on val, print tables and a summary."""
    results = {"settings": settings, **(extra or {}), "methods": {}}
    for method in methods:
        run = train_method(store, work / f"run-{method}", method, minutes_for(method), settings)
        run["evaluation"] = evaluate_on_val(Path(run["checkpoint"]), store, spacing_known=spacing_known)
        results["methods"][method] = run
        print(
            f"\n== {method}: {run['steps_done']} iterations in {run['wall_minutes']:.1f} min, "
            f"val mean Dice {mean_dice(run['evaluation']):.2f}\n{run['evaluation']['table']}\n",
            flush=True,
        )
    print("summary (mean 3D Dice over the val volumes):")
    for method, run in results["methods"].items():
        per_class = {
            c["name"]: 100 * c["metrics"]["dice"]["mean"] for c in run["evaluation"]["json"]["classes"]
        }
        print(
            f"  {method:10s} {mean_dice(run['evaluation']):6.2f}  "
            + "  ".join(f"{k} {v:.2f}" for k, v in per_class.items())
        )
    print(f"results: {save_results(name, results)}")
    return results


def cgs_cli(arguments: list[str], log: Path) -> None:
    """Run one `cgs` command in a child process, its output appended to ``log``; stop on failure."""
    with open(log, "a") as stream:
        stream.write(f"$ cgs {' '.join(arguments)}\n")
        stream.flush()
        completed = subprocess.run(
            [sys.executable, "-m", "cgs_engine", *arguments], stdout=stream, stderr=subprocess.STDOUT
        )
    if completed.returncode:
        raise SystemExit(f"cgs {arguments[0]} failed (exit {completed.returncode}); see {log}")
