"""Why does the likely-wrong map stop at AP 0.5? Variants of the error model, none fitted on a scored scan.

Every variant is scored as `bench/review_recall.py` scores the shipped one: voxels within 3 voxels
of a predicted or reference organ on the 6 OpenKBP `val` patients (the bundled model never saw
them), pooled average precision and share of the wrong voxels in the top 5 / 10 %.

Variants (the question each answers):
  train            the shipped recipe: logistic regression fitted on the 6 training patients, per L2
  val-lopo         fitted on the other 5 val patients, never the scored one (the patients the model
                   errs on as on new ones): is the training patients' lower error rate (5 % vs 8 %)
                   what holds it back?
  val-lopo+train   the same plus the training patients
  flip             + two columns from a second, mirrored forward pass (left/right classes swapped
                   back): does the model's own test-time disagreement see more?
  organ-mean       + the organ's mean margin / disagreement / generalist-vs-specialists over its
                   border layer: is a whole organ's doubt a better hint than each voxel's?
  mlp              a two-layer network (32 hidden units) on the same columns: is the linear form
                   the limit?

Choices between variants come from leave-one-patient-out on the TRAINING patients (printed as
"train-lopo"); the val figures are reported, not chosen on.

    python bench/review_error_model_ablation.py
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import numpy as np
from common import ROOT, save_results, shared_data

import cgs_engine.review.error_model as error_model
from cgs_engine.classes import lateral_pairs, mirror_permutation
from cgs_engine.evaluate.ranking import average_precision, recall_at
from cgs_engine.io import read_volume
from cgs_engine.review.calibrate import calibration_case, typical_volumes
from cgs_engine.review.error_features import ZONED, ZONES, size_column
from cgs_engine.volume import Volume

MODEL = ROOT / "napari_cgs" / "models" / "default.pt"
FLIP = ("flip_same", "flip_mine")
ORGAN_MEAN = ("organ_margin", "organ_disagreement", "organ_generalist_vs_specialists")


def flip_columns(predictor, case, volume) -> None:
    """Add the mirrored pass's columns to the case's band rows: does it give the voxel the same organ,
    and that organ's specialist "mine" there. Mirrored along x (the files' left/right axis)."""
    names = predictor.class_names
    swap = np.asarray(mirror_permutation(len(names), lateral_pairs(names)))
    flipped = predictor.predict(Volume(np.ascontiguousarray(volume.array[:, :, ::-1]), volume.geometry))
    labels = swap[flipped.labels.array[:, :, ::-1]]
    mine = np.zeros((len(names), *labels.shape), np.uint8)
    for class_id in range(1, len(names)):
        mine[swap[class_id]] = flipped.specialist_maps[names[class_id]].array[:, :, ::-1]
    evidence = case.evidence
    z, y, x = (
        axis + part.start for axis, part in zip(np.nonzero(evidence.candidates), evidence.box, strict=True)
    )
    evidence.columns["flip_same"] = (labels[z, y, x] == evidence.near).astype(np.float32)
    evidence.columns["flip_mine"] = mine[evidence.near, z, y, x].astype(np.float32) / 255.0


def organ_mean_columns(case) -> None:
    """Each voxel gets its nearest organ's mean of a column over that organ's border layer."""
    evidence = case.evidence
    border = evidence.zone == ZONES.index("edge_in")
    for name in ORGAN_MEAN:
        column = evidence.columns[name.removeprefix("organ_")]
        means = np.zeros(int(evidence.near.max()) + 1, np.float32)
        for class_id in np.unique(evidence.near):
            rows = border & (evidence.near == class_id)
            means[class_id] = column[rows].mean() if rows.any() else 0.0
        evidence.columns[name] = means[evidence.near]


def read_cases(predictor, patients):
    data = shared_data() / "openkbp"
    cases = []
    for patient in patients:
        volume = read_volume(data / "images" / f"{patient}.nii.gz")
        reference = np.asarray(read_volume(data / "labels" / f"{patient}.nii.gz", kind="labels").array)
        case = calibration_case(predictor, patient, volume, reference, False)
        flip_columns(predictor, case, volume)
        organ_mean_columns(case)
        cases.append(case)
        print(f"{patient}: {case.evidence.count} band voxels, {case.wrong.mean():.3f} wrong", flush=True)
    return cases


@contextmanager
def design_with(extra):
    """The error model's design with ``extra`` evidence columns, each per zone as the others
    (the engine's design is fixed; only this experiment widens it, and puts it back)."""
    error_model.ZONED = ZONED + tuple(extra)
    try:
        yield
    finally:
        error_model.ZONED = ZONED


def fit(cases, class_names, typical, extra=(), l2=1e-3, kind="logistic"):
    """A fitted scorer (evidence -> P(wrong)) with ``extra`` columns."""
    with design_with(extra):
        if kind == "mlp":
            probabilities = _fit_mlp(cases, class_names)
        else:
            evidences, wrong = [c.evidence for c in cases], [c.wrong for c in cases]
            probabilities = error_model.fit_error_model(
                evidences, wrong, class_names, typical, l2
            ).probabilities

    def scorer(evidence):
        with design_with(extra):
            return probabilities(evidence)

    return scorer


def _fit_mlp(cases, class_names, hidden=32, epochs=10):
    import torch

    names = error_model.design_names(len(class_names))
    matrix = np.concatenate([error_model.design_matrix(c.evidence, names) for c in cases])
    mean, scale = matrix.mean(0), np.maximum(matrix.std(0), 1e-6)
    x = torch.from_numpy((matrix - mean) / scale)
    y = torch.from_numpy(np.concatenate([c.wrong for c in cases]).astype(np.float32))
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 1),
    )
    optimizer = torch.optim.AdamW(network.parameters(), 3e-3, weight_decay=1e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(2048):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(network(x[rows])[:, 0], y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def probabilities(evidence):
        design = error_model.design_matrix(evidence, names)
        with torch.no_grad():
            return torch.sigmoid(network(torch.from_numpy((design - mean) / scale))[:, 0]).numpy()

    return probabilities


def figures(scores, cases) -> dict:
    score = np.concatenate(scores)
    wrong = np.concatenate([c.wrong for c in cases])
    top5, top10 = recall_at(score, wrong, (0.05, 0.10))
    return {
        "average_precision": round(average_precision(score, wrong), 4),
        "top5": round(top5, 4),
        "top10": round(top10, 4),
    }


def leave_one_out(cases, fitter, also=()):
    """Scores of each case from a scorer fitted on the other cases (plus ``also``)."""
    return [fitter([c for c in cases if c is not case] + list(also))(case.evidence) for case in cases]


def main() -> None:
    from cgs_engine.infer import Predictor

    started = time.perf_counter()
    predictor = Predictor(MODEL)
    names = predictor.class_names
    split = json.loads((shared_data() / "openkbp" / "split.json").read_text())
    train, val = read_cases(predictor, split["labeled_train"]), read_cases(predictor, split["val"])
    typical = typical_volumes(train)
    for case in train + val:
        case.evidence.columns["size"] = size_column(case.evidence.near, case.evidence.organ_ml, typical)

    variants = {
        "train l2=1e-4": dict(l2=1e-4),
        "train l2=1e-3": dict(l2=1e-3),
        "train l2=1e-2": dict(l2=1e-2),
        "flip": dict(extra=FLIP),
        "organ-mean": dict(extra=ORGAN_MEAN),
        "flip+organ-mean": dict(extra=FLIP + ORGAN_MEAN),
        "mlp": dict(kind="mlp"),
    }
    results = {}
    for label, options in variants.items():
        fitter = lambda cases, o=options: fit(cases, names, typical, **o)  # noqa: E731
        scorer = fitter(train)
        results[label] = {
            "train_lopo": figures(leave_one_out(train, fitter), train),
            "val": figures([scorer(c.evidence) for c in val], val),
        }
        print(
            f"{label:18s} train-lopo {results[label]['train_lopo']}  val {results[label]['val']}", flush=True
        )
    plain = lambda cases: fit(cases, names, typical)  # noqa: E731
    results["val-lopo"] = {"val": figures(leave_one_out(val, plain), val)}
    results["val-lopo+train"] = {"val": figures(leave_one_out(val, plain, also=train), val)}
    for label in ("val-lopo", "val-lopo+train"):
        print(f"{label:18s} val {results[label]['val']}")
    per_zone = {}
    scores = np.concatenate([fit(train, names, typical)(c.evidence) for c in val])
    wrong = np.concatenate([c.wrong for c in val])
    zones = np.concatenate([c.evidence.zone for c in val])
    cut = np.quantile(scores, 0.9)
    for index, zone in enumerate(ZONES):
        rows = zones == index
        per_zone[zone] = {
            "voxels": int(rows.sum()),
            "wrong": int(wrong[rows].sum()),
            "error_rate": round(float(wrong[rows].mean()), 4),
            "caught_in_top10": int((wrong & rows & (scores >= cut)).sum()),
            "average_precision_within": round(average_precision(scores[rows], wrong[rows]), 4),
        }
        print(f"zone {zone:9s} {per_zone[zone]}")
    path = save_results(
        "review_error_model_ablation",
        {"variants": results, "zones": per_zone, "seconds": round(time.perf_counter() - started, 1)},
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
