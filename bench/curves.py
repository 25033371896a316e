"""Dice against CPU-minutes: CGS, FixMatch and supervised side by side, on ACDC, SegTHOR and OpenKBP.

For each data set the methods train at the same time, one process each with the same number of
threads, on the same store and the same recipe (the project's CPU recipe, ``RECIPES``), for the
same wall time; every --every minutes each run keeps its EMA teacher (``snapshot_minutes``). Each
snapshot is then scored in 3D on the reported volumes, which nothing is chosen on (no checkpoint
selection, no early stop): ACDC's 20 `val` volumes, SegTHOR's 3 `val` patients, OpenKBP's 6 `val`
patients. The x axis is the CPU time the run's process had used (threads x wall time when it has
the cores to itself), so methods that shared the machine are compared fairly.

    python bench/curves.py --work /tmp/curves                          # all three data sets
    python bench/curves.py --datasets acdc --minutes 60 --methods cgs  # one curve
    python bench/curves.py --report-only --work /tmp/curves            # score and plot what is there
    python bench/curves.py --plot-from bench/results/curves-A.json bench/results/curves-B.json
                                                   # one plot from saved results (later files win)
    python bench/curves.py --datasets segthor --variant cgs-gated:cgs:gate_tau=0.95 --score-on dev
                                                   # a recipe change beside the methods, for choosing

``--score-on dev`` scores on selection data instead (ACDC's `dev` volumes; SegTHOR's unlabeled
training patients, whose labels the runs never see): recipe choices are made there, and the
reported volumes are scored afterwards for what is kept (the cached scores are kept per split).

Writes bench/results/curves-*.json and the plot docs/curves.png (--plot elsewhere). ACDC and
SegTHOR are research-only: read from ../shared/data, never copied.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from common import CPU_RECIPE, ROOT, machine, save_results, shared_data

METHODS = ("cgs", "fixmatch", "supervised")
DEFAULT_MINUTES = {"acdc": 60.0, "segthor": 30.0, "openkbp": 60.0}
# unlabeled_start 0.05 (chosen before measuring, on cost alone; TrainConfig.unlabeled_start): on
# SegTHOR CGS 55.5 at 6.2 CPU-minutes with it, 7.3 at 5.4 without (curves-20261205-2311 vs -2018).
COMMON = {**CPU_RECIPE, "unlabeled_start": 0.05}
# The project's CPU recipe per data set (README, "Dice against CPU-minutes"); OpenKBP's is the bundled
# model's recipe (scripts/default_model_config.json).
RECIPES = {
    "acdc": {**COMMON, "ramp_fraction": 0.3},
    "segthor": {**COMMON, "ramp_fraction": 1.0},
    "openkbp": {**COMMON, "foreground_fraction": 0.5, "ramp_fraction": 0.3, "gate_tau": 0.95},
}


# ----------------------------------------------------------------------------- data
# ACDC's and SegTHOR's files were min-max scaled per volume upstream, so one bright voxel can squeeze
# a whole volume dark (ACDC dev patient042: mean 0.035 of its range; the 3-patient model found no
# heart in it). The recipe normalises each volume by its 0.5 / 99.5 percentiles instead, which is
# the same whether applied to the raw scan or to the files' rescaled copy.
NORMALIZATION = {"acdc": "mr-percentile", "segthor": "mr-percentile", "openkbp": "ct-window"}


def build_store(dataset: str, work: Path) -> Path:
    """The training store of a data set (labeled + unlabeled; no validation split: nothing is selected)."""
    store = work / f"{dataset}.h5"
    if store.exists():
        return store
    data = shared_data()
    if dataset == "acdc":
        from acdc_data import acdc_split
        from acdc_data import build_store as acdc_store

        split = acdc_split(data / "acdc_ssl4mis_h5")
        others = split.pool + split.rest + split.dev
        return acdc_store(split, store, split.labeled, others, [], NORMALIZATION["acdc"])
    if dataset == "segthor":
        from cgs_engine.store.importers import import_segthor_png

        raw = import_segthor_png(data / "segthor_2d_png", work / "segthor-files.h5", 3)
        return renormalized(raw, store, NORMALIZATION["segthor"])
    from cgs_engine.classes.organs import openkbp_class_names
    from cgs_engine.store.importers import import_nifti

    root = data / "openkbp"
    split = json.loads((root / "split.json").read_text())
    return import_nifti(
        [root / "images" / f"{p}.nii.gz" for p in split["labeled_train"]],
        [root / "labels" / f"{p}.nii.gz" for p in split["labeled_train"]],
        [root / "unlabeled" / f"{p}.nii.gz" for p in split["unlabeled"]],
        store,
        class_names=openkbp_class_names(),
        body_region="head and neck",
    )


def renormalized(source: Path, out: Path, mode: str) -> Path:
    """A copy of a store with every volume normalised by ``mode``, training splits only."""
    from cgs_engine.normalize import Normalization
    from cgs_engine.store import SliceStore

    normalize = Normalization(mode=mode)
    with (
        SliceStore.open(source) as old,
        SliceStore.create(out, old.class_names, normalize, old.class_colors) as new,
    ):
        for split in ("labeled", "unlabeled"):
            for name in old.volume_names(split):
                stored = old.read_volume(name)
                new.add_volume(
                    name, normalize.apply(stored.image), stored.label, split=split, geometry=stored.geometry
                )
    return out


def scored_volumes(dataset: str, work: Path, score_on: str = "reported"):
    """(name, image as the files hold it [z, y, x], label) of the volumes the curves are scored on:
    the reported split, or with ``score_on="dev"`` the selection split."""
    data = shared_data()
    if score_on == "dev":
        yield from dev_volumes(dataset, data, work)
        return
    if dataset == "acdc":
        yield from acdc_volumes(data, "test")
        return
    if dataset == "segthor":  # the importer keeps the 3 val patients, at the files' scale
        from cgs_engine.store import SliceStore

        with SliceStore.open(work / "segthor-files.h5") as opened:
            for name in opened.volume_names("val"):
                stored = opened.read_volume(name)
                yield name, np.asarray(stored.image), np.asarray(stored.label)
        return
    from cgs_engine.io import read_volume

    root = data / "openkbp"
    for patient in json.loads((root / "split.json").read_text())["val"]:
        image = read_volume(root / "images" / f"{patient}.nii.gz").array
        label = read_volume(root / "labels" / f"{patient}.nii.gz", kind="labels").array
        yield patient, image, label


def acdc_volumes(data: Path, part: str):
    """ACDC's volumes of one part of the benchmark split ("test": reported; "dev": selection)."""
    from acdc_data import acdc_split, read_volume_arrays

    split = acdc_split(data / "acdc_ssl4mis_h5")
    # test lists volume ids (val.list); dev lists patients, each with its ED and ES volumes
    volume_ids = split.test if part == "test" else split.volume_ids(split.dev)
    for volume_id in volume_ids:
        image, label = read_volume_arrays(split, volume_id)
        yield volume_id, image, label


def dev_volumes(dataset: str, data: Path, work: Path):
    """Selection volumes: never reported, their labels never trained on."""
    if dataset == "acdc":
        yield from acdc_volumes(data, "dev")
        return
    if dataset == "segthor":  # the store's unlabeled training patients, labels from their PNGs
        from cgs_engine.store import SliceStore
        from cgs_engine.store.importers import read_segthor_label

        root = data / "segthor_2d_png" / "train"
        with SliceStore.open(work / "segthor-files.h5") as opened:
            for name in opened.volume_names("unlabeled"):
                yield name, np.asarray(opened.read_volume(name).image), read_segthor_label(root, name)
        return
    raise SystemExit(f"--score-on dev: {dataset} has no selection split with labels")


# ----------------------------------------------------------------------------- training
def runs_of(args) -> dict[str, tuple[str, dict]]:
    """Run label -> (method, settings on top of the recipe): the methods, then any --variant."""
    runs = {method: (method, {}) for method in args.methods}
    for item in args.variants:
        try:
            label, method, *pairs = item.split(":")
            settings = {key: json.loads(value) for key, value in (pair.split("=", 1) for pair in pairs)}
        except ValueError:
            raise SystemExit(f"--variant {item!r}: expected LABEL:METHOD:KEY=VALUE[:KEY=VALUE...]") from None
        if method not in METHODS or label in runs:
            raise SystemExit(f"--variant {item!r}: unknown method or a label already used")
        runs[label] = (method, settings)
    return runs


def train_one(dataset: str, label: str, args) -> None:
    """One run, in this process (called through a subprocess per method)."""
    import torch

    from cgs_engine.train.config import TrainConfig
    from cgs_engine.train.loop import train

    torch.set_num_threads(args.threads)
    store = build_store(dataset, args.work)
    run = args.work / f"{dataset}-{label}"
    method, variant = runs_of(args)[label]
    settings = {**RECIPES[dataset], **args.settings, **variant}
    config = TrainConfig(
        method=method,
        minutes=args.minutes[dataset],
        snapshot_minutes=args.every,
        val_every=10**9,  # no validation inside the budget: nothing is selected
        threads=args.threads,
        **settings,
    )
    train(store, run, config)


def train_side_by_side(dataset: str, labels: list[str], args) -> None:
    build_store(dataset, args.work)
    processes = []
    for label in labels:
        run = args.work / f"{dataset}-{label}"
        if (run / "final.pt").exists():
            continue
        if run.exists():
            import shutil

            shutil.rmtree(run)
        log = open(args.work / f"{dataset}-{label}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, __file__, "--train-one", f"{dataset}:{label}", *sys.argv[1:]]
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log, label))
    for process, log, label in processes:
        if process.wait():
            raise SystemExit(f"{dataset} {label} failed; see {log.name}")
        log.close()


# ----------------------------------------------------------------------------- scoring
def score_snapshots(dataset: str, labels: list[str], args) -> dict:
    """Run label -> its snapshots' scores on the --score-on volumes."""
    import torch

    from cgs_engine.checkpoint import build_network, load_checkpoint
    from cgs_engine.evaluate.metrics import dice_per_class
    from cgs_engine.infer.slices import predict_label_volume
    from cgs_engine.normalize import Normalization
    from cgs_engine.runtime import resolve_runtime

    torch.set_num_threads(2)
    runtime = resolve_runtime("cpu", "auto", 2)
    build_store(dataset, args.work)
    volumes = list(scored_volumes(dataset, args.work, args.score_on))
    suffix = "" if args.score_on == "reported" else f"-{args.score_on}"
    cache = args.work / f"{dataset}-scores{suffix}.json"
    scores = json.loads(cache.read_text()) if cache.exists() else {}
    curves = {}
    for label in labels:
        snapshots = sorted((args.work / f"{dataset}-{label}" / "snapshots").glob("teacher-*.pt"))
        points = []
        for path in snapshots:
            if str(path) not in scores:
                model = load_checkpoint(path)
                network = build_network(model, path).eval()
                normalize = Normalization.from_dict(model.normalization)
                per_volume = []
                for _, image, label in volumes:
                    predicted = predict_label_volume(
                        network, normalize.apply(image), model.input_size, runtime
                    )
                    per_volume.append(dice_per_class(predicted, label, len(model.class_names))[1:])
                with np.errstate(all="ignore"):
                    per_class = np.nanmean(np.stack(per_volume), axis=0)
                scores[str(path)] = {
                    "step": model.metrics["step"],
                    "cpu_minutes": round(model.metrics["cpu_s"] / 60, 2),
                    "wall_minutes": round(model.metrics["elapsed_s"] / 60, 2),
                    "dice": {
                        n: round(100 * float(d), 2)
                        for n, d in zip(model.class_names[1:], per_class, strict=True)
                    },
                }
                cache.write_text(json.dumps(scores, indent=1))
            point = dict(scores[str(path)])
            point["mean"] = round(float(np.mean(list(point["dice"].values()))), 2)
            points.append(point)
        curves[label] = points
    return curves


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(report["datasets"])
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 4.2), squeeze=False)
    colours = {"cgs": "#d62728", "fixmatch": "#1f77b4", "supervised": "#7f7f7f"}
    for axis, dataset in zip(axes[0], datasets, strict=True):
        # --variant runs: dashed, each in a colour of its own (not the default cycle's blue again)
        variant_colours = iter(["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"] * 4)
        for label, points in report["datasets"][dataset]["curves"].items():
            if points:
                axis.plot(
                    [p["cpu_minutes"] for p in points],
                    [p["mean"] for p in points],
                    marker="o",
                    markersize=3,
                    color=colours.get(label) or next(variant_colours),
                    linestyle="-" if label in colours else "--",
                    label=label,
                )
        axis.set_title(f"{dataset}: {_scored_on(report['datasets'][dataset])}")
        axis.set_xlabel("CPU-minutes of training (process CPU time)")
        axis.set_ylabel("mean 3D Dice %")
        axis.grid(alpha=0.3)
        axis.legend()
    # the machine line is long (CPU, threads, runtime): wrapped to the figure's width, not cut off
    figure.suptitle(textwrap.fill(report["machine"], width=int(11 * figure.get_figwidth())), fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def merged_results(paths: list[Path]) -> dict:
    """The data sets of several results files in one report (a later file's data set wins)."""
    report = {"machine": "", "datasets": {}}
    machines = []
    for path in paths:
        try:
            saved = json.loads(path.read_text())
            datasets = saved["datasets"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"{path}: not a curves results file ({error})") from None
        report["datasets"].update(datasets)
        if saved.get("machine") and saved["machine"] not in machines:
            machines.append(saved["machine"])
    report["machine"] = " | ".join(machines)
    return report


REPORTED = {
    "acdc": "20 val volumes",
    "segthor": "3 val patients",
    "openkbp": "6 val patients",
}
DEV = {"acdc": "20 dev volumes (selection)", "segthor": "10 unlabeled train patients (selection)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_MINUTES), choices=list(DEFAULT_MINUTES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--minutes", type=float, help="wall-time budget of every run (default per data set)")
    parser.add_argument("--every", type=float, default=5.0, help="snapshot every N minutes")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--variant", dest="variants", action="append", default=[], metavar="LABEL:METHOD:KEY=VALUE",
        help="one more run: METHOD with these settings on top of the recipe, named LABEL",
    )  # fmt: skip
    parser.add_argument("--score-on", choices=("reported", "dev"), default="reported")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "curves.png")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cgs-bench-curves"))
    parser.add_argument("--plot-from", nargs="+", type=Path, metavar="RESULTS", help="plot saved results")
    parser.add_argument("--train-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plot_from:
        plot(merged_results(args.plot_from), args.plot)
        print(f"plot: {args.plot}")
        return
    args.settings = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.overrides)}
    args.minutes = {d: args.minutes or DEFAULT_MINUTES[d] for d in DEFAULT_MINUTES}
    args.work.mkdir(parents=True, exist_ok=True)
    if args.train_one:
        dataset, label = args.train_one.split(":", 1)
        train_one(dataset, label, args)
        return
    labels = list(runs_of(args))
    report = {
        "machine": machine(),
        "threads_per_run": args.threads,
        "settings": args.settings,
        "variants": {label: setting for label, (_, setting) in runs_of(args).items() if setting},
        "scored_on": args.score_on,
        "datasets": {},
    }
    for dataset in args.datasets:
        started = time.perf_counter()
        if not args.report_only:
            train_side_by_side(dataset, labels, args)
        curves = score_snapshots(dataset, labels, args)
        report["datasets"][dataset] = {
            "minutes": args.minutes[dataset],
            "recipe": {**RECIPES[dataset], **args.settings},
            "scored": REPORTED[dataset] if args.score_on == "reported" else DEV[dataset],
            "curves": curves,
            "wall_minutes": round((time.perf_counter() - started) / 60, 1),
        }
        print(f"\n{dataset} ({report['datasets'][dataset]['scored']}), mean 3D Dice % at CPU-minutes:")
        for label, points in curves.items():
            print(f"  {label:10s} " + "  ".join(f"{p['cpu_minutes']:.0f}:{p['mean']:.1f}" for p in points))
            if points:
                last = points[-1]
                print(f"  {'':10s} last: " + ", ".join(f"{k} {v:.1f}" for k, v in last["dice"].items()))
    print(f"results: {save_results('curves', report)}")
    plot(report, args.plot)
    print(f"plot: {args.plot}")


def _scored_on(entry: dict) -> str:
    """What a dataset's curves were scored on (results files before the key was renamed say "reported")."""
    return entry.get("scored") or entry.get("reported", "")


if __name__ == "__main__":
    main()
