"""Does the review point at the model's real errors? Voxel ranking, the queue's regions, the worklist.

For a checkpoint and labeled scans (default: the bundled model on the 6 OpenKBP `val` patients,
which it was not trained on), each scan is predicted once with its maps and compared with its
reference labels.

Voxels: within BAND voxels of any predicted or reference organ (the "organ band"), a voxel is
wrong where the prediction differs from the reference. Each score ranks the band's voxels; we
report the average precision and the share of the wrong voxels among the top 5 % and 10 %
(ties split in proportion, `cgs_engine.evaluate.ranking`), pooled over the scans and per organ
(organ k's band and errors: its own predicted or reference voxels and the voxels near them).
Scores: the IHED disagreement map; nearness to a predicted organ border (the baseline that needs
no model: minus the distance to the nearest voxel with a neighbour of another label); 1 - the
highest specialist "mine" probability; 1 - the generalist's margin; the uncalibrated fallback
score; and the likely-wrong map (the checkpoint's calibrated error model).

Queue: the top 5 / 10 / 20 regions of each scan: the share of the scan's wrong voxels inside
them and the share of their voxels that are wrong, for the likely-wrong queue, the disagreement
queue (without an error model) and a border baseline (each organ's two border layers, split
into connected parts per organ, largest first).

Worklist: per scan 1 - mean estimated Dice against the true mean Dice (Spearman; worse scans must
come first, so the target is <= -0.6), and per organ the estimated against the true Dice.

The error model must not have been fitted on any scored scan: its record of cases is checked
(`--fit` fits a fresh one on the checkpoint's prior data, e.g. with `--l2` changed).

    python bench/review_recall.py [--checkpoint PT] [--split val] [--fit] [--wrong-threshold 0.3 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import ROOT, save_results, shared_data
from scipy import ndimage, stats

from cgs_engine.evaluate.ranking import average_precision, error_band, recall_at
from cgs_engine.io import read_volume
from cgs_engine.review.error_features import collect_evidence
from cgs_engine.review.error_model import UNCALIBRATED
from cgs_engine.review.prediction import network_maps, specialist_maps_by_id
from cgs_engine.review.regions import WRONG_THRESHOLD, find_regions_with_map

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
BAND = 3.0
FRACTIONS = (0.05, 0.10)
TOP_REGIONS = (5, 10, 20)
SCORES = ("likely_wrong", "ihed", "border", "one_minus_max_specialist", "generalist_doubt", "fallback")


def border_nearness(labels: np.ndarray) -> np.ndarray:
    """Minus the distance (voxels) to the nearest voxel that has a face neighbour of another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        differs = np.diff(labels, axis=axis) != 0
        low, high = [slice(None)] * 3, [slice(None)] * 3
        low[axis], high[axis] = slice(0, -1), slice(1, None)
        edge[tuple(low)] |= differs
        edge[tuple(high)] |= differs
    if not edge.any():
        return np.zeros(labels.shape, dtype=np.float32)
    return -ndimage.distance_transform_edt(~edge).astype(np.float32)


def voxel_scores(prediction, predictor, image) -> dict[str, np.ndarray]:
    labels = prediction.labels.array
    maps = specialist_maps_by_id(prediction)
    highest = np.max(np.stack(list(maps.values())), axis=0).astype(np.float32) / 255.0
    read = network_maps(prediction, image, predictor.normalization.slab_normalizer(image))
    evidence = collect_evidence(read, tuple(prediction.labels.geometry.spacing[::-1]))
    return {
        "likely_wrong": prediction.errors.map.astype(np.float32) / 255.0,
        "ihed": prediction.disagreement.array.astype(np.float32) / 255.0,
        "border": border_nearness(labels),
        "one_minus_max_specialist": 1.0 - highest,
        "generalist_doubt": 1.0 - prediction.evidence["margin"].array.astype(np.float32) / 255.0,
        "fallback": evidence.to_volume(UNCALIBRATED.probabilities(evidence)),
    }


def ranking(scores: dict[str, list[np.ndarray]], wrong: list[np.ndarray]) -> dict[str, dict]:
    positive = np.concatenate(wrong)
    out = {}
    for name, parts in scores.items():
        values = np.concatenate(parts)
        top = recall_at(values, positive, FRACTIONS)
        out[name] = {
            "average_precision": average_precision(values, positive),
            **{f"recall_top{round(100 * f)}": r for f, r in zip(FRACTIONS, top, strict=True)},
            "voxels": int(values.size),
            "error_rate": float(positive.mean()),
        }
    return out


def border_regions(labels: np.ndarray, spacing_zyx, maps) -> tuple[list, np.ndarray]:
    """Each organ's two border layers as regions, largest first (the queue a model-free reviewer has)."""
    inside = labels > 0
    touches = border_nearness(labels) == 0
    grown = ndimage.binary_dilation(inside, ndimage.generate_binary_structure(3, 1))
    layers = (inside & touches) | (grown & ~inside)
    return find_regions_with_map(
        layers.astype(np.float32), labels=labels, specialist_maps=maps, spacing_zyx=spacing_zyx, threshold=1.0
    )


def queue_figures(component_map: np.ndarray, wrong: np.ndarray, labels, reference, organs) -> dict:
    figures = {}
    for top in TOP_REGIONS:
        inside = (component_map > 0) & (component_map <= top)
        caught = int((wrong & inside).sum())
        per_organ = {}
        for class_id, name in organs.items():
            organ_wrong = (labels == class_id) != (reference == class_id)
            total = int(organ_wrong.sum())
            per_organ[name] = float((organ_wrong & inside).sum() / total) if total else None
        figures[f"top{top}"] = {
            "error_share": caught / max(1, int(wrong.sum())),
            "precision": caught / max(1, int(inside.sum())),
            "region_voxels": int(inside.sum()),
            "per_organ_error_share": per_organ,
        }
    return figures


def dice(labels, reference, class_id) -> float:
    a, b = labels == class_id, reference == class_id
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def spearman(x, y) -> float:
    return float(stats.spearmanr(x, y).statistic) if len(x) > 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=MODEL)
    parser.add_argument("--split", default="val", help="OpenKBP split to score (default val)")
    parser.add_argument("--images", type=Path, help="score these images instead (with --labels)")
    parser.add_argument("--labels", type=Path, help="reference label maps, same file names as --images")
    parser.add_argument("--fit", action="store_true", help="fit the error model afresh on the prior data")
    parser.add_argument("--l2", default="auto", help="L2 penalty for --fit ('auto': cross-validated)")
    parser.add_argument(
        "--wrong-threshold",
        type=float,
        nargs="+",
        default=[WRONG_THRESHOLD],
        help="P(wrong) above which voxels form the queue's regions (several: one queue each)",
    )
    parser.add_argument(
        "--in-sample",
        action="store_true",
        help="allow scoring the error model's own training scans (to choose settings, never to report)",
    )
    args = parser.parse_args()

    from cgs_engine.infer import Predictor

    predictor = Predictor(args.checkpoint)
    if args.fit:
        from cgs_engine.project.calibration import fit_from_prior

        predictor.error_model = fit_from_prior(args.checkpoint, l2=args.l2, report=print)
    elif not predictor.error_model.calibrated:
        print(f"note: {args.checkpoint} has no error model beside it; the likely-wrong map is the fallback")
    model = predictor.error_model
    if args.images:
        cases = [(p.name, p, args.labels / p.name) for p in sorted(args.images.iterdir()) if p.is_file()]
    else:
        data = shared_data() / "openkbp"
        split = json.loads((data / "split.json").read_text())[args.split]
        cases = [(n, data / "images" / f"{n}.nii.gz", data / "labels" / f"{n}.nii.gz") for n in split]
    fitted_on = set(model.fitted_on.get("cases", [])) if model.calibrated else set()
    overlap = sorted(fitted_on & {name.split(".")[0] for name, _, _ in cases})
    if overlap and not args.in_sample:
        raise SystemExit(
            f"the error model was fitted on scored scans {overlap}: refusing to grade it on them"
        )
    names = predictor.class_names
    organs = {k: names[k] for k in range(1, len(names))}

    pooled = {s: [] for s in SCORES}
    pooled_wrong = []
    per_organ = {name: ({s: [] for s in SCORES}, []) for name in organs.values()}
    scans = []
    started = time.perf_counter()
    for name, image_path, labels_path in cases:
        volume = read_volume(image_path)
        reference = read_volume(labels_path, kind="labels").array
        prediction = predictor.predict(volume, maps=True)
        labels = prediction.labels.array
        scores = voxel_scores(prediction, predictor, volume.array)
        band = error_band(labels, reference, BAND)
        wrong = labels != reference
        for score, values in scores.items():
            pooled[score].append(values[band])
        pooled_wrong.append(wrong[band])
        for class_id, organ in organs.items():
            organ_band = error_band(labels == class_id, reference == class_id, BAND)
            for score, values in scores.items():
                per_organ[organ][0][score].append(values[organ_band])
            per_organ[organ][1].append(((labels == class_id) != (reference == class_id))[organ_band])

        spacing = tuple(volume.geometry.spacing[::-1])
        maps = specialist_maps_by_id(prediction)
        queues = {
            f"likely_wrong@{threshold:g}": find_regions_with_map(
                prediction.disagreement.array,
                labels=labels,
                specialist_maps=maps,
                spacing_zyx=spacing,
                likely_wrong=prediction.errors.map,
                wrong_threshold=threshold,
            )
            for threshold in args.wrong_threshold
        }
        queues.update(
            {
                "disagreement": find_regions_with_map(
                    prediction.disagreement.array,
                    labels=labels,
                    specialist_maps=maps,
                    confidence=prediction.confidence.array,
                    spacing_zyx=spacing,
                ),
                "border": border_regions(labels, spacing, maps),
            }
        )
        true_dice = {organ: dice(labels, reference, k) for k, organ in organs.items()}
        errors = prediction.errors
        scan = {
            "name": name,
            "band_voxels": int(band.sum()),
            "wrong_voxels": int(wrong.sum()),
            "true_dice": true_dice,
            "true_mean_dice": float(np.mean(list(true_dice.values()))),
            "scan_score": errors.scan_score(),
            "estimated_dice": {organs[k]: o.estimated_dice for k, o in errors.organs.items()},
            "likely_wrong_ml": {organs[k]: o.likely_wrong_ml for k, o in errors.organs.items()},
            "true_wrong_ml": {
                organ: float(((labels == k) != (reference == k)).sum()) * float(np.prod(spacing)) / 1000
                for k, organ in organs.items()
            },
            "queues": {
                queue: {
                    "regions": len(regions),
                    **queue_figures(component_map, wrong, labels, reference, organs),
                }
                for queue, (regions, component_map) in queues.items()
            },
        }
        scans.append(scan)
        shares = "  ".join(f"{q} {scan['queues'][q]['top10']['error_share']:.2f}" for q in queues)
        print(
            f"{name}: true mean Dice {scan['true_mean_dice']:.3f}, scan score {scan['scan_score']:.3f}; "
            f"errors in the top 10 regions: {shares}",
            flush=True,
        )

    voxels = {"pooled": ranking(pooled, pooled_wrong)}
    voxels["per_organ"] = {organ: ranking(s, w) for organ, (s, w) in per_organ.items()}
    queue_summary = {}
    for queue in scans[0]["queues"]:
        queue_summary[queue] = {
            f"top{top}": {
                "mean_error_share": float(
                    np.mean([s["queues"][queue][f"top{top}"]["error_share"] for s in scans])
                ),
                "min_error_share": float(
                    np.min([s["queues"][queue][f"top{top}"]["error_share"] for s in scans])
                ),
                "mean_precision": float(
                    np.mean([s["queues"][queue][f"top{top}"]["precision"] for s in scans])
                ),
                "per_organ_mean_error_share": {
                    organ: float(
                        np.mean(
                            [
                                v
                                for s in scans
                                if (v := s["queues"][queue][f"top{top}"]["per_organ_error_share"][organ])
                                is not None
                            ]
                        )
                    )
                    for organ in organs.values()
                },
            }
            for top in TOP_REGIONS
        }
    worklist = {
        "spearman_scan_score_vs_true_mean_dice": spearman(
            [s["scan_score"] for s in scans], [s["true_mean_dice"] for s in scans]
        ),
        "per_organ_spearman_estimated_vs_true_dice": {
            organ: spearman(
                [s["estimated_dice"][organ] for s in scans], [s["true_dice"][organ] for s in scans]
            )
            for organ in organs.values()
        },
        "pooled_spearman_estimated_vs_true_dice": spearman(
            [s["estimated_dice"][o] for s in scans for o in organs.values()],
            [s["true_dice"][o] for s in scans for o in organs.values()],
        ),
        "pooled_spearman_likely_vs_true_wrong_ml": spearman(
            [s["likely_wrong_ml"][o] for s in scans for o in organs.values()],
            [s["true_wrong_ml"][o] for s in scans for o in organs.values()],
        ),
    }
    results = {
        "checkpoint": str(args.checkpoint),
        "scored": [name for name, _, _ in cases],
        "split": None if args.images else args.split,
        "error_model": {"calibrated": model.calibrated, **(model.fitted_on if model.calibrated else {})},
        "band_voxels": BAND,
        "wrong_thresholds": args.wrong_threshold,
        "in_sample": bool(overlap),
        "voxels": voxels,
        "queues": queue_summary,
        "worklist": worklist,
        "scans": scans,
        "seconds": time.perf_counter() - started,
    }
    print_tables(results, organs)
    print(f"results: {save_results('review_recall', results)}")


def print_tables(results: dict, organs: dict[int, str]) -> None:
    pooled = results["voxels"]["pooled"]
    first = next(iter(pooled.values()))
    print(f"\nvoxels within {BAND:g} of an organ: {first['voxels']}, wrong {100 * first['error_rate']:.1f} %")
    print(f"{'score':<26}{'AP':>7}{'top 5 %':>9}{'top 10 %':>10}")
    for score, row in pooled.items():
        print(
            f"{score:<26}{row['average_precision']:7.3f}{row['recall_top5']:9.3f}{row['recall_top10']:10.3f}"
        )
    print("\nper organ, errors caught in the top 10 % (AP): likely_wrong | border | ihed")
    for organ, rows in results["voxels"]["per_organ"].items():
        cells = " | ".join(
            f"{rows[s]['recall_top10']:.3f} ({rows[s]['average_precision']:.3f})"
            for s in ("likely_wrong", "border", "ihed")
        )
        print(f"  {organ:<14}{cells}")
    print("\nqueue: mean share of a scan's errors in its top N regions (precision)")
    for queue, tops in results["queues"].items():
        cells = "  ".join(
            f"top{n} {tops[f'top{n}']['mean_error_share']:.3f} ({tops[f'top{n}']['mean_precision']:.3f})"
            for n in TOP_REGIONS
        )
        print(f"  {queue:<20}{cells}")
    work = results["worklist"]
    rho = work["spearman_scan_score_vs_true_mean_dice"]
    print(f"\nworklist: Spearman(scan score, true mean Dice) = {rho:.3f}")
    per = work["per_organ_spearman_estimated_vs_true_dice"]
    print("  per organ, Spearman(estimated, true Dice): " + ", ".join(f"{o} {v:.2f}" for o, v in per.items()))
    print(f"  pooled over (scan, organ): {work['pooled_spearman_estimated_vs_true_dice']:.3f}")


if __name__ == "__main__":
    main()
