"""The error evidence counts its widths in the error model's reference voxels, so the same
prediction gives the same "likely wrong" millilitres on any voxel grid (synthetic)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from cgs_engine.review.error_features import (
    ZONES,
    NetworkMaps,
    collect_evidence,
    grid_units,
    reference_spacing,
)
from cgs_engine.review.error_model import (
    ErrorModelError,
    fit_error_model,
    load_error_model,
    save_error_model,
)
from cgs_engine.review.likely_wrong import estimate_errors

NAMES = ["background", "ball", "bar"]
SPACING = (2.0, 1.0, 1.0)


def _labels() -> np.ndarray:
    labels = np.zeros((16, 40, 40), np.uint8)
    z, y, x = np.ogrid[:16, :40, :40]
    labels[((z - 8) * 2.0) ** 2 + (y - 14) ** 2 + (x - 14) ** 2 <= 64] = 1
    labels[6:10, 28:33, 6:34] = 2
    return labels


def _maps(labels: np.ndarray, seed: int) -> NetworkMaps:
    rng = np.random.default_rng(seed)

    def noise():
        return rng.integers(0, 256, labels.shape).astype(np.uint8)

    image = np.where(labels > 0, 0.7, 0.3) + rng.normal(0, 0.05, labels.shape)
    return NetworkMaps(
        labels=labels,
        confidence=noise(),
        background=noise(),
        margin=noise(),
        disagreement=noise(),
        generalist_vs_specialists=noise(),
        specialist_maps={1: noise(), 2: noise()},
        image=image.astype(np.float32),
    )


def _finer(maps: NetworkMaps, factors: tuple[int, int, int]) -> NetworkMaps:
    """The same prediction on a grid ``factors`` times as fine: identical anatomy, more voxels."""

    def repeat(array):
        for axis, factor in enumerate(factors):
            array = np.repeat(array, factor, axis)
        return array

    names = (
        "labels",
        "confidence",
        "background",
        "margin",
        "disagreement",
        "generalist_vs_specialists",
        "image",
    )
    turned = {name: repeat(getattr(maps, name)) for name in names}
    return replace(maps, **turned, specialist_maps={k: repeat(v) for k, v in maps.specialist_maps.items()})


def _zone_ml(evidence, zone: str) -> float:
    return float((evidence.zone == ZONES.index(zone)).sum()) * evidence.voxel_ml


def _fitted(reference):
    """An error model where the wrong voxels are the doubted ones of the layer outside the organs."""
    evidences, wrongs = [], []
    for seed in (0, 1):
        evidence = collect_evidence(_maps(_labels(), seed), SPACING, reference_zyx=reference)
        doubt = 1.0 - evidence.columns["margin"]
        evidences.append(evidence)
        wrongs.append((evidence.zone == ZONES.index("edge_out")) & (doubt > 0.6))
    return fit_error_model(evidences, wrongs, NAMES, {}, l2=1e-3, reference_zyx=reference)


def test_on_the_reference_grid_the_evidence_reads_as_in_the_scans_own_voxels():
    maps = _maps(_labels(), 0)
    own = collect_evidence(maps, SPACING)
    on_reference = collect_evidence(maps, SPACING, reference_zyx=SPACING)
    assert np.array_equal(own.zone, on_reference.zone) and np.array_equal(own.near, on_reference.near)
    for name, column in own.columns.items():
        assert np.array_equal(column, on_reference.columns[name]), name


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 1, 1), (2, 2, 2), (1, 3, 3)])
def test_a_finer_grid_of_the_same_prediction_keeps_its_layers_in_millimetres(factors):
    maps = _maps(_labels(), 0)
    fine_spacing = tuple(s / f for s, f in zip(SPACING, factors, strict=True))
    coarse = collect_evidence(maps, SPACING, reference_zyx=SPACING)
    fine = collect_evidence(_finer(maps, factors), fine_spacing, reference_zyx=SPACING)
    own = collect_evidence(_finer(maps, factors), fine_spacing)
    for zone in ZONES:
        # every zone holds the same mL (within the corners a finer grid rounds off)
        assert _zone_ml(fine, zone) == pytest.approx(_zone_ml(coarse, zone), rel=0.15), zone
    # counted in the finer grid's own voxels the layer outside the organ was thinner
    assert _zone_ml(own, "edge_out") < 0.85 * _zone_ml(coarse, "edge_out")
    # candidates reach as far in mm; distances, smoothing and slices to the organ's end in reference units
    assert fine.count * fine.voxel_ml == pytest.approx(coarse.count * coarse.voxel_ml, rel=0.1)
    widths = (
        "distance_out",
        "slices_to_end",
        "shape_1",
        "shape_2",
        "shape_z",
        "doubt_nearby",
        "intensity_off",
    )
    for name in widths:
        assert fine.columns[name].max() == pytest.approx(coarse.columns[name].max(), rel=0.15), name
        assert fine.columns[name].mean() == pytest.approx(coarse.columns[name].mean(), rel=0.15), name
    # in its own voxels the finer grid's smoothing reached half as far: the shapes read far smoother
    assert own.columns["shape_1"].mean() > 1.3 * coarse.columns["shape_1"].mean()


def test_likely_wrong_millilitres_do_not_depend_on_the_voxel_grid():
    model = _fitted(SPACING)
    assert model.reference_spacing_zyx == SPACING
    maps = _maps(_labels(), 7)
    coarse = estimate_errors(maps, SPACING, model).likely_wrong_ml()
    fine = estimate_errors(_finer(maps, (2, 2, 2)), (1.0, 0.5, 0.5), model).likely_wrong_ml()
    assert coarse > 0.5
    assert fine == pytest.approx(coarse, rel=0.15)
    # the same model read in each scan's own voxels: a layer half as thick, far fewer mL
    in_own_voxels = replace(model, reference_spacing_zyx=None)
    own = estimate_errors(_finer(maps, (2, 2, 2)), (1.0, 0.5, 0.5), in_own_voxels).likely_wrong_ml()
    assert own < 0.7 * coarse


def test_the_reference_is_saved_with_the_model_and_read_back(tmp_path):
    model = _fitted(SPACING)
    path = save_error_model(model, tmp_path / "m.review.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 2 and data["reference_spacing_mm"] == list(SPACING)
    assert load_error_model(path).reference_spacing_zyx == SPACING
    # a model without a reference (volumes of unknown spacing) stays readable by older engines
    plain = save_error_model(_fitted(None), tmp_path / "p.review.json")
    assert json.loads(plain.read_text())["format_version"] == 1
    assert load_error_model(plain).reference_spacing_zyx is None
    # a version 1 file from before the reference existed reads in the scans' own voxels
    old = {k: v for k, v in json.loads(plain.read_text()).items() if k != "reference_spacing_mm"}
    plain.write_text(json.dumps(old))
    assert load_error_model(plain).reference_spacing_zyx is None
    for bad in ([1.0, 1.0], [1.0, 0.0, 1.0], [1.0, "x", 1.0], 3.0, [1.0, float("nan"), 1.0]):
        path.write_text(json.dumps({**data, "reference_spacing_mm": bad}))
        with pytest.raises(ErrorModelError, match="damaged error model"):
            load_error_model(path)
    path.write_text(json.dumps({**data, "format_version": 3}))
    with pytest.raises(ErrorModelError, match="newer than this engine reads"):
        load_error_model(path)


def test_grid_units_and_the_reference_of_several_cases():
    assert np.array_equal(grid_units((3.0, 1.0, 1.0), None), np.ones(3))
    assert np.allclose(grid_units((1.5, 0.5, 2.0), (3.0, 1.0, 1.0)), (0.5, 0.5, 2.0))
    for spacing, reference in (((0.0, 1.0, 1.0), (1.0, 1.0, 1.0)), ((1.0, 1.0, 1.0), (1.0, -1.0, 1.0))):
        with pytest.raises(ValueError, match="must be positive"):
            grid_units(spacing, reference)
    assert reference_spacing([(3.0, 1.0, 1.0), (2.5, 0.9, 0.9), (5.0, 1.2, 1.2)]) == (3.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="one"):
        reference_spacing([])
