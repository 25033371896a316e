"""Does the likely-wrong volume depend on the voxel grid? The same prediction on finer grids.

For each scan (default: the 6 OpenKBP `val` patients, which the bundled error model was not fitted
on) the bundled model predicts once with its maps; the maps and labels are then repeated onto grids
2x / 3x finer (`np.repeat`: identical anatomy, identical network output, only more voxels) and the
likely-wrong millilitres are estimated again, with the error model's widths counted in its
reference voxels (as `cgs predict` does) and, for comparison, in each grid's own voxels (as before
the reference existed). A grid-independent estimate keeps the ratio to the original grid near 1.

`--write-finer DIR` also writes the scans and their reference labels resampled 2x finer in-plane
(linear CT, nearest labels) as DIR/images and DIR/labels, for `bench/review_recall.py --images
DIR/images --labels DIR/labels` (ranking and worklist on a clinical-like grid).

    python bench/review_grid.py [--checkpoint PT] [--write-finer DIR]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from common import ROOT, save_results, shared_data

from cgs_engine.io import read_volume
from cgs_engine.review.error_features import collect_evidence
from cgs_engine.review.likely_wrong import _organ_figures
from cgs_engine.review.prediction import canonical_network_maps

FACTORS = ((1, 1, 1), (1, 2, 2), (2, 1, 1), (2, 2, 2), (1, 3, 3))
MAP_NAMES = (
    "labels",
    "confidence",
    "background",
    "margin",
    "disagreement",
    "generalist_vs_specialists",
    "image",
)


def repeated(maps, factors):
    def repeat(array):
        for axis, factor in enumerate(factors):
            array = np.repeat(array, factor, axis)
        return array

    turned = {name: repeat(getattr(maps, name)) for name in MAP_NAMES}
    return replace(maps, **turned, specialist_maps={k: repeat(v) for k, v in maps.specialist_maps.items()})


def likely_wrong_ml(maps, spacing, model, reference) -> float:
    evidence = collect_evidence(maps, spacing, model.typical_ml or None, reference)
    figures = _organ_figures(evidence, model.probabilities(evidence), len(maps.specialist_maps))
    return float(sum(organ.likely_wrong_ml for organ in figures.values()))


def write_finer(cases, folder: Path) -> None:
    import SimpleITK as sitk

    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for name, image_path, labels_path in cases:
        for kind, path, interpolator, outside in (
            ("images", image_path, sitk.sitkLinear, -1000),
            ("labels", labels_path, sitk.sitkNearestNeighbor, 0),
        ):
            image = sitk.ReadImage(str(path))
            spacing, size = image.GetSpacing(), image.GetSize()
            finer = (spacing[0] / 2, spacing[1] / 2, spacing[2])
            # the first finer voxel's centre a quarter of a coarse voxel before the first coarse one
            origin = image.TransformContinuousIndexToPhysicalPoint((-0.25, -0.25, 0.0))
            out = sitk.Resample(
                image,
                (size[0] * 2, size[1] * 2, size[2]),
                sitk.Transform(),
                interpolator,
                origin,
                finer,
                image.GetDirection(),
                outside,
                image.GetPixelID(),
            )
            sitk.WriteImage(out, str(folder / kind / f"{name}.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "napari_cgs" / "models" / "default.pt")
    parser.add_argument("--split", default="val", help="OpenKBP split (default val)")
    parser.add_argument("--write-finer", type=Path, help="also write the scans 2x finer in-plane here")
    args = parser.parse_args()

    from cgs_engine.infer import Predictor

    data = shared_data() / "openkbp"
    names = json.loads((data / "split.json").read_text())[args.split]
    cases = [(n, data / "images" / f"{n}.nii.gz", data / "labels" / f"{n}.nii.gz") for n in names]
    predictor = Predictor(args.checkpoint)
    model = predictor.error_model
    if not model.calibrated or model.reference_spacing_zyx is None:
        raise SystemExit(f"{args.checkpoint}: needs an error model with a reference spacing beside it")
    overlap = sorted(set(model.fitted_on.get("cases", [])) & set(names))
    if overlap:
        raise SystemExit(f"the error model was fitted on scored scans {overlap}")
    print(f"reference voxel (z, y, x) {model.reference_spacing_zyx} mm")
    rows = []
    for name, image_path, _ in cases:
        volume = read_volume(image_path)
        prediction = predictor.predict(volume, maps=True)
        normalize = predictor.normalization.slab_normalizer(volume.array)
        maps, spacing, _turn = canonical_network_maps(prediction, volume.array, normalize)
        row = {"name": name, "spacing_zyx": [float(s) for s in spacing], "grids": {}}
        for factors in FACTORS:
            finer = repeated(maps, factors) if factors != (1, 1, 1) else maps
            grid = tuple(float(s) / f for s, f in zip(spacing, factors, strict=True))
            row["grids"][str(factors)] = {
                "reference_voxels": likely_wrong_ml(finer, grid, model, model.reference_spacing_zyx),
                "own_voxels": likely_wrong_ml(finer, grid, model, None),
            }
        base = row["grids"][str(FACTORS[0])]
        print(
            f"{name}: "
            + "  ".join(
                f"x{f[0]}{f[1]}{f[2]} {100 * (g['reference_voxels'] / base['reference_voxels'] - 1):+.1f}% "
                f"(own {100 * (g['own_voxels'] / base['own_voxels'] - 1):+.1f}%)"
                for f, g in zip(FACTORS[1:], list(row["grids"].values())[1:], strict=True)
            ),
            flush=True,
        )
        rows.append(row)
    print("\nlikely-wrong mL against the original grid, mean over scans [min, max]:")
    summary = {}
    for factors in FACTORS[1:]:
        summary[str(factors)] = {}
        for how in ("reference_voxels", "own_voxels"):
            ratios = [r["grids"][str(factors)][how] / r["grids"][str(FACTORS[0])][how] - 1 for r in rows]
            summary[str(factors)][how] = ratios
            print(
                f"  {str(factors):10s} {how:17s} {100 * np.mean(ratios):+6.1f} % "
                f"[{100 * min(ratios):+.1f}, {100 * max(ratios):+.1f}]"
            )
    results = {"checkpoint": str(args.checkpoint), "split": args.split, "scans": rows, "summary": summary}
    print(f"results: {save_results('review_grid', results)}")
    if args.write_finer:
        write_finer(cases, args.write_finer)
        print(f"wrote 2x finer copies under {args.write_finer}")


if __name__ == "__main__":
    main()
