"""Which labeled cases should a model's error model be fitted on? Chosen on ACDC dev patients only.

A model trained on few patients errs less (and differently) on them than on a new patient. This
fits the likely-wrong error model three ways and grades each on held-out patients:

  train        the volumes the model was trained on (the rule before; `--calibrate-on train`)
  devA         half of the dev patients (never trained on; the base checkpoint was picked on them)
  train+devA   both (the rule now: training and validation cases of the prior data)

graded on the other half of the dev patients (devB), beside the uncalibrated fallback score:
average precision and recall in the top 10 % of the organ band, and the worklist's Spearman
(scan score against the scan's true mean Dice). The reported figures come from
`bench/review_recall.py` on the 20 `val` volumes, which this choice never looked at.

    python bench/retrain_loop_acdc.py --modes --work /tmp/acdc-loop      # trains the base once
    python bench/review_calibration_cases.py --checkpoint /tmp/acdc-loop/base/best.pt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from acdc_data import acdc_split, write_volume_files
from common import save_results, shared_data
from scipy import stats

from cgs_engine.evaluate.metrics import dice_per_class
from cgs_engine.evaluate.ranking import average_precision, error_band, recall_at
from cgs_engine.infer import Predictor
from cgs_engine.io import read_volume
from cgs_engine.review.calibrate import BAND, calibration_case, fit_on_cases
from cgs_engine.review.error_model import UNCALIBRATED

VARIANTS = {"train": ["train"], "devA": ["devA"], "train+devA": ["train", "devA"]}


def grade(predictor: Predictor, volumes: list, model) -> dict:
    """Average precision, top-10 % recall and worklist Spearman of ``model`` (None: the fallback)."""
    predictor.error_model = UNCALIBRATED if model is None else model
    scores, wrong, scan_scores, true_dice = [], [], [], []
    for volume, reference in volumes:
        prediction = predictor.predict(volume, maps=True)
        labels = prediction.labels.array
        band = error_band(labels, reference, BAND)
        scores.append(prediction.errors.map.astype(np.float32)[band] / 255.0)
        wrong.append((labels != reference)[band])
        # a class in neither map counts as agreement (1.0), as in bench/review_recall.py
        dice = np.nan_to_num(dice_per_class(labels, reference, len(predictor.class_names))[1:], nan=1.0)
        true_dice.append(float(dice.mean()))
        scan_scores.append(prediction.errors.scan_score())
    values, positive = np.concatenate(scores), np.concatenate(wrong)
    return {
        "average_precision": average_precision(values, positive),
        "recall_top10": recall_at(values, positive, (0.1,))[0],
        "error_rate": float(positive.mean()),
        "worklist_spearman": None
        if model is None
        else float(stats.spearmanr(scan_scores, true_dice).statistic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="the ACDC base model (best.pt)")
    args = parser.parse_args()
    split = acdc_split(shared_data() / "acdc_ssl4mis_h5")
    dev = sorted(split.dev)
    parts = {
        "train": split.volume_ids(split.labeled),
        "devA": split.volume_ids(dev[: len(dev) // 2]),
        "devB": split.volume_ids(dev[len(dev) // 2 :]),
    }
    predictor = Predictor(args.checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        read = {}
        for part, volume_ids in parts.items():
            read[part] = []
            for volume_id in volume_ids:
                image, labels = write_volume_files(split, volume_id, Path(folder))
                read[part].append((volume_id, read_volume(image), read_volume(labels, kind="labels").array))
    cases = {
        part: [
            calibration_case(predictor, name, volume, reference, False)
            for name, volume, reference in read[part]
        ]
        for part in ("train", "devA")
    }
    graded = [(volume, reference) for _, volume, reference in read["devB"]]
    report = {"checkpoint": str(args.checkpoint), "graded_on": parts["devB"], "variants": {}}
    for name, used in [*VARIANTS.items(), ("fallback", None)]:
        model = (
            None
            if used is None
            else fit_on_cases([c for part in used for c in cases[part]], predictor.class_names)
        )
        report["variants"][name] = grade(predictor, graded, model)
        figures = report["variants"][name]
        spearman = figures["worklist_spearman"]
        print(
            f"{name:12s} devB: AP {figures['average_precision']:.3f}, top 10 % {figures['recall_top10']:.3f}"
            + ("" if spearman is None else f", worklist Spearman {spearman:.3f}"),
            flush=True,
        )
    print(f"results: {save_results('review_calibration_cases', report)}")


if __name__ == "__main__":
    main()
