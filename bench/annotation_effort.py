"""How many slices must a clinician edit to bring the pre-segmentation to Dice >= 0.90 per organ?

A simulated annotator corrects the bundled model's pre-segmentation of each OpenKBP `val` patient
against its clinical contours, organ by organ, until every organ reaches the target Dice (or
every slice of it was edited). Two annotators:

  brush alone   repeatedly redraws the axial slice of the organ with the most wrong voxels
                (its slice becomes the reference's for that organ: one edited slice).
  with tools    first tries the one-click tools and keeps each only if the organ's Dice rises:
                the specialists' version of each review region of that organ (one key), keep
                largest island, fill holes; then either brushes the worst slices as above, or
                redraws the organ on every Nth axial slice of its extent (N chosen per organ among
                --key-every) and fills between them by contour interpolation (then brushes what is
                still wrong), whichever needs fewer edited slices. Grow, shrink and smooth by one
                in-plane voxel are one-click candidates too.

Two more use the prompts (bench/prompt_users.py): "prompts" (a box, clicks while they help,
then the brush) and "prompts + adapt" (every 8th slice of each organ redrawn, the model adapted to
the scan, then as "prompts"); with them the click-only user's NoC@85 / NoC@90 per organ and the
adapt experiment (Dice on the slices not corrected: unadapted, adapted, contour interpolation).

Both annotators see the reference (a real annotator sees the anatomy), so both are optimistic
alike. Counts: slices edited by hand (one organ on one slice), voxels painted by hand, and apart
from them the tool clicks and the voxels the tools changed.

    python bench/annotation_effort.py [--target 0.90] [--key-every 2 3 4 5 6 8] [--adapt-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import ROOT, save_results, shared_data
from prompt_users import adapt_experiment, click_sequence, noc, prompts_user

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
MAX_EDITS_PER_ORGAN = 400


def dice(labels: np.ndarray, reference: np.ndarray, organ: int) -> float:
    a, b = labels == organ, reference == organ
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


@dataclass
class Effort:
    slices: int = 0  # slices edited by hand (one organ on one slice)
    voxels: int = 0  # voxels painted by hand
    tool_voxels: int = 0  # voxels the tools changed
    clicks: int = 0
    tools_kept: dict[str, int] = field(default_factory=dict)

    def add(self, other: Effort) -> None:
        self.slices += other.slices
        self.voxels += other.voxels
        self.tool_voxels += other.tool_voxels
        self.clicks += other.clicks
        for name, count in other.tools_kept.items():
            self.tools_kept[name] = self.tools_kept.get(name, 0) + count


def brush_worst_slice(labels: np.ndarray, reference: np.ndarray, organ: int) -> int:
    """Redraw the organ on its worst axial slice; returns the voxels changed (0: nothing wrong)."""
    wrong = (labels == organ) != (reference == organ)
    per_slice = wrong.reshape(len(wrong), -1).sum(axis=1)
    z = int(per_slice.argmax())
    if per_slice[z] == 0:
        return 0
    before = labels[z].copy()
    labels[z][(labels[z] == organ) & (reference[z] != organ)] = 0
    labels[z][reference[z] == organ] = organ
    return int((labels[z] != before).sum())


def brush_until(labels: np.ndarray, reference: np.ndarray, organ: int, target: float) -> Effort:
    effort = Effort()
    while dice(labels, reference, organ) < target and effort.slices < MAX_EDITS_PER_ORGAN:
        changed = brush_worst_slice(labels, reference, organ)
        if not changed:
            break
        effort.slices += 1
        effort.voxels += changed
    return effort


def redraw_with_interpolation(
    labels: np.ndarray, reference: np.ndarray, organ: int, key_every: int, target: float
) -> Effort:
    """Clear the organ, draw it on every ``key_every``-th slice of its extent, fill between, brush."""
    from cgs_engine.edit import fill_between_slices

    effort = Effort(clicks=2)  # erase the organ, then fill between slices
    slices = np.flatnonzero((reference == organ).reshape(len(reference), -1).any(axis=1))
    effort.tool_voxels += int((labels == organ).sum())
    labels[labels == organ] = 0
    if slices.size:
        keys = sorted({*slices[::key_every].tolist(), int(slices[-1])})
        for z in keys:  # the organ drawn on the key slice: every voxel of it by hand
            drawn = (reference[z] == organ) & (labels[z] == 0)
            labels[z][drawn] = organ
            effort.voxels += int(drawn.sum())
        effort.slices += len(keys)
        result = fill_between_slices(labels, organ)
        effort.tool_voxels += result.changed_voxels
        labels[...] = result.labels
    brushed = brush_until(labels, reference, organ, target)
    effort.add(brushed)
    return effort


def try_tool(labels, reference, organ, name: str, result_labels: np.ndarray, effort: Effort) -> None:
    """Keep the tool's result only if the organ's Dice rises (the annotator looks and undoes)."""
    effort.clicks += 1
    if dice(result_labels, reference, organ) > dice(labels, reference, organ) + 1e-9:
        effort.tool_voxels += int((result_labels != labels).sum())
        labels[...] = result_labels
        effort.tools_kept[name] = effort.tools_kept.get(name, 0) + 1


def with_tools(
    labels, reference, organ, regions, component_map, maps, spacing_zyx, key_every, target
) -> Effort:
    from cgs_engine.edit import fill_holes, grow, keep_largest_island, shrink, smooth
    from cgs_engine.review.alternative import region_alternative

    effort = Effort()
    for region in regions:
        if organ not in region.likely_classes[:1]:
            continue
        box = tuple(region.bbox)
        inside = component_map[box] == region.id
        alternative, _ = region_alternative(labels, maps, box, inside)
        try_tool(labels, reference, organ, "specialists' version", alternative, effort)
    try_tool(
        labels, reference, organ, "keep largest island", keep_largest_island(labels, organ).labels, effort
    )
    try_tool(labels, reference, organ, "fill holes", fill_holes(labels, organ).labels, effort)
    in_plane = float(min(spacing_zyx[1:]))
    for name, tool in (("grow", grow), ("shrink", shrink)):
        try_tool(labels, reference, organ, name, tool(labels, organ, in_plane, spacing_zyx).labels, effort)
    try_tool(labels, reference, organ, "smooth", smooth(labels, organ, in_plane, spacing_zyx).labels, effort)
    if dice(labels, reference, organ) >= target:
        return effort
    options = [(brush_until(labels.copy(), reference, organ, target).slices, "brush", None)]
    for every in key_every:  # the annotator picks the key-slice spacing that suits the organ
        trial = labels.copy()
        options.append(
            (redraw_with_interpolation(trial, reference, organ, every, target).slices, "redraw", every)
        )
    _, how, every = min(options, key=lambda option: option[0])
    if how == "brush":
        effort.add(brush_until(labels, reference, organ, target))
    else:
        redrawn = redraw_with_interpolation(labels, reference, organ, every, target)
        redrawn.tools_kept[f"fill between slices (every {every})"] = 1
        effort.add(redrawn)
    return effort


def patient_effort(predictor, image_path: Path, reference_path: Path, args) -> dict:
    from cgs_engine.io import read_volume
    from cgs_engine.review.prediction import analyse_prediction, specialist_maps_by_id

    image = read_volume(image_path)
    reference = read_volume(reference_path, kind="labels").array
    prediction = predictor.predict(image, maps=True)
    names = prediction.class_names
    maps = specialist_maps_by_id(prediction)
    regions, component_map, _ = analyse_prediction(prediction)
    start = prediction.labels.array.copy()
    brush_labels, tool_labels = start.copy(), start.copy()
    result = {"organs": {}, "regions": len(regions)}
    brush_total, tool_total = Effort(), Effort()
    for organ in range(1, len(names)):
        before = dice(start, reference, organ)
        brush = brush_until(brush_labels, reference, organ, args.target)
        spacing_zyx = tuple(image.geometry.spacing[::-1])
        tools = with_tools(
            tool_labels,
            reference,
            organ,
            regions,
            component_map,
            maps,
            spacing_zyx,
            args.key_every,
            args.target,
        )
        brush_total.add(brush)
        tool_total.add(tools)
        result["organs"][names[organ]] = {
            "dice_start": round(before, 4),
            "brush": {
                "slices": brush.slices,
                "voxels": brush.voxels,
                "dice": dice(brush_labels, reference, organ),
            },
            "tools": {
                "slices": tools.slices,
                "voxels": tools.voxels,
                "tool_voxels": tools.tool_voxels,
                "clicks": tools.clicks,
                "kept": tools.tools_kept,
                "dice": dice(tool_labels, reference, organ),
            },
        }
    result["brush"] = brush_total.__dict__
    result["tools"] = tool_total.__dict__
    if not args.no_prompts:
        result.update(prompt_efforts(image, reference, start, maps, names, args))
    return result


def prompt_efforts(image, reference, start, maps, names, args) -> dict:
    """The click-only user (NoC), the prompts user, the adapt experiment and prompts + adapt."""
    spacing_zyx = tuple(image.geometry.spacing[::-1])
    scan = image.array
    adapt, adapted = adapt_experiment(
        MODEL, scan, start, reference, spacing_zyx, args.adapt_every, args.adapt_seconds, names
    )
    prompts_labels, adapted_labels = start.copy(), adapted.copy()
    out = {"noc": {}, "prompts": {}, "prompts_adapt": {}, "adapt": adapt, "prompt_seconds": []}
    for organ in range(1, len(names)):
        probability = maps[organ]
        dices, seconds = click_sequence(
            start.copy(), reference, organ, probability, scan, spacing_zyx, np.zeros(start.shape, bool)
        )
        out["prompt_seconds"] += seconds
        out["noc"][names[organ]] = {"noc85": noc(dices, 0.85), "noc90": noc(dices, 0.90), "dice": dices}
        user = prompts_user(
            prompts_labels, reference, organ, probability, scan, spacing_zyx, args.target, brush_until
        )
        out["prompt_seconds"] += user.pop("seconds")
        out["prompts"][names[organ]] = user
        user = prompts_user(
            adapted_labels, reference, organ, probability, scan, spacing_zyx, args.target, brush_until
        )
        user.pop("seconds")
        key_slices = np.flatnonzero((reference == organ).reshape(len(reference), -1).any(axis=1))
        user["slices"] += len(key_slices[:: args.adapt_every])
        out["prompts_adapt"][names[organ]] = user
    return out


def summarise_prompts(patients: dict, brush_slices: int) -> dict:
    """Print and return NoC per organ, slices per user, seconds per prompt and the adapt table."""
    results = list(patients.values())
    organs = list(results[0]["noc"])
    summary = {"noc": {}, "adapt": {}}
    print(f"{'organ':12s} NoC@85 NoC@90   adapt: unadapted adapted interpolated (Dice, slices not corrected)")
    for organ in organs:
        noc85 = float(np.mean([r["noc"][organ]["noc85"] for r in results]))
        noc90 = float(np.mean([r["noc"][organ]["noc90"] for r in results]))
        adapt = {
            k: float(np.mean([r["adapt"]["organs"][organ][k] for r in results]))
            for k in ("unadapted", "adapted", "interpolated")
        }
        summary["noc"][organ] = {"noc85": noc85, "noc90": noc90}
        summary["adapt"][organ] = adapt
        print(
            f"{organ:12s} {noc85:6.1f} {noc90:6.1f}   {adapt['unadapted']:.3f} {adapt['adapted']:.3f} "
            f"{adapt['interpolated']:.3f}"
        )
    for user in ("prompts", "prompts_adapt"):
        slices = sum(v["slices"] for r in results for v in r[user].values())
        brushed = sum(v["brushed_slices"] for r in results for v in r[user].values())
        prompts = sum(v["prompts"] for r in results for v in r[user].values())
        summary[user] = {
            "slices": slices,
            "brushed_slices": brushed,
            "prompts": prompts,
            "ratio_to_brush": brush_slices / max(slices, 1),
            "brushed_ratio_to_brush": brush_slices / max(brushed, 1),
        }
        print(
            f"edited slices, {user}: {slices} = {brushed} brushed + {prompts} prompts "
            f"({brush_slices / max(slices, 1):.2f}x fewer than the brush; brushed alone "
            f"{brush_slices / max(brushed, 1):.2f}x)"
        )
    seconds = [s for r in results for s in r["prompt_seconds"]]
    adapt_seconds = [r["adapt"]["seconds"] for r in results]
    summary["prompt_seconds"] = {"mean": float(np.mean(seconds)), "max": float(np.max(seconds))}
    summary["adapt_seconds"] = {"mean": float(np.mean(adapt_seconds)), "max": float(np.max(adapt_seconds))}
    print(
        f"seconds per prompt: mean {np.mean(seconds):.3f}, max {np.max(seconds):.3f}; "
        f"adapt: mean {np.mean(adapt_seconds):.0f} s, max {np.max(adapt_seconds):.0f} s"
    )
    return summary


def adapt_only(predictor, data: Path, patients, args) -> None:
    from cgs_engine.io import read_volume

    report = {"adapt_every": args.adapt_every, "adapt_seconds": args.adapt_seconds, "patients": {}}
    rows = []
    for patient in patients:
        image = read_volume(data / "images" / f"{patient}.nii.gz")
        reference = read_volume(data / "labels" / f"{patient}.nii.gz", kind="labels").array
        prediction = predictor.predict(image, maps=False)
        spacing_zyx = tuple(image.geometry.spacing[::-1])
        summary, _ = adapt_experiment(
            MODEL,
            image.array,
            prediction.labels.array,
            reference,
            spacing_zyx,
            args.adapt_every,
            args.adapt_seconds,
            prediction.class_names,
        )
        report["patients"][patient] = summary
        means = [
            float(np.mean([o[k] for o in summary["organs"].values()]))
            for k in ("unadapted", "adapted", "interpolated")
        ]
        rows.append(means)
        print(
            f"{patient}: {summary['steps']} steps, {summary['seconds']:.0f} s; Dice on slices not corrected "
            f"unadapted {means[0]:.3f}, adapted {means[1]:.3f}, interpolated {means[2]:.3f}",
            flush=True,
        )
    organs = list(next(iter(report["patients"].values()))["organs"])
    for organ in organs:
        values = [
            [r["organs"][organ][k] for k in ("unadapted", "adapted", "interpolated")]
            for r in report["patients"].values()
        ]
        voxels = {
            k: sum(r["organs"][organ]["voxels"][k] for r in report["patients"].values())
            for k in ("unadapted", "adapted", "reference")
        }
        grown = ", ".join(f"{k} {n}" for k, n in voxels.items())
        print(f"{organ:12s} " + " ".join(f"{v:.3f}" for v in np.mean(values, axis=0)) + f"   voxels {grown}")
    print("mean         " + " ".join(f"{v:.3f}" for v in np.mean(rows, axis=0)))
    print(f"results: {save_results('annotation_effort_adapt', report)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=0.90, help="Dice each organ must reach")
    parser.add_argument(
        "--key-every",
        type=int,
        nargs="+",
        default=[2, 3, 4, 5, 6, 8],
        help="key-slice spacings the annotator may choose from when redrawing an organ to interpolate",
    )
    parser.add_argument("--patients", nargs="*", help="default: the 6 OpenKBP val patients")
    parser.add_argument("--no-prompts", action="store_true", help="only the brush and tools users")
    parser.add_argument("--adapt-only", action="store_true", help="only the adapt experiment")
    parser.add_argument("--adapt-every", type=int, default=8, help="adapt: every Nth slice corrected")
    parser.add_argument("--adapt-seconds", type=float, default=60.0, help="adapt: time budget (s)")
    args = parser.parse_args()
    from cgs_engine.infer import Predictor

    data = shared_data() / "openkbp"
    patients = args.patients or json.loads((data / "split.json").read_text())["val"]
    predictor = Predictor(MODEL, device="cpu")
    if args.adapt_only:
        return adapt_only(predictor, data, patients, args)
    report = {"target": args.target, "key_every": args.key_every, "patients": {}}
    totals = {"brush": Effort(), "tools": Effort()}
    started = time.perf_counter()
    header = ("patient", "brush slices", "tools slices", "brush voxels", "tools voxels")
    print(f"{header[0]:9s} {header[1]:>12s} {header[2]:>12s} {header[3]:>13s} {header[4]:>13s} clicks")
    for patient in patients:
        result = patient_effort(
            predictor, data / "images" / f"{patient}.nii.gz", data / "labels" / f"{patient}.nii.gz", args
        )
        report["patients"][patient] = result
        for arm in totals:
            totals[arm].add(Effort(**result[arm]))
        b, t = result["brush"], result["tools"]
        counts = f"{b['slices']:12d} {t['slices']:12d} {b['voxels']:13d} {t['voxels']:13d}"
        print(f"{patient:9s} {counts} {t['clicks']}")
    b, t = totals["brush"], totals["tools"]
    ratio = b.slices / max(t.slices, 1)
    print(f"{'all':9s} {b.slices:12d} {t.slices:12d} {b.voxels:13d} {t.voxels:13d} {t.clicks}")
    print(f"edited slices: brush alone {b.slices}, with tools {t.slices}: {ratio:.2f}x fewer")
    print(f"voxels painted by hand: {b.voxels} vs {t.voxels}")
    print(f"tool clicks: {t.clicks}, changing {t.tool_voxels} voxels")
    print(f"tools kept: {t.tools_kept}")
    print(f"({time.perf_counter() - started:.0f} s)")
    report["totals"] = {arm: effort.__dict__ for arm, effort in totals.items()}
    report["slice_ratio"] = ratio
    if not args.no_prompts:
        report["prompt_summary"] = summarise_prompts(report["patients"], b.slices)
    print(f"results: {save_results('annotation_effort', report)}")


if __name__ == "__main__":
    main()
