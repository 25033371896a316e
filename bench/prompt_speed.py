"""Seconds per prompt (click, negative click, box) on a 512 x 512 x 128 scan.

The bundled model pre-segments OpenKBP pt_222 (128 x 128 x 128, 4.7 mm pixels); labels, maps and
CT are then upsampled 4x in-plane (1.17 mm pixels, 512 x 512 x 128 voxels, as a clinical CT is
stored) and every organ gets a positive click just outside it, a negative click just inside and
its box, each timed end to end (the engine call, with its copies of the label map).

    python bench/prompt_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import ROOT, save_results
from scipy import ndimage

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
SAMPLE = ROOT / "napari_cgs" / "samples" / "openkbp_pt_222_ct.nii.gz"
FACTOR = 4


def upsampled(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(np.repeat(array, FACTOR, axis=1), FACTOR, axis=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from cgs_engine.edit import box_prompt, click
    from cgs_engine.infer import Predictor
    from cgs_engine.io import read_volume
    from cgs_engine.review.prediction import specialist_maps_by_id

    image = read_volume(SAMPLE)
    prediction = Predictor(MODEL, device="cpu").predict(image, maps=True)
    labels = upsampled(prediction.labels.array)
    maps = {k: upsampled(v) for k, v in specialist_maps_by_id(prediction).items()}
    ct = upsampled(image.array)
    spacing = (
        image.geometry.spacing[2],
        image.geometry.spacing[1] / FACTOR,
        image.geometry.spacing[0] / FACTOR,
    )
    print(f"volume {labels.shape}, spacing {tuple(round(s, 3) for s in spacing)} mm")
    times = {"click +": [], "click -": [], "box": []}
    for organ, probability in maps.items():
        mine = labels == organ
        if not mine.any():
            continue
        inside = np.argwhere(mine & ~ndimage.binary_erosion(mine))[0]
        outside = np.argwhere(ndimage.binary_dilation(mine) & (labels == 0))[0]
        extent = ndimage.find_objects(mine.astype(np.uint8))[0]
        calls = {
            "click +": (click, (labels, organ, outside, True, probability, spacing), {"image": ct}),
            "click -": (click, (labels, organ, inside, False, probability, spacing), {"image": ct}),
            "box": (box_prompt, (labels, organ, extent, probability), {}),
        }
        for _ in range(args.repeat):
            for name, (function, arguments, options) in calls.items():
                started = time.perf_counter()
                function(*arguments, **options)
                times[name].append(time.perf_counter() - started)
    report = {"shape": list(labels.shape), "spacing_zyx": list(spacing), "seconds": {}}
    for name, values in times.items():
        report["seconds"][name] = {"mean": float(np.mean(values)), "max": float(np.max(values))}
        print(f"{name:8s} mean {np.mean(values):.3f} s, max {np.max(values):.3f} s ({len(values)} prompts)")
    print(f"results: {save_results('prompt_speed', report)}")


if __name__ == "__main__":
    main()
